"""What erasable content costs (docs/erasure.md): appends, reads, verify, and an erasure.

    python benchmarks/erasure.py                      # 200 turns x 5 rounds (a minute)
    python benchmarks/erasure.py --turns 50 --rounds 3 --json erasure.json

Side by side on real SQLite files (WAL, synchronous=NORMAL), the same events either way:

- **appends**: one turn (a user message and a model reply, about 600 bytes of text) per
  append, with content committed under a fresh salt (what chatledger writes) and hashed
  as stored (what it wrote before erasure existed: the baseline);
- **reads**: ``store.read`` of a conversation of ``--turns`` turns, live, and once erased
  (placeholders turned into what readers show);
- **verify**: ``store.verify`` of that conversation, committed and baseline;
- **erase**: erasing that conversation (``content_erased``, the UPDATEs with
  secure_delete, the WAL checkpoint).

Times are medians over ``--rounds`` runs, baseline and erasable interleaved; the
machine may be shared, so compare the two columns rather than the absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from chatledger.events import (
    ConversationStarted,
    ModelResponded,
    NewEvent,
    SQLiteStore,
    UserMessageAdded,
)
from chatledger.events import store as store_module
from chatledger.events.erasing import erase

TEXT = "The quick brown fox jumps over the lazy dog. " * 6  # about 270 bytes


@contextlib.contextmanager
def baseline(enabled: bool) -> Iterator[None]:
    """With ``enabled``: events hashed as stored, as before erasure existed (no salt)."""
    original = store_module.has_content
    if enabled:
        store_module.has_content = lambda type_name, data: False  # type: ignore[assignment]
    try:
        yield
    finally:
        store_module.has_content = original


def turn(number: int) -> list[NewEvent]:
    return [
        NewEvent(
            data=UserMessageAdded(
                turn=number, content={"role": "user", "parts": [{"text": f"{number} {TEXT}"}]}
            )
        ),
        NewEvent(
            data=ModelResponded(
                turn=number,
                response={
                    "candidates": [
                        {"content": {"role": "model", "parts": [{"text": f"{number} {TEXT}"}]}}
                    ],
                    "usageMetadata": {"totalTokenCount": 120},
                },
            )
        ),
    ]


def write_conversation(store: SQLiteStore, cid: str, turns: int) -> list[float]:
    """Append a conversation turn by turn; the milliseconds of each append."""
    store.append(cid, [NewEvent(data=ConversationStarted(model="m"))], expected_version=0)
    version, times = 1, []
    for number in range(1, turns + 1):
        events = turn(number)
        start = time.perf_counter()
        store.append(cid, events, expected_version=version)
        times.append((time.perf_counter() - start) * 1000)
        version += len(events)
    return times


def median_ms(work: Callable[[], object], runs: int = 5) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def run(turns: int, rounds: int) -> dict[str, Any]:
    results: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory() as folder:
        for index in range(rounds):
            for is_baseline in (True, False):
                label = "baseline" if is_baseline else "erasable"
                path = Path(folder) / f"{label}-{index}.db"
                with baseline(is_baseline), SQLiteStore(path) as store:
                    appends = write_conversation(store, "c", turns)
                    add(f"append_turn_ms.{label}", statistics.median(appends))
                    add(f"read_ms.{label}", median_ms(lambda s=store: s.read("c")))
                    add(f"verify_ms.{label}", median_ms(lambda s=store: s.verify("c"), 3))
                    if not is_baseline:
                        start = time.perf_counter()
                        erase(store, conversation_id="c", reason="benchmark", actor="bench")
                        add("erase_conversation_ms", (time.perf_counter() - start) * 1000)
                        add("read_ms.erased", median_ms(lambda s=store: s.read("c")))
                        add("verify_ms.erased", median_ms(lambda s=store: s.verify("c"), 3))
    medians = {name: round(statistics.median(values), 3) for name, values in results.items()}
    events = 1 + 2 * turns
    return {"turns": turns, "events": events, "rounds": rounds, "medians_ms": medians}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="FILE", help="Also write the results to FILE.")
    args = parser.parse_args(argv)
    if args.turns < 1 or args.rounds < 1:
        parser.error("--turns and --rounds must be at least 1")
    result = run(args.turns, args.rounds)
    medians = result["medians_ms"]
    print(
        f"{result['turns']} turns ({result['events']} events) per conversation, "
        f"{result['rounds']} rounds; medians in ms"
    )
    print(f"{'':28}{'baseline':>10}{'erasable':>10}{'erased':>10}{'ratio':>8}")
    for name in ("append_turn_ms", "read_ms", "verify_ms"):
        base, new = medians[f"{name}.baseline"], medians[f"{name}.erasable"]
        erased = medians.get(f"{name}.erased")
        shown = f"{erased:>10.3f}" if erased is not None else f"{'':>10}"
        print(f"{name:28}{base:>10.3f}{new:>10.3f}{shown}{new / base:>8.2f}")
    print(f"{'erase_conversation_ms':28}{medians['erase_conversation_ms']:>30.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
