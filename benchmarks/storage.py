"""Figure 4: database bytes per turn at 100, 200 and 400 turns.

The goal compares bytes per turn at the largest size with the best (smallest) peer's, while
chatledger keeps everything the server said: its replies carry what Gemini sends besides
the text (usageMetadata, modelVersion, responseId), each turn's model call is an event too,
and every event has its id, hash, time and actor. The peers keep the texts (openai-agents
and LangChain a few fields more).

Each library writes the same turns the way a chat application does, one turn at a time
(chatledger: ``chat.send_message`` answered by a ScriptedTransport with Gemini-shaped
replies, snapshots included; LangGraph: ``graph.invoke`` of a one-node chat graph; llm:
``Response.log_to_db``; the others: the turn's two messages in one call). Size is the
file (plus -wal) after a WAL checkpoint, through a separate connection; the baseline is
the contents as compact JSON (corpus.raw_json_bytes).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from . import corpus
from .measure import Progress, database_bytes, failure
from .peers import PEERS, ChatledgerStore, Library

NAME = "storage"
TITLE = "4. Database bytes per turn"


def _chatledger_breakdown(path: Path) -> dict[str, Any]:
    """Where chatledger's bytes are: payload lengths per table (not counting b-tree
    overhead and indexes)."""
    conn = sqlite3.connect(str(path))
    try:
        events = conn.execute(
            "SELECT count(*), sum(length(data)), sum(length(metadata)), "
            "sum(length(event_id) + length(hash) + length(recorded_at) + length(type) + length(conversation_id)) "
            "FROM events"
        ).fetchone()
        snapshots = conn.execute(
            "SELECT count(*), coalesce(sum(length(state)), 0) FROM snapshots"
        ).fetchone()
        try:
            # The file's pages by table and index (b-tree overhead and free space on
            # each page included), where SQLite was built with the dbstat table.
            pages = {
                str(name): int(size)
                for name, size in conn.execute(
                    "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
                )
            }
        except sqlite3.OperationalError:
            pages = {}
    finally:
        conn.close()
    return {
        "page_bytes_by_table": pages,
        "events": events[0],
        "event_data_bytes": events[1] or 0,
        "event_metadata_bytes": events[2] or 0,
        "event_envelope_bytes": events[3] or 0,
        "snapshots": snapshots[0],
        "snapshot_bytes": snapshots[1],
    }


def _measure(
    library: Library, path: Path, checkpoints: list[int], progress: Progress
) -> list[dict[str, Any]]:
    points = []
    written = 0
    started = time.perf_counter()
    for checkpoint in checkpoints:
        for turn in range(written, checkpoint):
            library.write_turn(turn)
        written = checkpoint
        size = database_bytes(path)
        raw = corpus.raw_json_bytes(checkpoint)
        point: dict[str, Any] = {
            "turns": checkpoint,
            **size,
            "bytes_per_turn": size["file_bytes"] / checkpoint,
            "raw_json_bytes": raw,
            "vs_raw_json": size["file_bytes"] / raw,
            "elapsed_s": time.perf_counter() - started,
        }
        if isinstance(library, ChatledgerStore):
            point["breakdown"] = _chatledger_breakdown(path)
        points.append(point)
        progress(f"{library.key}: {checkpoint} turns, {size['file_bytes']:,} bytes")
    return points


def run(sizes: dict[str, Any], workdir: Path, progress: Progress) -> dict[str, Any]:
    checkpoints: list[int] = sizes["storage_turns"]
    rows: list[dict[str, Any]] = []
    for factory in (ChatledgerStore, *PEERS):
        row: dict[str, Any] = {"library": factory.key, "variant": "one turn at a time"}
        rows.append(row)
        path = workdir / f"storage-{factory.key}.db"
        try:
            row["version"] = factory.version()
            library = factory(path)
            try:
                row["durability"] = library.durability()
                row["points"] = _measure(library, path, checkpoints, progress)
            finally:
                library.close()
        except Exception as exc:
            row["error"] = failure(exc)
            progress(f"{factory.key} failed: {row['error']}")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        points = row.get("points") or []
        if len(points) >= 2:
            row["growth_last_two"] = points[-1]["file_bytes"] / points[-2]["file_bytes"]

    subject = rows[0]
    last = checkpoints[-1]
    goal: dict[str, Any] = {
        "goal": "4",
        "text": f"bytes per turn at {last} turns <= the best peer's, everything the server said kept",
        "target": 1.0,
    }

    def at_last(row: dict[str, Any]) -> dict[str, Any] | None:
        points = row.get("points") or []
        return points[-1] if points and points[-1]["turns"] == last else None

    peers = [(row, at_last(row)) for row in rows[1:] if at_last(row) is not None]
    ours = at_last(subject)
    if ours is None or not peers:
        goal.update(met=None, detail=f"not measured: {subject.get('error') or 'no peer measured'}")
    else:
        best_row, best = min(peers, key=lambda pair: pair[1]["bytes_per_turn"])  # type: ignore[index]
        assert best is not None
        ratio = ours["bytes_per_turn"] / best["bytes_per_turn"]
        goal.update(
            ratio=ratio,
            met=ratio <= 1.0,
            best_peer=best_row["library"],
            detail=(
                f"chatledger {ours['bytes_per_turn']:,.0f} B/turn vs {best_row['library']} "
                f"{best['bytes_per_turn']:,.0f} B/turn = {ratio:.2f}x (raw JSON of the contents: "
                f"{ours['raw_json_bytes'] / last:,.0f} B/turn)"
            ),
        )
        for row, point in [*peers, (subject, ours)]:
            assert point is not None
            row["vs_best_peer"] = point["bytes_per_turn"] / best["bytes_per_turn"]
    goals = [goal]
    notes = [
        f"a turn = a user message of {corpus.USER_CHARS} chars and a model reply of "
        f"{corpus.MODEL_CHARS} chars; raw JSON = the wire contents as compact JSON "
        f"({corpus.raw_json_bytes(1):,} bytes per turn)",
        "chatledger's replies carry what Gemini sends besides the text (usageMetadata, "
        "modelVersion, responseId), as the log keeps the raw response",
    ]
    pages = ((ours or {}).get("breakdown") or {}).get("page_bytes_by_table") or {}
    if pages:
        largest = ", ".join(f"{name} {size / last:,.0f}" for name, size in list(pages.items())[:4])
        notes.append(f"chatledger's file by table and index at {last} turns, B/turn: {largest}")
    return {
        "name": NAME,
        "title": TITLE,
        "unit": "bytes/turn",
        "rows": rows,
        "goals": goals,
        "notes": notes,
    }
