"""``verify``: check the log's tables against the hash chains they hold.

What is checked, for one stream or the whole log: every event decodes as its kind and
its hash is the chain's (so any change to an event, or to an earlier one, is named);
versions are gapless from 1 and positions increase with them; only the first event is a
``conversation_started``, and a fork's parent event exists with the hash the fork names;
the stream head agrees with the last event; and, where a backend's positions are
gapless, that no position is missing. The log is never modified. See ``docs/stores.md``.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from ..errors import IntegrityError, InvalidInputError
from .envelope import event_hash
from .kinds import ConversationStarted, NewerSchemaError, decode_data
from .rows import RawRow, damaged_field

__all__ = ["LogTables", "Problem", "VerificationReport", "verify_log_tables"]

_decode = msgspec.json.decode


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One thing ``verify`` found wrong, naming the event where it was found."""

    conversation_id: str
    version: int | None
    reason: str
    event_id: str | None = None
    position: int | None = None

    def __str__(self) -> str:
        where = f"{self.conversation_id} v{self.version}" if self.version else self.conversation_id
        if self.position is not None:
            where += f" (position {self.position})"
        return f"{where}: {self.reason}"


class VerificationReport(msgspec.Struct, kw_only=True):
    """The result of ``verify``: how much was checked and every problem found."""

    streams_checked: int = 0
    events_checked: int = 0
    problems: list[Problem] = msgspec.field(default_factory=list)
    #: Snapshots compared with the log (by a client's verify; a store's own is 0).
    snapshots_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise :class:`IntegrityError` naming the first bad event, if any."""
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise IntegrityError(f"log verification failed at {self.problems[0]}{more}")


class LogTables(Protocol):
    """What ``verify`` reads from a store: its backend primitives (every
    :class:`~chatledger.events.store.EventStore` has them)."""

    @property
    def gapless_positions(self) -> bool: ...

    def _read(
        self, conversation_id: str, after_version: int, to_version: int | None
    ) -> list[RawRow]: ...

    def _read_all(self, after_position: int, limit: int) -> list[RawRow]: ...

    def _stream_ids(self) -> list[str]: ...

    def _recorded_head_hash(self, conversation_id: str) -> str | None: ...

    def stream_info(self, conversation_id: str) -> StreamInfoLike | None: ...


class StreamInfoLike(Protocol):
    @property
    def version(self) -> int: ...


def verify_log_tables(store: LogTables, conversation_id: str | None = None) -> VerificationReport:
    """Check hash chains and envelope invariants of one stream or of every stream.

    Every problem names the event where it was found. The log is never modified.
    """
    report = VerificationReport()
    ids = [conversation_id] if conversation_id else store._stream_ids()
    for stream_id in ids:
        _verify_stream(store, stream_id, report)
    if conversation_id is None and store.gapless_positions:
        _verify_positions(store, report)
    return report


def _verify_stream(store: LogTables, conversation_id: str, report: VerificationReport) -> None:
    report.streams_checked += 1
    rows = store._read(conversation_id, 0, None)
    prev_hash = ""
    expected_version = 1
    last_position = 0

    def bad(row: RawRow | None, reason: str) -> None:
        report.problems.append(
            Problem(
                conversation_id=conversation_id,
                version=row.version if row else None,
                event_id=row.event_id if row else None,
                position=row.position if row else None,
                reason=reason,
            )
        )

    if not rows:
        bad(None, "stream has no events")
        return
    for row in rows:
        report.events_checked += 1
        damage = damaged_field(row) or (
            None
            if row.conversation_id == conversation_id
            else f"it is stored under conversation {row.conversation_id!r:.60} (a damaged row "
            "or index)"
        )
        if damage is not None:
            bad(row, damage)
            return
        if row.version != expected_version:
            bad(row, f"version gap: expected version {expected_version}, found {row.version}")
            return
        if row.position <= last_position:
            bad(row, "positions are not increasing with versions (rows reordered?)")
            return
        try:
            data = _decode(row.data)
            metadata = _decode(row.metadata) if row.metadata else {}
            decoded = decode_data(row.type, row.schema_version, row.data)
            if not isinstance(metadata, dict):
                raise msgspec.ValidationError("its metadata is not a JSON object")
            digest = event_hash(
                conversation_id=conversation_id,
                version=row.version,
                event_id=row.event_id,
                type=row.type,
                schema_version=row.schema_version,
                data=data,
                metadata=metadata,
                recorded_at=row.recorded_at,
                prev_hash=prev_hash,
            )
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            KeyError,
            NewerSchemaError,
            RecursionError,
            UnicodeError,
            InvalidInputError,
        ) as exc:
            bad(row, f"data is not a valid {row.type} event: {exc}")
            return
        if digest != row.hash:
            bad(row, "hash mismatch: the event was modified, or an earlier one was")
            return
        if row.version == 1:
            if not isinstance(decoded, ConversationStarted):
                bad(row, f"first event is {row.type}, not conversation_started")
                return
            if decoded.parent is not None:
                problem = _check_parent(store, decoded)
                if problem:
                    bad(row, problem)
                    return
        elif isinstance(decoded, ConversationStarted):
            bad(row, "conversation_started after the first event")
            return
        prev_hash = row.hash
        expected_version += 1
        last_position = row.position
    try:
        info = store.stream_info(conversation_id)
    except IntegrityError as exc:
        bad(None, str(exc))
        return
    if info is not None and info.version != rows[-1].version:
        bad(
            rows[-1],
            f"stream head says version {info.version} but the last event is version "
            f"{rows[-1].version} (events deleted?)",
        )
        return
    head_hash = store._recorded_head_hash(conversation_id)
    if info is not None and head_hash is not None and head_hash != rows[-1].hash:
        bad(
            rows[-1],
            "the stream head's hash is not this last event's (the head was modified); "
            "appends are refused until it is repaired",
        )


def _check_parent(store: LogTables, started: ConversationStarted) -> str | None:
    parent = started.parent
    assert parent is not None
    rows = store._read(parent.conversation_id, parent.version - 1, parent.version)
    if not rows:
        return f"forked from {parent.conversation_id} v{parent.version}, which does not exist"
    if rows[0].hash != parent.hash:
        return f"parent event {parent.conversation_id} v{parent.version} hash differs"
    return None


def _verify_positions(store: LogTables, report: VerificationReport) -> None:
    position = 0
    while True:
        rows = store._read_all(position, 5000)
        if not rows:
            return
        for row in rows:
            if not isinstance(row.position, int) or row.position <= position:
                report.problems.append(
                    Problem(
                        conversation_id=(
                            row.conversation_id if isinstance(row.conversation_id, str) else "?"
                        ),
                        version=row.version if isinstance(row.version, int) else None,
                        position=position,
                        reason=(
                            f"the positions go back from {position} to {row.position!r} "
                            "(a damaged file)"
                        ),
                    )
                )
                return
            if not isinstance(row.conversation_id, str):
                # In no stream, so no stream's check saw it.
                report.problems.append(
                    Problem(
                        conversation_id=repr(row.conversation_id),
                        version=None,
                        event_id=row.event_id if isinstance(row.event_id, str) else None,
                        position=row.position,
                        reason=damaged_field(row) or "its conversation_id is damaged",
                    )
                )
            if row.position != position + 1:
                report.problems.append(
                    Problem(
                        conversation_id=row.conversation_id,
                        version=row.version,
                        event_id=row.event_id,
                        position=row.position,
                        reason=(
                            f"positions {position + 1}..{row.position - 1} are missing "
                            "(events deleted?)"
                        ),
                    )
                )
            position = row.position
