"""Exporting and importing conversations as verifiable JSON lines.

An export holds one JSON object per line: the event envelope exactly as stored
(``conversation_id, version, position, event_id, type, schema_version, data, metadata,
recorded_at, hash``, and ``content_salt`` for an event whose content is committed or
erased: docs/erasure.md). A forked conversation's export starts with its ancestors' events up
to each fork point, so it verifies on its own; with ``include_forks`` every conversation
forked from it (recursively) follows. A third party can check an export with the
standard library alone: ``examples/verify_export.py`` (and the README) show how.

An import verifies everything first (hash chains, gapless versions, fork parents, that
every event decodes as its kind) in a scratch store, and writes nothing unless the whole
file is sound. Values another host wrote are bounded as well: every ``recorded_at`` is a
UTC time in the form chatledger writes, no later than the import's own clock plus
:data:`MAX_CLOCK_SKEW_SECONDS`, and no earlier than the event before it in its stream
(or, for a fork's first event, its parent's event at the fork) by more than that; every
turn's lease is finite and at most :data:`~chatledger.events.kinds.MAX_LEASE_SECONDS`;
an event id appears once in the file.

An import never leaves a turn open: a conversation whose file ends inside a turn (an
export taken while a reply was streaming, or after its writer crashed) is imported with
that turn closed by a ``turn_abandoned`` event the importer records after the file's
events, in the same transaction. No writer in the target store owns that turn, so
otherwise every send would wait for its lease. Importing the same file again changes
nothing (the conversation is already there, with the closing event after it). Any change to an exported event, a dropped, duplicated or reordered line,
a line spliced in from another conversation, or a changed hash breaks the chain, and the
import refuses the file naming the line or event.

What the hash chain cannot prove, by design: it is self-certifying, so someone who edits
an event and then recomputes every hash after it produces a file that verifies. Such a
file is refused only where it meets an anchor it cannot rewrite: a conversation already
in the target store (its events must be the file's first ones, same ids and hashes), a
fork's parent in the store (its hash is named by the fork), or a head hash kept
elsewhere (compare ``chatledger log --json`` or the export's last line with it). Dropping
the last events of a conversation likewise leaves a valid, shorter chain. A recomputed
file that is accepted is still a consistent log: it verifies, its events decode, and it
reads back like any other conversation, but it proves nothing about who wrote it. Keep
the head hashes (or whole exports) somewhere the log's writers cannot change when that
matters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from ..errors import IntegrityError, InvalidInputError, NotFoundError
from .envelope import (
    MAX_NESTING,
    check_json,
    event_hash,
    new_event_id,
    utc_now,
    validate_conversation_id,
    validate_event_id,
)
from .erasure import valid_salt
from .kinds import (
    MAX_LEASE_SECONDS,
    ConversationStarted,
    HistoryReplaced,
    ModelCallFailed,
    ModelResponded,
    TurnAbandoned,
    UserMessageAdded,
    data_to_builtins,
    shape_problem,
)
from .memory import MemoryStore
from .rows import parent_of_rows, row_data
from .store import EventStore, RawRow
from .times import parse_utc_time

__all__ = [
    "MAX_CLOCK_SKEW_SECONDS",
    "ImportReport",
    "export_conversation",
    "import_lines",
    "open_turn",
]

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


# What chatledger itself writes: a value checked at MAX_NESTING, wrapped in an event's
# data (a history, a response's candidates) and in the export line's envelope.
MAX_LINE_NESTING = MAX_NESTING + 8
_HASH = re.compile(r"[0-9a-f]{64}")
#: Exactly what chatledger writes (:func:`~chatledger.events.envelope.utc_now`): UTC, in
#: microseconds. One form, so that times compare as text (listings sort by them).
_RECORDED_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
#: How far an imported time may be ahead of this host's clock, or behind the event
#: before it in its stream (clocks of different writers differ a little).
MAX_CLOCK_SKEW_SECONDS = 300.0
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,99}")


def _check_line(value: dict[str, Any]) -> None:
    """Raise InvalidInputError unless the envelope fields of one line are well formed."""
    validate_conversation_id(value["conversation_id"])
    validate_event_id(value["event_id"])
    if value["version"] < 1 or value["schema_version"] < 1:
        raise InvalidInputError("'version' and 'schema_version' must be 1 or more")
    if not _TYPE.fullmatch(value["type"]):
        raise InvalidInputError(f"'type' {value['type']!r:.60} is not an event type name")
    if not _HASH.fullmatch(value["hash"]):
        raise InvalidInputError("'hash' is not 64 lowercase hex digits (a sha256)")
    recorded_at = value["recorded_at"]
    try:
        if not _RECORDED_AT.fullmatch(recorded_at):
            raise ValueError(recorded_at)
        parse_utc_time(recorded_at)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"'recorded_at' {recorded_at!r:.60} is not a UTC time as chatledger writes it "
            "(YYYY-MM-DDTHH:MM:SS.ffffffZ)"
        ) from None
    check_json(value, "the line", max_nesting=MAX_LINE_NESTING)


class ImportReport(msgspec.Struct, kw_only=True):
    """What an import did."""

    conversations: list[str]
    events: int
    #: Conversations already in the store, identical to the file's (nothing written).
    already_present: list[str]
    #: (conversation, turn) of each turn the file left open, closed by the import with
    #: a ``turn_abandoned`` event (counted in ``events``).
    closed_turns: list[tuple[str, int]] = msgspec.field(default_factory=list)


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
        # What the hash needs beside the data (docs/erasure.md): the salt the content is
        # committed with, or "" once it is erased. Absent for an event hashed as stored.
        **({} if row.content_salt is None else {"content_salt": row.content_salt}),
    }


def export_conversation(
    store: EventStore, conversation_id: str, *, include_forks: bool = False
) -> Iterator[str]:
    """The conversation (its ancestors up to the fork points first; with
    ``include_forks``, its descendants after) as JSON lines, one event each.

    Ancestors are found from each fork's own first event (hashed, so it cannot name
    another parent without breaking the chain), never from the head rows; forks are
    found through the head rows, which a listing checks against those first events."""
    chain: list[tuple[str, int | None]] = []
    current: str | None = conversation_id
    to_version: int | None = None
    while current is not None:
        if any(cid == current for cid, _ in chain):
            raise IntegrityError(f"conversation {current} is its own ancestor; run verify")
        first = store._read(current, 0, 1)
        if not first and not chain:
            raise NotFoundError(f"no conversation {current!r} in {store.location}")
        if not first or (
            to_version is not None and not store._read(current, to_version - 1, to_version)
        ):
            raise IntegrityError(
                f"{chain[-1][0]} was forked from {current} v{to_version}, which is not in "
                f"{store.location}; run verify"
            )
        chain.append((current, to_version))
        parent_id, parent_version = parent_of_rows(first)
        if parent_id is not None and parent_version is None:
            raise IntegrityError(
                f"the first event of {current} names a parent without a version; run verify"
            )
        current, to_version = parent_id, parent_version
    for cid, limit in reversed(chain):
        for row in store._read(cid, 0, limit):
            yield msgspec.json.encode(_export_row(row)).decode()
    if include_forks:
        pending, seen = [conversation_id], {conversation_id}
        while pending:
            parent = pending.pop(0)
            for child in reversed(store.conversations(parent_id=parent)):
                if child.conversation_id in seen:
                    raise IntegrityError(
                        f"conversation {child.conversation_id} is its own ancestor; run verify"
                    )
                seen.add(child.conversation_id)
                for row in store._read(child.conversation_id, 0, None):
                    yield msgspec.json.encode(_export_row(row)).decode()
                pending.append(child.conversation_id)


def _parse(lines: Iterable[str | bytes]) -> dict[str, list[RawRow]]:
    streams: dict[str, list[RawRow]] = {}
    lines_of_ids: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInputError(f"line {number} is not UTF-8") from None
        if not isinstance(line, str):
            raise InvalidInputError(f"line {number} is a {type(line).__name__}, not text")
        if not line.strip():
            continue
        try:
            value = msgspec.json.decode(line)
        except (msgspec.DecodeError, RecursionError, UnicodeError) as exc:
            # RecursionError: nested deeper than the stack; UnicodeError: a str line
            # holding lone surrogates.
            raise InvalidInputError(f"line {number} is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidInputError(f"line {number} is not a JSON object")
        for field, kind in _FIELDS.items():
            if field not in value:
                raise InvalidInputError(f"line {number} has no {field!r}")
            if not isinstance(value[field], kind) or (
                kind is int and isinstance(value[field], bool)
            ):
                raise InvalidInputError(f"line {number}: {field!r} has the wrong type")
        try:
            _check_line(value)
        except InvalidInputError as exc:
            raise InvalidInputError(f"line {number}: {exc}") from None
        salt = value.get("content_salt")
        if not valid_salt(salt):
            raise InvalidInputError(
                f"line {number}: 'content_salt' is neither 64 lowercase hex digits nor \"\" "
                "(an erased event)"
            )
        earlier = lines_of_ids.setdefault(value["event_id"], number)
        if earlier != number:
            raise IntegrityError(
                f"event id {value['event_id']!r:.110} appears twice in the file (lines "
                f"{earlier} and {number}): every event has an id of its own; nothing was "
                "imported"
            )
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
            salt,
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
        parent_id = parent.get("conversation_id") if isinstance(parent, dict) else None
        parents[cid] = parent_id if isinstance(parent_id, str) else None
    ordered: list[str] = []
    placed: set[str] = set()
    for cid in streams:
        # Walk up to the first ancestor already placed (or outside the file), then place
        # the trail top-down. Iterative: a file may hold a fork chain of any depth.
        trail: list[str] = []
        on_trail: set[str] = set()
        current: str | None = cid
        while current is not None and current in streams and current not in placed:
            if current in on_trail:
                raise IntegrityError(f"conversation {current} is its own ancestor in the file")
            trail.append(current)
            on_trail.add(current)
            current = parents.get(current)
        for stream_id in reversed(trail):
            ordered.append(stream_id)
            placed.add(stream_id)
    return ordered


def import_lines(
    store: EventStore, lines: Iterable[str | bytes], *, actor: str | None = None
) -> ImportReport:
    """Verify an export and write its conversations into ``store``, as they were.

    Event ids, versions, times, metadata and hashes are kept (positions are the store's).
    A conversation already in the store is skipped if identical, refused otherwise. A
    conversation the file leaves inside an open turn gets a ``turn_abandoned`` event
    after the file's, recorded with ``actor`` (default ``"chatledger import"``).
    Raises InvalidInputError for a malformed file and IntegrityError when anything fails
    verification or the rules above; the store is then unchanged.
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
    _check_shapes(streams)
    _check_times_and_leases(streams, scratch)

    present: list[str] = []
    for cid in ordered:
        existing = [(r.event_id, r.hash) for r in store._read(cid, 0, None)]
        incoming = [(r.event_id, r.hash) for r in streams[cid]]
        shorter = min(len(existing), len(incoming))
        if existing[:shorter] != incoming[:shorter]:
            differs = next(i for i in range(shorter) if existing[i] != incoming[i]) + 1
            raise IntegrityError(
                f"conversation {cid} is already in {store.location} with different events "
                f"from version {differs} on (a file taken from another copy of it, or a "
                "turn an earlier import closed); nothing was imported"
            )
        if len(existing) >= len(incoming):
            present.append(cid)
    to_write = [cid for cid in ordered if cid not in present]
    _check_event_ids_are_free(store, to_write, streams)
    closing: dict[str, tuple[int, RawRow]] = {}
    for cid in to_write:
        turn = open_turn(streams[cid])
        if turn is not None:
            closing[cid] = (turn, _closing_row(streams[cid][-1], turn, actor))
    written = 0
    for cid in to_write:
        rows = streams[cid] + ([closing[cid][1]] if cid in closing else [])
        written += len(store.import_stream(cid, rows))
    return ImportReport(
        conversations=to_write,
        events=written,
        already_present=present,
        closed_turns=[(cid, turn) for cid, (turn, _) in closing.items()],
    )


def open_turn(rows: Iterable[RawRow]) -> int | None:
    """The turn a stream's events leave open, or None: the history projection's rule
    (:mod:`chatledger.projections.history`), which the events package cannot import. A
    ``user_message_added`` opens its turn; a response or failure that ends it, a
    ``turn_abandoned`` of it, a replaced history or a (fork's) start closes it."""
    pending: int | None = None
    for row in rows:
        data = row_data(row)
        if isinstance(data, UserMessageAdded):
            pending = data.turn
        elif isinstance(data, (ModelResponded, ModelCallFailed)):
            if data.ends_turn and pending == data.turn:
                pending = None
        elif isinstance(data, TurnAbandoned):
            if pending == data.turn:
                pending = None
        elif isinstance(data, (ConversationStarted, HistoryReplaced)):
            pending = None
    return pending


def _closing_row(last: RawRow, turn: int, actor: str | None) -> RawRow:
    """The ``turn_abandoned`` event that closes ``turn`` after ``last``, hashed onto it."""
    data = data_to_builtins(
        TurnAbandoned(
            turn=turn,
            reason="imported with this turn open: no writer in this log owns it",
        )
    )
    metadata = {"actor": actor or "chatledger import"}
    event_id, recorded_at = new_event_id(), utc_now()
    digest = event_hash(
        conversation_id=last.conversation_id,
        version=last.version + 1,
        event_id=event_id,
        type=TurnAbandoned.type_name,
        schema_version=TurnAbandoned.schema_version,
        data=data,
        metadata=metadata,
        recorded_at=recorded_at,
        prev_hash=last.hash,
    )
    return RawRow(
        last.conversation_id,
        last.version + 1,
        0,
        event_id,
        TurnAbandoned.type_name,
        TurnAbandoned.schema_version,
        msgspec.json.encode(data),
        msgspec.json.encode(metadata),
        recorded_at,
        digest,
    )


def _check_times_and_leases(streams: dict[str, list[RawRow]], scratch: EventStore) -> None:
    """Refuse times from the future or running backwards, and leases over the maximum:
    from another host's clock or a forged file, they would hold a conversation (its
    turn's lease never running out) or reorder listings."""
    latest = _parse_time(utc_now()) + MAX_CLOCK_SKEW_SECONDS
    for cid, rows in streams.items():
        previous: tuple[float, str] | None = None
        parent_id, parent_version = parent_of_rows(rows)
        if parent_id is not None and parent_version is not None:
            fork_point = scratch._read(parent_id, parent_version - 1, parent_version)
            if fork_point:
                previous = (
                    _parse_time(fork_point[0].recorded_at),
                    f"its parent's event {parent_id} v{parent_version}",
                )
        for row in rows:
            when = _parse_time(row.recorded_at)
            if when > latest:
                raise IntegrityError(
                    f"{cid} v{row.version} was recorded at {row.recorded_at}, after this "
                    f"host's clock (by more than {MAX_CLOCK_SKEW_SECONDS:g} s): a clock that "
                    "runs ahead, or a forged file; nothing was imported"
                )
            if previous is not None and when < previous[0] - MAX_CLOCK_SKEW_SECONDS:
                raise IntegrityError(
                    f"{cid} v{row.version} was recorded at {row.recorded_at}, more than "
                    f"{MAX_CLOCK_SKEW_SECONDS:g} s before {previous[1]}: times in a "
                    "conversation do not run backwards; nothing was imported"
                )
            previous = (when, f"v{row.version} before it")
            data = row_data(row)
            if isinstance(data, UserMessageAdded) and not (
                0 < data.lease_seconds <= MAX_LEASE_SECONDS
            ):
                raise IntegrityError(
                    f"{cid} v{row.version} gives its turn a lease of {data.lease_seconds!r:.30} "
                    f"s; a lease is more than 0 and at most {MAX_LEASE_SECONDS:g} s (a day); "
                    "nothing was imported"
                )


def _parse_time(recorded_at: str) -> float:
    return parse_utc_time(recorded_at).timestamp()


def _check_shapes(streams: dict[str, list[RawRow]]) -> None:
    """Refuse events that verify but have a shape chatledger never writes (a file whose
    chain was recomputed after editing): they would break the conversation's projections."""
    for cid, rows in streams.items():
        for row in rows:
            problem = shape_problem(row_data(row))
            if problem is not None:
                raise IntegrityError(
                    f"{cid} v{row.version} is not an event chatledger writes ({problem}); "
                    "nothing was imported"
                )


def _check_event_ids_are_free(
    store: EventStore, to_write: list[str], streams: dict[str, list[RawRow]]
) -> None:
    """Refuse, before anything is written, events whose ids the store (or the file) already
    gives to another event: streams are written one transaction each, so a collision
    found while writing would leave the streams before it imported."""
    where: dict[str, tuple[str, int]] = {}
    for cid in to_write:
        for row in streams[cid]:
            if row.event_id in where:
                raise IntegrityError(
                    f"event id {row.event_id!r} is used twice in the file "
                    f"({where[row.event_id][0]} v{where[row.event_id][1]} and "
                    f"{cid} v{row.version}); nothing was imported"
                )
            where[row.event_id] = (cid, row.version)
    ids = list(where)
    for start in range(0, len(ids), 500):
        found = store._find_event_ids(ids[start : start + 500])
        for event_id, (cid, version, _position) in found.items():
            if (cid, version) != where[event_id]:
                raise IntegrityError(
                    f"event id {event_id!r} of {where[event_id][0]} v{where[event_id][1]} is "
                    f"already used in {store.location} by {cid} v{version}; nothing was imported"
                )


def _parent_outside_file(
    rows: list[RawRow], streams: dict[str, list[RawRow]]
) -> tuple[str, int] | None:
    if rows[0].type != "conversation_started":
        return None
    data = msgspec.json.decode(rows[0].data)
    parent = data.get("parent") if isinstance(data, dict) else None
    if not isinstance(parent, dict):
        return None
    parent_id, version = parent.get("conversation_id"), parent.get("version")
    if not isinstance(parent_id, str) or not isinstance(version, int) or parent_id in streams:
        return None
    # Not a usable reference (verify then refuses the stream): do not look it up.
    if isinstance(version, bool) or version < 1:
        return None
    try:
        validate_conversation_id(parent_id)
    except InvalidInputError:
        return None
    return parent_id, version
