"""The transparency log's pure costs at a million leaves: tree, checkpoint, proofs.

    python benchmarks/proofs.py                 # 1,000,000 leaves (about a minute)
    python benchmarks/proofs.py --leaves 100000 --json results.json

An in-memory tree keeps every complete subtree at level 8 and up (what the stores will
keep: see docs/proofs.md), so roots and proofs read stored hashes and hash at most the
255 leaves below level 8 and the right edge, as they will from a store. Measured:

- appending: leaf hash and right-edge update per leaf (the tree's share of an append);
- a checkpoint after 10,000 new events on the million-leaf tree: extend the right edge,
  fold the root, sign the note (the store's reads and writes come in the next phase);
- the root, an inclusion proof and a consistency proof from the stored subtrees, their
  verification, and their JSON size.

Times are medians over many runs; the machine is shared, so read them as orders of
magnitude. Nothing here touches a database.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatledger.proofs.checkpoint import dump_proof, make_checkpoint, open_checkpoint
from chatledger.proofs.merkle import (
    CompactRange,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from chatledger.proofs.note import Signer

GOALS = {
    "checkpoint_after_10k_ms": 500.0,
    "inclusion_proof_bytes_max": 1500,
    "inclusion_proof_ms": 10.0,
}


def median_ms(work: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def event_hashes(count: int, salt: str = "") -> list[bytes]:
    """Leaf inputs as a store gives them: each event's 32-byte SHA-256."""
    return [hashlib.sha256(f"{salt}event {i}".encode()).digest() for i in range(count)]


def run(leaves: int, new: int, samples: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    signer = Signer.generate("bench.chatledger.example/log")
    inputs = event_hashes(leaves)

    start = time.perf_counter()
    tree = MemoryTree(min_stored_level=8)
    tree.append(inputs)
    build_s = time.perf_counter() - start
    stored = len(tree.stored)

    # A checkpoint after `new` events: the right edge kept in memory by the writer.
    edge = CompactRange.from_source(tree, leaves)
    extra = event_hashes(new, salt="new ")

    def checkpoint_after_new() -> None:
        trial = edge.copy()
        trial.extend([leaf_hash(value) for value in extra], min_level=8)
        make_checkpoint(trial.head(), signer)

    checkpoint_ms = median_ms(checkpoint_after_new, 9)
    rebuild_edge_ms = median_ms(lambda: CompactRange.from_source(tree, leaves), 21)
    root_ms = median_ms(lambda: root(tree, leaves), 21)
    expected_root = tree.root()

    indexes = [rng.randrange(leaves) for _ in range(samples)]
    proofs = []
    start = time.perf_counter()
    for index in indexes:
        proofs.append(inclusion_proof(tree, index, leaves))
    proof_ms = (time.perf_counter() - start) * 1000 / samples
    start = time.perf_counter()
    for index, proof in zip(indexes, proofs, strict=True):
        verify_inclusion(leaf_hash(inputs[index]), index, leaves, proof.path, expected_root)
    verify_ms = (time.perf_counter() - start) * 1000 / samples
    sizes = [
        len(dump_proof(p, leaf=inputs[i]).encode()) for i, p in zip(indexes, proofs, strict=True)
    ]
    tree.reads = 0
    inclusion_proof(tree, leaves - 1, leaves)
    reads_per_proof = tree.reads

    olds = [rng.randrange(1, leaves) for _ in range(max(1, samples // 10))]
    roots = {old: root(tree, old) for old in olds}
    start = time.perf_counter()
    consistency = [consistency_proof(tree, old, leaves) for old in olds]
    consistency_ms = (time.perf_counter() - start) * 1000 / len(olds)
    start = time.perf_counter()
    for old, proof in zip(olds, consistency, strict=True):
        verify_consistency(old, leaves, roots[old], expected_root, proof.path)
    consistency_verify_ms = (time.perf_counter() - start) * 1000 / len(olds)
    consistency_sizes = [len(dump_proof(p).encode()) for p in consistency]

    _, note = make_checkpoint(tree.head(), signer)
    sign_ms = median_ms(lambda: make_checkpoint(tree.head(), signer), 51)
    open_ms = median_ms(lambda: open_checkpoint(note, [signer.verifier]), 51)

    return {
        "leaves": leaves,
        "build_s": round(build_s, 2),
        "append_us_per_leaf": round(build_s * 1e6 / leaves, 2),
        "stored_subtrees": stored,
        "stored_bytes_per_leaf": round(stored * 32 / leaves, 3),
        "new_events": new,
        "checkpoint_after_10k_ms": round(checkpoint_ms, 2),
        "right_edge_rebuild_ms": round(rebuild_edge_ms, 3),
        "root_ms": round(root_ms, 3),
        "inclusion_proof_ms": round(proof_ms, 3),
        "inclusion_verify_ms": round(verify_ms, 3),
        "inclusion_proof_hashes_read": reads_per_proof,
        "inclusion_proof_bytes_median": int(statistics.median(sizes)),
        "inclusion_proof_bytes_max": max(sizes),
        "consistency_proof_ms": round(consistency_ms, 3),
        "consistency_verify_ms": round(consistency_verify_ms, 3),
        "consistency_proof_bytes_max": max(consistency_sizes),
        "checkpoint_note_bytes": len(note.encode()),
        "sign_checkpoint_ms": round(sign_ms, 3),
        "open_checkpoint_ms": round(open_ms, 3),
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"leaves                                  {result['leaves']:,}",
        f"build the tree (leaf hash + right edge) {result['build_s']} s "
        f"({result['append_us_per_leaf']} us/leaf)",
        f"stored subtrees (levels >= 8)           {result['stored_subtrees']:,} "
        f"({result['stored_bytes_per_leaf']} hash bytes/leaf)",
        f"checkpoint after {result['new_events']:,} new events       "
        f"{result['checkpoint_after_10k_ms']} ms (goal <= 500 ms for the whole checkpoint)",
        f"right edge rebuilt from stored subtrees {result['right_edge_rebuild_ms']} ms",
        f"root from stored subtrees               {result['root_ms']} ms",
        f"inclusion proof: make / verify          {result['inclusion_proof_ms']} / "
        f"{result['inclusion_verify_ms']} ms (goal <= 10 ms), "
        f"{result['inclusion_proof_hashes_read']} hashes read",
        f"inclusion proof JSON: median / max      {result['inclusion_proof_bytes_median']} / "
        f"{result['inclusion_proof_bytes_max']} bytes (goal <= 1,500)",
        f"consistency proof: make / verify        {result['consistency_proof_ms']} / "
        f"{result['consistency_verify_ms']} ms, max {result['consistency_proof_bytes_max']} bytes",
        f"checkpoint note                         {result['checkpoint_note_bytes']} bytes, "
        f"sign {result['sign_checkpoint_ms']} ms, verify {result['open_checkpoint_ms']} ms",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=10_000, help="events before the checkpoint")
    parser.add_argument("--samples", type=int, default=2_000, help="proofs to time")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    result = run(args.leaves, args.new, args.samples, args.seed)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    missed = [
        name
        for name, goal in GOALS.items()
        if name in result and result[name] > goal and args.leaves >= 1_000_000
    ]
    if missed:
        print("goals missed:", ", ".join(missed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
