"""Figure 1: single-event appends per second on SQLite, one event per transaction.

Every library appends one user message (corpus.USER_CHARS characters) per call, each call
its own transaction, at the library's own default durability. Rounds are interleaved
(each round, every library appends a batch to a fresh conversation, in a rotating order)
so the machine's noise falls on all of them alike. The rate is 1 / median call time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .measure import Progress, failure, summary
from .peers import PEERS, ChatledgerStore, Library

NAME = "appends"
TITLE = "1. Single-event appends/s, SQLite, one event per transaction"
GOAL = ">= 3x the best peer"


def _contenders() -> list[tuple[str, str, bool, Callable[[Path], Library]]]:
    """(library, variant, is the goal's subject or a peer counted for it, factory)."""
    contenders: list[tuple[str, str, bool, Callable[[Path], Library]]] = [
        ("chatledger", "user_message_added (defaults)", True, lambda path: ChatledgerStore(path)),
        (
            "chatledger",
            "turn_rewound (defaults)",
            False,
            lambda path: ChatledgerStore(path, event="rewind"),
        ),
        (
            "chatledger",
            "user_message_added, synchronous=FULL (as the peers)",
            False,
            lambda path: ChatledgerStore(path, synchronous="FULL"),
        ),
    ]
    for peer in PEERS:
        contenders.append((peer.key, peer.api.split(" /")[0], True, peer))
    return contenders


def run(sizes: dict[str, Any], workdir: Path, progress: Progress) -> dict[str, Any]:
    rounds, batch = sizes["append_rounds"], sizes["append_batch"]
    rows: list[dict[str, Any]] = []
    open_libraries: list[tuple[dict[str, Any], Library]] = []
    for index, (key, variant, counted, factory) in enumerate(_contenders()):
        row: dict[str, Any] = {"library": key, "variant": variant, "counted": counted}
        rows.append(row)
        try:
            library = factory(workdir / f"appends-{index}-{key}.db")
            row["version"] = library.version()
            row["durability"] = library.durability()
            library.new_conversation()
            library.append_timed(range(batch // 4 + 1))  # warm-up: connections, caches
            open_libraries.append((row, library))
        except Exception as exc:
            row["error"] = failure(exc)
            progress(f"{key} ({variant}) failed to start: {row['error']}")

    samples: dict[int, list[float]] = {id(row): [] for row, _ in open_libraries}
    for round_number in range(rounds):
        progress(f"round {round_number + 1}/{rounds} ({batch} appends per library)")
        shift = round_number % max(1, len(open_libraries))
        for row, library in open_libraries[shift:] + open_libraries[:shift]:
            if "error" in row:
                continue
            try:
                library.new_conversation()
                first = round_number * batch
                samples[id(row)] += library.append_timed(range(first, first + batch))
            except Exception as exc:
                row["error"] = failure(exc)
    for row, library in open_libraries:
        with contextlib.suppress(Exception):
            library.close()
        if "error" not in row and samples[id(row)]:
            stats = summary(samples[id(row)])
            row.update(stats)
            row["per_second"] = 1.0 / stats["median_s"]
            row["throughput_per_second"] = stats["n"] / (stats["mean_s"] * stats["n"])

    subject = rows[0]
    peers = [row for row in rows if row["library"] != "chatledger" and row.get("per_second")]
    goal: dict[str, Any] = {"text": GOAL}
    if subject.get("per_second") and peers:
        best = max(peers, key=lambda row: row["per_second"])
        ratio = subject["per_second"] / best["per_second"]
        goal.update(
            ratio=ratio,
            met=ratio >= 3.0,
            best_peer=best["library"],
            detail=(
                f"chatledger {subject['per_second']:,.0f}/s vs {best['library']} "
                f"{best['per_second']:,.0f}/s = {ratio:.2f}x"
            ),
        )
        for row in rows:
            if row.get("per_second"):
                row["vs_best_peer"] = row["per_second"] / best["per_second"]
    else:
        goal.update(
            met=None, detail="not measured: " + (subject.get("error") or "no peer measured")
        )
    return {
        "name": NAME,
        "title": TITLE,
        "unit": "appends/s",
        "rows": rows,
        "goals": [goal],
        "notes": [
            f"{rounds} rounds x {batch} appends per library, each round to a fresh conversation; "
            "rate = 1 / median call time (throughput from the mean is in the JSON)",
            "llm's LogStore.append commits the message and then moves the thread's tip in a "
            "second transaction (two commits per call)",
            "openai-agents times `await session.add_items([item])` inside one event loop "
            "(its calls hop to a worker thread)",
            "LangGraph's update_state writes a full checkpoint of the thread's state",
        ],
    }
