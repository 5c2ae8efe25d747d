"""Figure 3: list the newest 50 conversations of a log of 100,000, and of 1,000.

Each size is its own SQLite file, built by direct store appends (``synchronous=OFF`` while
building only; the file is the same): conversation ``i`` holds 1 or 2 complete turns (the
three events a send writes per turn), and every 20th is a fork of the one before it, so
that listings show parents. Then, timed in interleaved rounds on each file:

- ``client.chats.list(limit=50)`` on an open client (a server listing for each page load);
- ``chatledger --db PATH ls -n 50``, in this process through click's test runner: the
  command's own work, opening the store included, without the interpreter's start-up
  (timed once more as a subprocess, for reference);
- the store's own ``SELECT ... FROM streams ORDER BY updated_at DESC LIMIT 50`` on a plain
  sqlite3 connection (reference: the listing's floor without any fold or read model), and
  the same page from the ``chat_summaries`` read model through its ``updated_at`` index
  (reference: what ``chats.list()`` reads, without the library).

Then 50 conversations of ``listing_long_turns`` turns are appended, so the newest 50 are
long, and ``chats.list(limit=50)`` is timed again: a listing that never folds a
conversation costs the same whatever their length. The events ``store.read`` returns
during one listing are counted too (a fold reads every event of the conversation).

The goal also names the fields of a listing: id, model, title or first words, turns,
updated, parent. A summary without a title or first words does not meet it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from . import corpus
from .measure import Progress, database_bytes, failure, summary
from .peers import turn_events

NAME = "listing"
TITLE = "3. List the newest 50 conversations, by number of conversations"
LIMIT = 50
FORK_EVERY = 20
ABSOLUTE_S = 0.005
GROWTH = 1.5
#: The listing's fields, and the names a summary may give each (any one will do).
FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("conversation_id", "id"),
    "model": ("model",),
    "title or first words": ("title", "first_words", "preview", "snippet"),
    "turns": ("turns",),
    "updated": ("updated_at", "updated"),
    "parent": ("parent_id", "parent"),
}
FLOOR_SQL = (
    "SELECT conversation_id, version, created_at, updated_at, parent_id, parent_version "
    "FROM streams ORDER BY updated_at DESC, conversation_id LIMIT ?"
)
#: The same page from the summaries read model (docs/stores.md#conversation-read-models),
#: through its index on updated_at: what chats.list() reads, without the library.
SUMMARIES_FLOOR_SQL = (
    "SELECT conversation_id, model, title, turns, updated_at, parent_id "
    "FROM chat_summaries ORDER BY updated_at DESC, conversation_id LIMIT ?"
)


def _build(path: Path, conversations: int, progress: Progress) -> dict[str, Any]:
    from chatledger.events import ConversationStarted, NewEvent, ParentRef, SQLiteStore

    store = SQLiteStore(str(path), synchronous="OFF")
    started = time.perf_counter()
    events_written = 0
    try:
        previous: tuple[str, int] | None = None
        for index in range(conversations):
            conversation_id = str(uuid.uuid4())
            parent = None
            if previous is not None and index % FORK_EVERY == FORK_EVERY - 1:
                anchor = store.read(previous[0], after_version=1, to_version=2)[0]
                parent = ParentRef(conversation_id=previous[0], version=2, hash=anchor.hash)
            first = NewEvent(
                data=ConversationStarted(model=corpus.MODEL, parent=parent),
                metadata={"actor": "bench", "library": "chatledger/bench"},
            )
            turns = 1 + index % 2
            events = [first, *turn_events(index % 64, turns)]
            store.append(conversation_id, events, expected_version=0)
            events_written += len(events)
            previous = (conversation_id, len(events))
            if (index + 1) % 20_000 == 0:
                progress(f"{conversations:,} conversations: {index + 1:,} written")
    finally:
        store.close()
    return {
        "conversations": conversations,
        "events": events_written,
        "build_s": time.perf_counter() - started,
        "database": database_bytes(path),
    }


def _add_long(path: Path, count: int, turns: int) -> None:
    from chatledger.events import ConversationStarted, NewEvent, SQLiteStore

    store = SQLiteStore(str(path), synchronous="OFF")
    try:
        for _ in range(count):
            first = NewEvent(data=ConversationStarted(model=corpus.MODEL))
            store.append(str(uuid.uuid4()), [first, *turn_events(0, turns)], expected_version=0)
    finally:
        store.close()


def _fields(summary_object: Any) -> list[str]:
    """The listing fields ``summary_object`` lacks."""
    return [
        field
        for field, names in FIELDS.items()
        if not any(hasattr(summary_object, name) for name in names)
    ]


class _ReadCounter:
    """Counts the events ``store.read`` returns (a fold reads every event it applies)."""

    def __init__(self, store: Any) -> None:
        self.events = 0
        self._read = store.read

        def read(*args: Any, **kwargs: Any) -> Any:
            events = self._read(*args, **kwargs)
            self.events += len(events)
            return events

        store.read = read


def _ls_command(path: Path) -> Callable[[], int]:
    from click.testing import CliRunner

    from chatledger.cli import cli

    runner = CliRunner()
    args = ["--db", str(path), "ls", "-n", str(LIMIT)]

    def ls() -> int:
        result = runner.invoke(cli, args)
        if result.exit_code != 0:
            raise RuntimeError(f"chatledger ls exited {result.exit_code}: {result.output[-300:]}")
        return len(result.output.splitlines()) - 1  # the header

    return ls


def _ls_subprocess(path: Path, runs: int) -> dict[str, Any]:
    script = Path(sys.executable).with_name("chatledger")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "chatledger.cli"]
    command += ["--db", str(path), "ls", "-n", str(LIMIT)]
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        samples.append(time.perf_counter() - started)
    return summary(samples)


def run(sizes: dict[str, Any], workdir: Path, progress: Progress) -> dict[str, Any]:
    import chatledger

    counts: list[int] = sizes["listing_conversations"]
    rounds, long_turns = sizes["listing_rounds"], sizes["listing_long_turns"]
    rows: list[dict[str, Any]] = []
    timed: list[tuple[dict[str, Any], Callable[[], int]]] = []
    closers: list[Callable[[], None]] = []
    built: dict[int, tuple[Path, Any, _ReadCounter]] = {}
    fields_missing: list[str] | None = None
    version = metadata.version("chatledger")
    try:
        for count in counts:
            path = workdir / f"listing-{count}.db"
            base = {"library": "chatledger", "version": version, "conversations": count}
            try:
                progress(f"building {count:,} conversations")
                info = _build(path, count, progress)
                client = chatledger.Client(store=str(path))
                closers.append(client.close)
                counter = _ReadCounter(client.store)
                built[count] = (path, client, counter)
                first = client.chats.list(limit=LIMIT)
                fields_missing = _fields(first[0]) if first else fields_missing
                floor = sqlite3.connect(str(path))
                closers.append(floor.close)
            except Exception as exc:
                rows.append({**base, "op": "list", "variant": "build", "error": failure(exc)})
                progress(f"{count:,} conversations failed: {rows[-1]['error']}")
                continue

            def listed(client: Any = client) -> int:
                return len(client.chats.list(limit=LIMIT))

            def floor_query(conn: sqlite3.Connection = floor) -> int:
                return len(conn.execute(FLOOR_SQL, (LIMIT,)).fetchall())

            def summaries_query(conn: sqlite3.Connection = floor) -> int:
                return len(conn.execute(SUMMARIES_FLOOR_SQL, (LIMIT,)).fetchall())

            for op, variant, call in (
                ("list", "client.chats.list(limit=50), open client", listed),
                ("ls", "chatledger ls -n 50 (in process, store opened)", _ls_command(path)),
                ("sql", "SELECT ... ORDER BY updated_at DESC LIMIT 50 (floor)", floor_query),
                (
                    "sql-summaries",
                    "SELECT ... FROM chat_summaries ORDER BY updated_at DESC LIMIT 50 (read-model floor)",
                    summaries_query,
                ),
            ):
                row = {**base, **info, "op": op, "variant": variant, "newest": "short"}
                rows.append(row)
                timed.append((row, call))

        def time_rounds(entries: list[tuple[dict[str, Any], Callable[[], int]]]) -> None:
            samples: dict[int, list[float]] = {id(row): [] for row, _ in entries}
            for row, call in entries:  # warm-up, and check each lists 50
                try:
                    row["listed"] = call()
                except Exception as exc:
                    row["error"] = failure(exc)
            for round_number in range(rounds):
                if round_number % max(1, rounds // 4) == 0:
                    progress(f"round {round_number + 1}/{rounds}")
                shift = round_number % max(1, len(entries))
                for row, call in entries[shift:] + entries[:shift]:
                    if "error" in row:
                        continue
                    started = time.perf_counter()
                    call()
                    samples[id(row)].append(time.perf_counter() - started)
            for row, _ in entries:
                if samples[id(row)]:
                    row.update(summary(samples[id(row)]))

        time_rounds(timed)
        for count, (_, client, counter) in built.items():
            counter.events = 0
            client.chats.list(limit=LIMIT)
            row = next(r for r in rows if r["conversations"] == count and r["op"] == "list")
            row["events_read_per_list"] = counter.events

        # The newest 50 made long: a listing that folds pays for every event.
        long_timed: list[tuple[dict[str, Any], Callable[[], int]]] = []
        for count, (path, client, _) in built.items():
            progress(f"{count:,} conversations: adding {LIMIT} of {long_turns} turns each")
            _add_long(path, LIMIT, long_turns)
            row = {
                "library": "chatledger",
                "version": version,
                "conversations": count,
                "op": "list-long",
                "variant": f"client.chats.list(limit=50), newest 50 of {long_turns} turns each",
                "newest": "long",
            }
            rows.append(row)

            def listed_long(client: Any = client) -> int:
                return len(client.chats.list(limit=LIMIT))

            long_timed.append((row, listed_long))
        time_rounds(long_timed)
        for count, (_, client, counter) in built.items():
            counter.events = 0
            client.chats.list(limit=LIMIT)
            row = next(r for r in rows if r["conversations"] == count and r["op"] == "list-long")
            row["events_read_per_list"] = counter.events
        if built:
            largest = max(built)
            with contextlib.suppress(Exception):
                row = next(r for r in rows if r["conversations"] == largest and r["op"] == "ls")
                row["subprocess"] = _ls_subprocess(built[largest][0], 3)
    finally:
        for close in closers:
            with contextlib.suppress(Exception):
                close()

    for row in rows:
        smallest = _row(rows, counts[0], row["op"])
        if row.get("median_s") and smallest is not None and row is not smallest:
            row["vs_smallest"] = row["median_s"] / smallest["median_s"]
            row["smallest"] = counts[0]
    return {
        "name": NAME,
        "title": TITLE,
        "unit": "ms",
        "rows": rows,
        "goals": _goals(rows, counts, fields_missing),
        "notes": [
            f"conversations of 1 or 2 turns (4 or 7 events), every {FORK_EVERY}th a fork; "
            f"{rounds} interleaved rounds; the long ones have {long_turns} turns "
            f"({3 * long_turns + 1} events)",
            "chatledger ls in process: click's CliRunner invoking the command (its output "
            "captured); the subprocess time adds the interpreter's start-up and imports",
        ],
    }


def _row(rows: list[dict[str, Any]], count: int, op: str) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["conversations"] == count and r["op"] == op and r.get("median_s")),
        None,
    )


def _goals(
    rows: list[dict[str, Any]], counts: list[int], fields_missing: list[str] | None
) -> list[dict[str, Any]]:
    small, large = counts[0], counts[-1]
    missing = (
        f"; the summaries lack: {', '.join(fields_missing)}"
        if fields_missing
        else ("" if fields_missing is not None else "; fields not checked")
    )
    goals: list[dict[str, Any]] = []
    for op, label in (("list", "client.chats.list(limit=50)"), ("ls", "chatledger ls -n 50")):
        at_large, at_small = _row(rows, large, op), _row(rows, small, op)
        absolute: dict[str, Any] = {
            "goal": "3",
            "text": f"{label}, newest 50 of {large:,}: <= 5 ms with every field",
            "target": ABSOLUTE_S * 1e3,
            "ratio_unit": "ms",
        }
        growth: dict[str, Any] = {
            "goal": "3",
            "text": f"{label}: {large:,} conversations <= {GROWTH}x the time at {small:,}",
            "target": GROWTH,
        }
        if at_large is None or at_small is None:
            absolute.update(met=None, detail="not measured")
            growth.update(met=None, detail="not measured")
        else:
            ms = at_large["median_s"] * 1e3
            absolute.update(
                ratio=ms,
                met=at_large["median_s"] <= ABSOLUTE_S and not fields_missing,
                detail=f"{ms:.2f} ms{missing}",
            )
            ratio = at_large["median_s"] / at_small["median_s"]
            growth.update(
                ratio=ratio,
                met=ratio <= GROWTH,
                detail=(
                    f"{ms:.2f} ms at {large:,} / {at_small['median_s'] * 1e3:.2f} ms at "
                    f"{small:,} = {ratio:.2f}x"
                ),
            )
        goals += [absolute, growth]
    short, long = _row(rows, large, "list"), _row(rows, large, "list-long")
    never: dict[str, Any] = {
        "goal": "3",
        "text": "chats.list() never folds: newest 50 long costs <= 1.5x newest 50 short",
        "target": GROWTH,
    }
    if short is None or long is None:
        never.update(met=None, detail="not measured")
    else:
        ratio = long["median_s"] / short["median_s"]
        never.update(
            ratio=ratio,
            met=ratio <= GROWTH,
            detail=(
                f"{long['median_s'] * 1e3:.2f} ms / {short['median_s'] * 1e3:.2f} ms = "
                f"{ratio:.2f}x; store.read returned {long.get('events_read_per_list', '?')} "
                f"vs {short.get('events_read_per_list', '?')} events per listing"
            ),
        )
    goals.append(never)
    return goals
