"""Exporting and importing conversations as verifiable JSON lines.

An export holds one JSON object per line: the event envelope exactly as stored
(``conversation_id, version, position, event_id, type, schema_version, data, metadata,
recorded_at, hash``). A forked conversation's export starts with its ancestors' events up
to each fork point, so it verifies on its own; with ``include_forks`` every conversation
forked from it (recursively) follows. A third party can check an export with the
standard library alone: ``examples/verify_export.py`` (and the README) show how.

An import verifies everything first (hash chains, gapless versions, fork parents) in a
scratch store, and writes nothing unless the whole file is sound.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from ..errors import IntegrityError, InvalidInputError, NotFoundError
from .envelope import validate_conversation_id, validate_event_id
from .memory import MemoryStore
from .store import EventStore, RawRow

__all__ = ["ImportReport", "export_conversation", "import_lines"]

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "conversation_id": str,
    "version": int,
    "event_id": str,
    "type": str,
    "schema_version": int,
    "data": object,
    "metadata": dict,
    "recorded_at": str,
    "hash": str,
}


class ImportReport(msgspec.Struct, kw_only=True):
    """What an import did."""

    conversations: list[str]
    events: int
    #: Conversations already in the store, identical to the file's (nothing written).
    already_present: list[str]


def _export_row(row: RawRow) -> dict[str, Any]:
    return {
        "conversation_id": row.conversation_id,
        "version": row.version,
        "position": row.position,
        "event_id": row.event_id,
        "type": row.type,
        "schema_version": row.schema_version,
        # The stored JSON, decoded: what the hash covers, byte for byte canonical.
        "data": msgspec.json.decode(row.data),
        "metadata": msgspec.json.decode(row.metadata) if row.metadata else {},
        "recorded_at": row.recorded_at,
        "hash": row.hash,
    }


def export_conversation(
    store: EventStore, conversation_id: str, *, include_forks: bool = False
) -> Iterator[str]:
    """The conversation (its ancestors up to the fork points first; with
    ``include_forks``, its descendants after) as JSON lines, one event each."""
    chain: list[tuple[str, int | None]] = []
    current: str | None = conversation_id
    to_version: int | None = None
    while current is not None:
        info = store.stream_info(current)
        if info is None:
            raise NotFoundError(f"no conversation {current!r} in {store.location}")
        if any(cid == current for cid, _ in chain):
            raise IntegrityError(f"conversation {current} is its own ancestor")
        chain.append((current, to_version))
        current, to_version = info.parent_id, info.parent_version
    for cid, limit in reversed(chain):
        for row in store._read(cid, 0, limit):
            yield msgspec.json.encode(_export_row(row)).decode()
    if include_forks:
        pending = [conversation_id]
        while pending:
            parent = pending.pop(0)
            for child in reversed(store.conversations(parent_id=parent)):
                for row in store._read(child.conversation_id, 0, None):
                    yield msgspec.json.encode(_export_row(row)).decode()
                pending.append(child.conversation_id)


def _parse(lines: Iterable[str | bytes]) -> dict[str, list[RawRow]]:
    streams: dict[str, list[RawRow]] = {}
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInputError(f"line {number} is not UTF-8") from None
        if not line.strip():
            continue
        try:
            value = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise InvalidInputError(f"line {number} is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidInputError(f"line {number} is not a JSON object")
        for field, kind in _FIELDS.items():
            if field not in value:
                raise InvalidInputError(f"line {number} has no {field!r}")
            if not isinstance(value[field], kind) or (kind is int and isinstance(value[field], bool)):
                raise InvalidInputError(f"line {number}: {field!r} has the wrong type")
        try:
            validate_conversation_id(value["conversation_id"])
            validate_event_id(value["event_id"])
        except InvalidInputError as exc:
            raise InvalidInputError(f"line {number}: {exc}") from None
        row = RawRow(
            value["conversation_id"],
            value["version"],
            0,
            value["event_id"],
            value["type"],
            value["schema_version"],
            msgspec.json.encode(value["data"]),
            msgspec.json.encode(value["metadata"]),
            value["recorded_at"],
            value["hash"],
        )
        streams.setdefault(row.conversation_id, []).append(row)
    if not streams:
        raise InvalidInputError("the file holds no events")
    return streams


def _order_parents_first(streams: dict[str, list[RawRow]]) -> list[str]:
    """Stream ids, each after the stream it was forked from (when that is in the file)."""
    parents: dict[str, str | None] = {}
    for cid, rows in streams.items():
        rows.sort(key=lambda row: row.version)
        first = msgspec.json.decode(rows[0].data) if rows[0].type == "conversation_started" else {}
        parent = first.get("parent") if isinstance(first, dict) else None
        parents[cid] = parent.get("conversation_id") if isinstance(parent, dict) else None
    ordered: list[str] = []

    def visit(cid: str, trail: tuple[str, ...]) -> None:
        if cid in ordered:
            return
        if cid in trail:
            raise IntegrityError(f"conversation {cid} is its own ancestor in the file")
        parent = parents.get(cid)
        if parent in streams:
            visit(parent, (*trail, cid))
        ordered.append(cid)

    for cid in streams:
        visit(cid, ())
    return ordered


def import_lines(store: EventStore, lines: Iterable[str | bytes]) -> ImportReport:
    """Verify an export and write its conversations into ``store``, as they were.

    Event ids, versions, times, metadata and hashes are kept (positions are the store's).
    A conversation already in the store is skipped if identical, refused otherwise.
    Raises InvalidInputError for a malformed file and IntegrityError when anything fails
    verification; the store is then unchanged.
    """
    streams = _parse(lines)
    ordered = _order_parents_first(streams)
    scratch = MemoryStore()
    for cid in ordered:
        parent_missing = _parent_outside_file(streams[cid], streams)
        if parent_missing is not None:
            # The parent must already be in the target store, with the same event hash.
            parent_id, parent_version = parent_missing
            rows = store._read(parent_id, 0, parent_version)
            if not rows or rows[-1].version != parent_version:
                raise IntegrityError(
                    f"{cid} was forked from {parent_id} v{parent_version}, which is neither "
                    "in the file nor in this store"
                )
            scratch.import_stream(parent_id, rows)
        scratch.import_stream(cid, streams[cid])
    scratch.verify().raise_for_problems()

    present: list[str] = []
    for cid in ordered:
        existing = [(r.event_id, r.hash) for r in store._read(cid, 0, None)]
        incoming = [(r.event_id, r.hash) for r in streams[cid]]
        shorter = min(len(existing), len(incoming))
        if existing[:shorter] != incoming[:shorter]:
            raise IntegrityError(
                f"conversation {cid} is already in {store.location} with different events; "
                "nothing was imported"
            )
        if len(existing) >= len(incoming):
            present.append(cid)
    written = 0
    for cid in ordered:
        if cid not in present:
            written += len(store.import_stream(cid, streams[cid]))
    return ImportReport(
        conversations=[cid for cid in ordered if cid not in present],
        events=written,
        already_present=present,
    )


def _parent_outside_file(rows: list[RawRow], streams: dict[str, list[RawRow]]) -> tuple[str, int] | None:
    if rows[0].type != "conversation_started":
        return None
    data = msgspec.json.decode(rows[0].data)
    parent = data.get("parent") if isinstance(data, dict) else None
    if not isinstance(parent, dict):
        return None
    parent_id, version = parent.get("conversation_id"), parent.get("version")
    if not isinstance(parent_id, str) or not isinstance(version, int) or parent_id in streams:
        return None
    return parent_id, version
