"""Figure 2: open a conversation and be ready to send, at 1k, 10k and 100k events.

chatledger: a new ``Client(store=path)`` and ``client.chats.get(id)`` (the chat can send
at once). The long logs are built by direct store appends of complete turns (the three
events a send writes), then one real send through a ScriptedTransport, which makes the
client write its snapshot as it does during sends (every 500 events), then more direct
turns so the open also reads events past the snapshot (about 250: the average lag of a
snapshot written every 500 events). The first open, before any snapshot existed, is timed
once and reported as "without snapshot".

Peers hold the same number of turns (N events = (N - 1) / 3 turns, so twice that many
messages) and "ready to send" is their fresh open + get of every message, since each of
them sends the whole history.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .measure import Progress, database_bytes, failure, summary
from .peers import PEERS, ChatledgerStore

NAME = "resume"
TITLE = "2. Open a conversation, ready to send, by log length"
#: (size index, the most chatledger may take as a multiple of the best peer's read).
GOALS = ((0, 1.0), (-1, 0.25))

TAIL_TURNS = 83  # events past the snapshot: about 250


def _open_chat(path: Path, conversation_id: str) -> None:
    import chatledger

    client = chatledger.Client(store=str(path))
    try:
        client.chats.get(conversation_id)
    finally:
        client.close()


def _build_chatledger(path: Path, events: int, progress: Progress) -> dict[str, Any]:
    turns = (events - 1) // 3
    tail = min(TAIL_TURNS, turns // 4)
    ledger = ChatledgerStore(path)
    try:
        ledger.new_conversation()
        bulk = turns - tail - 1
        progress(f"chatledger {events:,} events: appending {bulk:,} turns")
        ledger.append_turns_direct(0, bulk)
        started = time.perf_counter()
        _open_chat(path, ledger.conversation_id)
        without_snapshot = time.perf_counter() - started
        ledger.write_turn(bulk)  # a real send: the client writes its snapshot
        ledger.append_turns_direct(bulk + 1, tail)
        snapshot = ledger.store.load_snapshot(ledger.conversation_id, "conversation")
        return {
            "conversation_id": ledger.conversation_id,
            "events": ledger.head,
            "turns": turns,
            "without_snapshot_s": without_snapshot,
            "snapshot_version": snapshot.version if snapshot else None,
            "snapshot_bytes": len(snapshot.state) if snapshot else 0,
            "database": database_bytes(path),
        }
    finally:
        ledger.close()


def run(sizes: dict[str, Any], workdir: Path, progress: Progress) -> dict[str, Any]:
    event_sizes: list[int] = sizes["resume_events"]
    rounds, peer_rounds = sizes["resume_rounds"], sizes["resume_peer_rounds"]
    rows: list[dict[str, Any]] = []

    # chatledger: build every size, then time the opens interleaved across sizes.
    built: list[tuple[dict[str, Any], Path]] = []
    for events in event_sizes:
        path = workdir / f"resume-chatledger-{events}.db"
        row: dict[str, Any] = {
            "library": "chatledger",
            "variant": "Client(store=path).chats.get(id)",
            "size_events": events,
        }
        rows.append(row)
        try:
            row["version"] = ChatledgerStore.version()
            row.update(_build_chatledger(path, events, progress))
            built.append((row, path))
        except Exception as exc:
            row["error"] = failure(exc)
            progress(f"chatledger {events} failed: {row['error']}")
    samples: dict[int, list[float]] = {id(row): [] for row, _ in built}
    for row, path in built:
        _open_chat(path, row["conversation_id"])  # warm-up: the OS file cache
    for round_number in range(rounds):
        progress(f"chatledger opens, round {round_number + 1}/{rounds}")
        for row, path in built:
            started = time.perf_counter()
            _open_chat(path, row["conversation_id"])
            samples[id(row)].append(time.perf_counter() - started)
    for row, _ in built:
        row.update(summary(samples[id(row)]))

    # Peers: the same turns, fresh open + read.
    for peer in PEERS:
        for events in event_sizes:
            turns = (events - 1) // 3
            row = {
                "library": peer.key,
                "variant": peer.api.split(" / ")[-1],
                "size_events": events,
                "turns": turns,
            }
            rows.append(row)
            path = workdir / f"resume-{peer.key}-{events}.db"
            try:
                row["version"] = peer.version()
                progress(f"{peer.key}: building {turns:,} turns")
                library = peer(path)
                try:
                    library.new_conversation()
                    built_at = time.perf_counter()
                    library.add_turns(0, turns)
                    row["build_s"] = time.perf_counter() - built_at
                    row["messages_read"] = library.read_fresh()
                    peer_samples = []
                    count = peer_rounds if events < max(event_sizes) else max(2, peer_rounds // 2)
                    for _ in range(count):
                        started = time.perf_counter()
                        library.read_fresh()
                        peer_samples.append(time.perf_counter() - started)
                    row.update(summary(peer_samples))
                    row["database"] = database_bytes(path)
                finally:
                    library.close()
            except Exception as exc:
                row["error"] = failure(exc)
                progress(f"{peer.key} {events} failed: {row['error']}")
            # The big files are not needed again.
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

    goals: list[dict[str, Any]] = []
    for index, target in GOALS:
        events = event_sizes[index]
        goal: dict[str, Any] = {
            "goal": "2",
            "text": f"at {events:,} events <= {target:g}x the best peer's read of the same turns",
            "target": target,
        }
        subject = next(
            (
                r
                for r in rows
                if r["library"] == "chatledger" and r["size_events"] == events and r.get("median_s")
            ),
            None,
        )
        peers = [
            r
            for r in rows
            if r["library"] != "chatledger" and r["size_events"] == events and r.get("median_s")
        ]
        if subject is None or not peers:
            goal.update(met=None, detail=f"not measured at {events:,} events")
        else:
            best = min(peers, key=lambda r: r["median_s"])
            ratio = subject["median_s"] / best["median_s"]
            goal.update(
                ratio=ratio,
                met=ratio <= target,
                best_peer=best["library"],
                detail=(
                    f"chatledger {subject['median_s'] * 1e3:.2f} ms vs {best['library']} "
                    f"{best['median_s'] * 1e3:.2f} ms = {ratio:.2f}x"
                ),
            )
        goals.append(goal)
    for row in rows:
        same = [
            r
            for r in rows
            if r["library"] != "chatledger"
            and r["size_events"] == row["size_events"]
            and r.get("median_s")
        ]
        if row.get("median_s") and same:
            row["vs_best_peer"] = row["median_s"] / min(r["median_s"] for r in same)
    for row in rows:
        if row.get("median_s"):
            first = next(
                (r for r in rows if r["library"] == row["library"] and r.get("median_s")), None
            )
            if first is not None:
                row["vs_smallest"] = row["median_s"] / first["median_s"]
    return {
        "name": NAME,
        "title": TITLE,
        "unit": "ms",
        "rows": rows,
        "goals": goals,
        "notes": [
            "chatledger's long logs: direct store appends of complete turns (request digests "
            "are placeholders), one real send that writes the client's snapshot, then about "
            "250 more events past it",
            f"chatledger: {rounds} opens per size, interleaved; peers: {peer_rounds} reads per "
            "size (fewer at the largest)",
        ],
    }
