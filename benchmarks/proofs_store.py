"""The Merkle tree kept in a real store: checkpoint, proofs and the append overhead.

    python benchmarks/proofs_store.py                        # SQLite, 1,000,000 events
    python benchmarks/proofs_store.py --events 100000 --json results.json
    python benchmarks/proofs_store.py --postgres postgresql://postgres@127.0.0.1/test

Builds a log of ``--events`` events (conversations of 1,000 events, appended 500 at a
time) in a new SQLite file (or a new schema of the PostgreSQL database given), then:

- builds the tree once (the first checkpoint of a log that never had one: a pass over it);
- checkpoint after 10,000 new events: extend the stored tree from the events appended
  since (read, hash, insert the finished subtrees), fold the root, sign. Median of 5;
- inclusion and consistency proofs of random events from the store (each call first
  brings the tree up to date, as the API does), their JSON size;
- the append overhead of keeping the tree: single-event appends (a chat's steps) timed
  in blocks with and without a checkpointer thread signing every ``--every`` events
  (default 10,000; it polls every ``--poll`` seconds) to a file,
  in the same process, in ABBA order; the ratio of the medians. Appends never touch
  the tree, so what is measured is the checkpointer's reads and writes competing with them.

Times are medians; the machine is shared, so read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatledger.events import (
    ConversationStarted,
    EventStore,
    NewEvent,
    SQLiteStore,
    UserMessageAdded,
)
from chatledger.proofs.checkpoint import dump_proof
from chatledger.proofs.merkle import leaf_hash, verify_inclusion
from chatledger.proofs.note import Signer
from chatledger.proofs.sinks import FileSink
from chatledger.proofs.tree import StoreTree

GOALS = {
    "checkpoint_after_10k_ms": 500.0,
    "inclusion_proof_bytes_max": 1500,
    "inclusion_proof_ms": 10.0,
    "append_overhead_percent": 5.0,
}
CONVERSATION = 1_000
BATCH = 500


def median_ms(work: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def message(i: int) -> NewEvent:
    return NewEvent(
        data=UserMessageAdded(
            turn=i + 1, content={"role": "user", "parts": [{"text": f"message {i} " * 8}]}
        )
    )


def add_events(store: EventStore, count: int) -> int:
    """``count`` events, in conversations of CONVERSATION events, BATCH per append, once
    all are readable (PostgreSQL: below the visibility horizon); the last position."""
    last = 0
    while count > 0:
        size = min(count, CONVERSATION)
        cid = f"bench-{uuid.uuid4()}"
        events = [NewEvent(data=ConversationStarted(model="bench")), *map(message, range(size - 1))]
        for start in range(0, size, BATCH):
            last = store.append(cid, events[start : start + BATCH], expected_version=start)[-1]
        count -= size
    deadline = time.monotonic() + 120
    while not store._leaf_rows(last - 1, 1):
        if time.monotonic() > deadline:
            raise SystemExit("the events never became readable: a transaction stays open")
        time.sleep(0.05)
    return last


def append_overhead(
    store: EventStore,
    signer: Signer,
    folder: Path,
    blocks: int,
    per_block: int,
    poll: float,
    every: int,
) -> dict[str, float]:
    """Per-append time with and without a checkpointer running, blocks alternating."""
    cid = f"bench-chat-{uuid.uuid4()}"
    store.append(cid, [NewEvent(data=ConversationStarted(model="bench"))], expected_version=0)
    version = 1
    samples: dict[bool, list[float]] = {False: [], True: []}
    signed = 0
    tree = StoreTree(store)
    baseline = tree.update()
    for block in range(blocks * 2):
        with_tree = block % 4 in (1, 2)  # ABBA: a drift of the machine cancels out
        checkpointer = None
        if with_tree:
            checkpointer = tree.checkpointer(
                signer, [FileSink(folder / "periodic.log")], every_events=every, poll_seconds=poll
            )
            # Carry on from the last checkpoint signed, as one checkpointer running all
            # along would (a new one signs at once otherwise); there is no public setter.
            checkpointer._last_head = baseline
            checkpointer.start()
        start = time.perf_counter()
        for i in range(per_block):
            store.append(cid, [message(i)], expected_version=version)
            version += 1
        samples[with_tree].append((time.perf_counter() - start) * 1e6 / per_block)
        if checkpointer is not None:
            checkpointer.stop(final=False)
            signed += checkpointer.written
            baseline = checkpointer._last_head or baseline
    plain, kept = statistics.median(samples[False]), statistics.median(samples[True])
    return {
        "append_us_without_tree": round(plain, 1),
        "append_us_with_checkpointer": round(kept, 1),
        "append_overhead_percent": round((kept / plain - 1) * 100, 1),
        "checkpoints_during_appends": signed,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    signer = Signer.generate("bench.chatledger.example/log")
    folder = Path(tempfile.mkdtemp(prefix="chatledger-proofs-bench-"))
    if args.postgres:
        from chatledger.events.postgres import PostgresStore

        store: EventStore = PostgresStore(
            args.postgres, schema=f"bench_proofs_{uuid.uuid4().hex[:8]}"
        )
        backend = "postgres"
    else:
        store = SQLiteStore(folder / "log.db")
        backend = "sqlite"
    tree = StoreTree(store)
    result: dict[str, Any] = {"backend": backend, "events": args.events}

    start = time.perf_counter()
    add_events(store, args.events)
    result["build_log_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    tree.update()
    result["first_tree_build_s"] = round(time.perf_counter() - start, 2)

    samples = []
    total = args.events
    for _ in range(args.checkpoints):
        add_events(store, args.new)
        total += args.new
        start = time.perf_counter()
        checkpoint, _ = tree.checkpoint(signer)
        samples.append((time.perf_counter() - start) * 1000)
        if checkpoint.size != total:
            raise SystemExit(f"the checkpoint holds {checkpoint.size} events, not {total}")
    result["new_events"] = args.new
    result["checkpoint_after_10k_ms"] = round(statistics.median(samples), 1)
    result["checkpoint_samples_ms"] = [round(value, 1) for value in samples]

    size = tree.update().size
    root_hash = tree.root(size)
    positions = [row[0] for row in store._leaf_rows(0, size)] if size <= 200_000 else None
    picks = []
    for _ in range(args.samples):
        if positions is not None:
            position = rng.choice(positions)
            picks.append(store.read_all(after_position=position - 1, limit=1)[0])
        else:
            after = rng.randrange(0, size)
            picks.append(store.read_all(after_position=after, limit=1)[0])
    proof_times, sizes = [], []
    for event in picks:
        start = time.perf_counter()
        proof, located = tree.inclusion_proof(event.event_id, size)
        proof_times.append((time.perf_counter() - start) * 1000)
        verify_inclusion(leaf_hash(located.leaf), proof.leaf_index, size, proof.path, root_hash)
        sizes.append(len(dump_proof(proof, leaf=located.leaf, event_id=event.event_id).encode()))
    result["inclusion_proof_ms"] = round(statistics.median(proof_times), 2)
    result["inclusion_proof_ms_max"] = round(max(proof_times), 2)
    result["inclusion_proof_bytes_median"] = int(statistics.median(sizes))
    result["inclusion_proof_bytes_max"] = max(sizes)
    olds = [rng.randrange(1, size) for _ in range(max(1, args.samples // 10))]
    consistency_times = []
    for old in olds:
        start = time.perf_counter()
        tree.consistency_proof(old, size)
        consistency_times.append((time.perf_counter() - start) * 1000)
    result["consistency_proof_ms"] = round(statistics.median(consistency_times), 2)
    stored = len(
        store._tree_nodes([(level, idx) for level in range(8, 21) for idx in range(size >> level)])
    )
    result["stored_subtrees"] = stored
    result["stored_bytes_per_event"] = round(stored * (32 + 16) / size, 3)
    result.update(
        append_overhead(store, signer, folder, args.blocks, args.per_block, args.poll, args.every)
    )
    store.close()
    shutil.rmtree(folder, ignore_errors=True)  # the log file: up to 0.5 GB at 1M events
    if args.postgres:
        import psycopg

        schema = getattr(store, "schema", "")
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # the benchmark's own schema
    return result


def report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"backend, events                          {result['backend']}, {result['events']:,}",
            f"build the log (appends of {BATCH})          {result['build_log_s']} s",
            f"first tree build (a pass over the log)   {result['first_tree_build_s']} s",
            f"checkpoint after {result['new_events']:,} new events        "
            f"{result['checkpoint_after_10k_ms']} ms median (goal <= 500 ms), samples "
            f"{result['checkpoint_samples_ms']}",
            f"inclusion proof from the store           {result['inclusion_proof_ms']} ms median, "
            f"{result['inclusion_proof_ms_max']} max (goal <= 10 ms)",
            f"inclusion proof JSON (leaf, event id)    {result['inclusion_proof_bytes_median']} "
            f"median / {result['inclusion_proof_bytes_max']} max bytes (goal <= 1,500)",
            f"consistency proof from the store         {result['consistency_proof_ms']} ms median",
            f"stored subtrees                          {result['stored_subtrees']:,} "
            f"({result['stored_bytes_per_event']} bytes per event with their keys)",
            f"single-event append, no checkpointer     {result['append_us_without_tree']} us",
            f"... with a checkpointer running          {result['append_us_with_checkpointer']} us "
            f"({result['append_overhead_percent']:+} %, goal <= 5 %; "
            f"{result['checkpoints_during_appends']} checkpoints signed meanwhile)",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=10_000, help="events before each checkpoint")
    parser.add_argument("--checkpoints", type=int, default=5, help="checkpoints timed")
    parser.add_argument("--samples", type=int, default=500, help="proofs timed")
    parser.add_argument("--blocks", type=int, default=6, help="append blocks of each kind")
    parser.add_argument("--per-block", type=int, default=2_000, help="appends per block")
    parser.add_argument(
        "--every", type=int, default=10_000, help="the checkpointer signs every N events"
    )
    parser.add_argument(
        "--poll", type=float, default=0.25, help="the checkpointer's poll interval, seconds"
    )
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL database instead")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    result = run(args)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    missed = [name for name, goal in GOALS.items() if result[name] > goal]
    if missed:
        print("goals missed:", ", ".join(missed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
