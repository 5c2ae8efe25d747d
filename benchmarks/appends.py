"""Figure 5: appends per second on SQLite, one event per transaction: one writer, then 8
threads and 8 asyncio tasks in one process, each appending to a conversation of its own.

Every library appends one user message (corpus.USER_CHARS characters) per call, each call
its own transaction, at the library's own default durability; chatledger both at
``synchronous=FULL`` (what every peer's default amounts to: each commit synced, so equal
durability, the headline) and at its defaults (WAL, ``synchronous=NORMAL``).

- One writer: rounds are interleaved (each round, every library appends a batch to a fresh
  conversation, in a rotating order) so the machine's noise falls on all of them alike. The
  rate is 1 / median call time.
- 8 threads: each thread opens its writer (``Library.thread_writer``: chatledger's one store
  shared by the process, eventsourcing's one recorder, LangGraph's one checkpointer; a
  session, history or connection per writer where the library has one per conversation),
  appends one untimed message, waits at a barrier, then appends ``concurrent_batch``
  messages. The rate is all appends / (last end - first start); the median over rounds.
- 8 asyncio tasks: the same on one event loop (``Library.async_writer``): openai-agents'
  native async session, the others' sync call in ``asyncio.to_thread`` (what chatledger's
  ``AsyncChat`` does too), so the loop's default executor (min(32, cores + 4) threads) is
  the limit every library meets alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .measure import Progress, failure, summary
from .peers import PEERS, ChatledgerStore, Library

NAME = "appends"
TITLE = "5. Appends/s, SQLite, one event per transaction: 1 writer, 8 threads, 8 tasks"
WRITERS = 8

Factory = Callable[[Path], Library]


def _contenders() -> list[tuple[str, str, str, Factory]]:
    """(library, variant, role, factory); role is "full" or "defaults" for chatledger,
    "peer" for the others, "" for rows shown but not judged."""
    contenders: list[tuple[str, str, str, Factory]] = [
        (
            "chatledger",
            "user_message_added, synchronous=FULL (equal durability)",
            "full",
            lambda path: ChatledgerStore(path, synchronous="FULL"),
        ),
        (
            "chatledger",
            "user_message_added (defaults)",
            "defaults",
            lambda path: ChatledgerStore(path),
        ),
        (
            "chatledger",
            "turn_rewound (defaults)",
            "",
            lambda path: ChatledgerStore(path, event="rewind"),
        ),
    ]
    for peer in PEERS:
        contenders.append((peer.key, peer.api.split(" /")[0], "peer", peer))
    return contenders


def _threads(library: Library, writers: int, appends: int) -> float:
    """Appends/s of ``writers`` threads, each on a conversation of its own."""
    barrier = threading.Barrier(writers + 1)
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            append = library.thread_writer()
            append(0)  # untimed: the writer's connection and first statements
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        try:
            started = time.perf_counter()
            for turn in range(1, appends + 1):
                append(turn)
            spans.append((started, time.perf_counter()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, name=f"writer-{n}") for n in range(writers)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return writers * appends / (max(end for _, end in spans) - min(start for start, _ in spans))


def _tasks(library: Library, writers: int, appends: int) -> float:
    """Appends/s of ``writers`` asyncio tasks on one loop, each on a conversation of its own."""

    async def run() -> float:
        appenders: list[Callable[[int], Awaitable[None]]] = [
            await library.async_writer() for _ in range(writers)
        ]
        await asyncio.gather(*(append(0) for append in appenders))  # untimed warm-up

        async def write(append: Callable[[int], Awaitable[None]]) -> None:
            for turn in range(1, appends + 1):
                await append(turn)

        started = time.perf_counter()
        await asyncio.gather(*(write(append) for append in appenders))
        return writers * appends / (time.perf_counter() - started)

    return asyncio.run(run())


MODES: dict[str, tuple[str, Callable[[Library, int, int], float]]] = {
    "threads": (f"{WRITERS} threads, {WRITERS} conversations", _threads),
    "tasks": (f"{WRITERS} asyncio tasks, {WRITERS} conversations", _tasks),
}


def _single(
    sizes: dict[str, Any], workdir: Path, progress: Progress
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], Library]]]:
    rounds, batch = sizes["append_rounds"], sizes["append_batch"]
    rows: list[dict[str, Any]] = []
    libraries: list[tuple[dict[str, Any], Library]] = []
    for index, (key, variant, role, factory) in enumerate(_contenders()):
        row: dict[str, Any] = {"library": key, "variant": variant, "role": role, "mode": "single"}
        rows.append(row)
        try:
            library = factory(workdir / f"appends-{index}-{key}.db")
            row["version"] = library.version()
            row["durability"] = library.durability()
            library.new_conversation()
            library.append_timed(range(batch // 4 + 1))  # warm-up: connections, caches
            libraries.append((row, library))
        except Exception as exc:
            row["error"] = failure(exc)
            progress(f"{key} ({variant}) failed to start: {row['error']}")

    samples: dict[int, list[float]] = {id(row): [] for row, _ in libraries}
    for round_number in range(rounds):
        progress(f"one writer: round {round_number + 1}/{rounds} ({batch} appends per library)")
        shift = round_number % max(1, len(libraries))
        for row, library in libraries[shift:] + libraries[:shift]:
            if "error" in row:
                continue
            try:
                library.new_conversation()
                first = round_number * batch
                samples[id(row)] += library.append_timed(range(first, first + batch))
            except Exception as exc:
                row["error"] = failure(exc)
    for row, _ in libraries:
        if "error" not in row and samples[id(row)]:
            stats = summary(samples[id(row)])
            row.update(stats)
            row["per_second"] = 1.0 / stats["median_s"]
            row["throughput_per_second"] = 1.0 / stats["mean_s"]
    return rows, libraries


def _concurrent(
    sizes: dict[str, Any], libraries: list[tuple[dict[str, Any], Library]], progress: Progress
) -> list[dict[str, Any]]:
    rounds, batch = sizes["concurrent_rounds"], sizes["concurrent_batch"]
    rows: list[dict[str, Any]] = []
    runs: list[tuple[dict[str, Any], Library, Callable[[Library, int, int], float]]] = []
    for mode, (variant, function) in MODES.items():
        for single, library in libraries:
            if single["role"] == "":  # the rewind row is for the single writer only
                continue
            row = {
                key: single[key]
                for key in ("library", "role", "version", "durability")
                if key in single
            }
            row.update(mode=mode, variant=f"{variant}: {single['variant']}", writers=WRITERS)
            if "error" in single:
                row["error"] = single["error"]
            rows.append(row)
            runs.append((row, library, function))
    samples: dict[int, list[float]] = {id(row): [] for row, _, _ in runs}
    for round_number in range(rounds):
        progress(
            f"{WRITERS} threads, then {WRITERS} tasks: round {round_number + 1}/{rounds} "
            f"({batch} appends per writer)"
        )
        shift = round_number % max(1, len(runs))
        for row, library, function in runs[shift:] + runs[:shift]:
            if "error" in row:
                continue
            try:
                samples[id(row)].append(function(library, WRITERS, batch))
            except Exception as exc:  # this round is lost (a peer's "database is locked")
                row.setdefault("round_errors", []).append(failure(exc))
                progress(f"{row['library']} ({row['mode']}) failed: {row['round_errors'][-1]}")
    for row, _, _ in runs:
        rates = samples[id(row)]
        if row.get("round_errors"):
            row["failed_rounds"] = len(row["round_errors"])
            if not rates:
                row["error"] = row["round_errors"][0]
        if "error" not in row and rates:
            row["per_second"] = statistics.median(rates)
            row["rates"] = rates
            row["n"] = WRITERS * batch * len(rates)
    return rows


def _goal(
    rows: list[dict[str, Any]], mode: str, role: str, target: float, text: str
) -> dict[str, Any]:
    subject = next((r for r in rows if r["mode"] == mode and r["role"] == role), None)
    peers = [r for r in rows if r["mode"] == mode and r["role"] == "peer" and r.get("per_second")]
    goal: dict[str, Any] = {"goal": "5", "text": text, "target": target}
    if subject is None or not subject.get("per_second") or not peers:
        reason = (subject or {}).get("error") or "no peer measured"
        goal.update(met=None, detail=f"not measured: {reason}")
        return goal
    best = max(peers, key=lambda r: r["per_second"])
    ratio = subject["per_second"] / best["per_second"]
    detail = (
        f"chatledger {subject['per_second']:,.0f}/s vs {best['library']} "
        f"{best['per_second']:,.0f}/s = {ratio:.2f}x"
    )
    if mode == "single":
        # A synced commit's time is bimodal on some disks: the mean's rates say it too.
        mean_best = max(r["throughput_per_second"] for r in peers)
        detail += (
            f"; from mean call times {subject['throughput_per_second']:,.0f}/s vs "
            f"{mean_best:,.0f}/s = {subject['throughput_per_second'] / mean_best:.2f}x"
        )
    goal.update(ratio=ratio, met=ratio >= target, best_peer=best["library"], detail=detail)
    return goal


def run(sizes: dict[str, Any], workdir: Path, progress: Progress) -> dict[str, Any]:
    single_rows, libraries = _single(sizes, workdir, progress)
    try:
        concurrent_rows = _concurrent(sizes, libraries, progress)
    finally:
        for _, library in libraries:
            with contextlib.suppress(Exception):
                library.close()
    rows = single_rows + concurrent_rows
    for mode in ("single", *MODES):
        peers = [
            r for r in rows if r["mode"] == mode and r["role"] == "peer" and r.get("per_second")
        ]
        if peers:
            best = max(r["per_second"] for r in peers)
            for row in rows:
                if row["mode"] == mode and row.get("per_second"):
                    row["vs_best_peer"] = row["per_second"] / best
    threads, tasks = MODES["threads"][0], MODES["tasks"][0]
    goals = [
        _goal(
            rows,
            "single",
            "full",
            1.0,
            "one writer at synchronous=FULL >= 1.0x the best peer (headline)",
        ),
        _goal(rows, "threads", "full", 3.0, f"{threads} at FULL >= 3x the best peer"),
        _goal(rows, "tasks", "full", 3.0, f"{tasks} at FULL >= 3x the best peer"),
        _goal(
            rows,
            "single",
            "defaults",
            3.0,
            "one writer at chatledger's defaults >= 3x the best peer",
        ),
        _goal(rows, "threads", "defaults", 3.0, f"{threads} at the defaults >= 3x the best peer"),
        _goal(rows, "tasks", "defaults", 3.0, f"{tasks} at the defaults >= 3x the best peer"),
    ]
    return {
        "name": NAME,
        "title": TITLE,
        "unit": "appends/s",
        "rows": rows,
        "goals": goals,
        "notes": [
            f"one writer: {sizes['append_rounds']} rounds x {sizes['append_batch']} appends per "
            "library, each round to a fresh conversation; rate = 1 / median call time (the "
            "mean's rate is in the JSON)",
            f"{WRITERS} writers: {sizes['concurrent_rounds']} rounds x {WRITERS} writers x "
            f"{sizes['concurrent_batch']} appends; rate = all appends / wall time, median of the "
            "rounds",
            "every peer at its default durability (each commit synced: synchronous=FULL, in "
            "WAL or rollback-journal mode); chatledger at FULL and at its defaults",
            "llm's LogStore.append commits the message and then moves the thread's tip in a "
            "second transaction (two commits per call)",
            "a round in which a writer fails (llm and LangChain in rollback-journal mode can "
            "return 'database is locked' to concurrent writers at once, without waiting) is "
            "counted as failed; the rate is the median of the rounds that completed",
            "openai-agents times `await session.add_items([item])` (its calls hop to a worker "
            "thread); LangGraph's update_state writes a full checkpoint of the thread's state",
        ],
    }
