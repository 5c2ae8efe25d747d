"""``verify``: check every table the library reads against the hash chains of the log.

The events are the record; every other row is a cache of them and is checked, not
trusted. For one stream or the whole log:

- **events**: each decodes as its kind and its hash is the chain's (so any change to an
  event, or to an earlier one, is named), its content committed with its salt or erased
  and covered by a ``content_erased`` event (docs/erasure.md); versions are gapless from 1 and positions
  increase with them; only the first event is a ``conversation_started``, and a fork's
  parent event exists with the hash the fork names; where a backend's positions are
  gapless (SQLite, memory), no position is missing;
- **head rows** (``streams``): one per stream that has events and none for a stream that
  has none; each agrees with its events in every column the library reads: version and
  hash (appends chain onto them), ``created_at`` and ``updated_at`` (listings sort by
  them), ``parent_id`` and ``parent_version`` (trees and exports follow them);
- **snapshots**: each belongs to a stream that has events, at a version it has (their
  contents are compared with the log by the client's verify, which knows their format);
- **the schema** (whole-log verify only): what the backend's migrations made is there
  and intact: the triggers that refuse changes to events, the unique indexes, every
  migration recorded (and, on SQLite, the file's own integrity check).

What it cannot see: a log rewritten consistently (events edited and every hash after
them recomputed, heads to match) verifies, because a hash chain certifies itself. Only a
head hash kept somewhere the log's writers cannot change (a signed checkpoint, an
export) detects that. The log is never modified. See ``docs/stores.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import msgspec

from ..errors import IntegrityError, InvalidInputError
from .envelope import event_hash
from .erasure import hashed_data
from .kinds import ContentErased, ConversationStarted, NewerSchemaError
from .rows import (
    HeadEvidence,
    RawRow,
    StreamRow,
    damaged_field,
    head_problem,
    missing_head_reason,
    noncanonical_field,
    parent_of_data,
    row_data,
)

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
    #: Conversations whose read models were compared with the log (a client's verify of
    #: a SQLite store; see docs/stores.md, "Read models").
    read_models_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise :class:`IntegrityError` naming the first bad event, if any."""
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise IntegrityError(f"log verification failed at {self.problems[0]}{more}")


class SnapshotRow(NamedTuple):
    """A stored snapshot's anchor, as ``verify`` checks it (its state is the client's;
    the store can only say whether it is bytes)."""

    conversation_id: object
    name: object
    version: object
    state_is_bytes: bool = True


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

    def _stream_rows(self, conversation_id: str | None) -> list[StreamRow]: ...

    def _snapshot_rows(self, conversation_id: str | None) -> list[SnapshotRow]: ...

    def _schema_problems(self) -> list[str]: ...


class StreamSummary(NamedTuple):
    """What a stream's verified events say about its head row and its snapshots."""

    last_version: int
    last_event_id: str
    last_position: int
    last_hash: str
    last_recorded_at: str
    first_recorded_at: str
    first_parent: tuple[str | None, int | None]


def verify_log_tables(store: LogTables, conversation_id: str | None = None) -> VerificationReport:
    """Check the events, head rows, snapshots and (for the whole log) schema of one
    stream or of every stream. Every problem names where it was found; the log is never
    modified."""
    report = VerificationReport()
    heads: dict[str, StreamRow] = {}
    for head in store._stream_rows(conversation_id):
        if isinstance(head.conversation_id, str):
            heads[head.conversation_id] = head
        else:
            report.problems.append(
                Problem(
                    conversation_id=f"{head.conversation_id!r:.60}",
                    version=None,
                    reason="a head row with a damaged conversation_id (not a stream's id)",
                )
            )
    ids = [conversation_id] if conversation_id else sorted({*store._stream_ids(), *heads})
    #: Per stream verified: what its events say, None when it has none, and absent when
    #: they are damaged (already named: neither its head nor its snapshots can be judged).
    summaries: dict[str, StreamSummary | None] = {}
    for stream_id in ids:
        summary, has_events = _verify_stream(store, stream_id, report, heads.get(stream_id))
        if has_events and summary is None:
            continue
        summaries[stream_id] = summary
        _verify_head(stream_id, heads.get(stream_id), summary, report)
    damaged = set(ids) - summaries.keys()
    snapshots = [row for row in store._snapshot_rows(conversation_id) if row[0] not in damaged]
    _verify_snapshots(snapshots, summaries, store, report)
    if conversation_id is None:
        if store.gapless_positions:
            _verify_positions(store, report)
        report.problems.extend(
            Problem(conversation_id="(schema)", version=None, reason=reason)
            for reason in store._schema_problems()
        )
    return report


def _verify_head(
    conversation_id: str,
    head: StreamRow | None,
    summary: StreamSummary | None,
    report: VerificationReport,
) -> None:
    if head is None:
        if summary is not None:
            report.problems.append(
                Problem(
                    conversation_id=conversation_id,
                    version=summary.last_version,
                    event_id=summary.last_event_id,
                    position=summary.last_position,
                    reason=missing_head_reason(summary.last_version),
                )
            )
        return
    if summary is None:
        evidence = HeadEvidence(None, None, None, None)
    else:
        evidence = HeadEvidence(
            summary.last_version,
            summary.last_hash if head.version == summary.last_version else None,
            summary.last_recorded_at if head.version == summary.last_version else None,
            summary.first_recorded_at,
            summary.first_parent,
        )
    problem = head_problem(head, evidence)
    if problem is not None:
        # Named at the stream's last event, where its head should be.
        report.problems.append(
            Problem(
                conversation_id=conversation_id,
                version=summary.last_version if summary else None,
                event_id=summary.last_event_id if summary else None,
                position=summary.last_position if summary else None,
                reason=problem,
            )
        )


def _verify_snapshots(
    snapshots: list[SnapshotRow],
    summaries: dict[str, StreamSummary | None],
    store: LogTables,
    report: VerificationReport,
) -> None:
    for snapshot in snapshots:
        cid, version = snapshot.conversation_id, snapshot.version
        if not isinstance(cid, str):
            reason, where = "a snapshot with a damaged conversation_id", f"{cid!r:.60}"
        else:
            where = cid
            if cid not in summaries:
                # Not among the streams verified (a snapshot of a stream with no events
                # and no head row): look at it alone.
                summaries[cid], _ = _verify_stream(store, cid, VerificationReport(), None)
            summary = summaries[cid]
            if summary is None:
                reason = (
                    f"a snapshot ({snapshot.name!s:.40}) of a conversation with no events: "
                    "the snapshots table was edited"
                )
            elif (
                not isinstance(version, int)
                or isinstance(version, bool)
                or version < 1
                or not snapshot.state_is_bytes
            ):
                what = (
                    "its state is not bytes"
                    if not snapshot.state_is_bytes
                    else f"its version is {version!r:.40}"
                )
                reason = (
                    f"its snapshot {snapshot.name!s:.40} is damaged ({what}): resumes ignore "
                    "this cache and fold the events; delete it (EventStore.delete_snapshot)"
                )
            elif version > summary.last_version:
                reason = (
                    f"its snapshot {snapshot.name!s:.40} is at version {version}, but its events "
                    f"end at version {summary.last_version} (the snapshots table was edited)"
                )
            else:
                continue
        report.problems.append(
            Problem(
                conversation_id=where,
                version=version if isinstance(version, int) else None,
                reason=reason,
            )
        )


def _verify_stream(
    store: LogTables, conversation_id: str, report: VerificationReport, head: StreamRow | None
) -> tuple[StreamSummary | None, bool]:
    """Check a stream's events. Returns what they say of its head (None when there are
    none, or they are damaged: then a problem names the first bad event), and whether
    the stream has events."""
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
        if head is None:
            bad(None, "stream has no events")
        return None, False
    #: Erased events, events with live salted content, and (version, up_to_version) of
    #: each content_erased event.
    erased: list[RawRow] = []
    live: list[RawRow] = []
    erasures: list[tuple[int, int]] = []
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
            return None, True
        if row.version != expected_version:
            bad(row, f"version gap: expected version {expected_version}, found {row.version}")
            return None, True
        if row.position <= last_position:
            bad(row, "positions are not increasing with versions (rows reordered?)")
            return None, True
        try:
            data = _decode(row.data)
            metadata = _decode(row.metadata) if row.metadata else {}
            decoded = row_data(row)
            if not isinstance(metadata, dict):
                raise msgspec.ValidationError("its metadata is not a JSON object")
            stored_form = noncanonical_field(row, data, metadata)
            if stored_form is not None:
                bad(row, stored_form)
                return None, True
            # Content committed with a salt, or erased (docs/erasure.md).
            hashed = hashed_data(row.type, data, row.content_salt)
            digest = event_hash(
                conversation_id=conversation_id,
                version=row.version,
                event_id=row.event_id,
                type=row.type,
                schema_version=row.schema_version,
                data=hashed,
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
            ValueError,
        ) as exc:
            bad(row, f"data is not a valid {row.type} event: {exc}")
            return None, True
        if digest != row.hash:
            bad(row, "hash mismatch: the event was modified, or an earlier one was")
            return None, True
        if row.version == 1:
            if not isinstance(decoded, ConversationStarted):
                bad(row, f"first event is {row.type}, not conversation_started")
                return None, True
            if decoded.parent is not None:
                problem = _check_parent(store, decoded)
                if problem:
                    bad(row, problem)
                    return None, True
        elif isinstance(decoded, ConversationStarted):
            bad(row, "conversation_started after the first event")
            return None, True
        if row.content_salt == "":
            erased.append(row)
        elif row.content_salt is not None:
            live.append(row)
        if isinstance(decoded, ContentErased):
            erasures.append((row.version, decoded.up_to_version))
        prev_hash = row.hash
        expected_version += 1
        last_position = row.position
    _verify_erasures(erased, live, erasures, bad)
    first, last = rows[0], rows[-1]
    return (
        StreamSummary(
            last_version=last.version,
            last_event_id=last.event_id,
            last_position=last.position,
            last_hash=last.hash,
            last_recorded_at=last.recorded_at,
            first_recorded_at=first.recorded_at,
            first_parent=parent_of_data(first.type, first.data),
        ),
        True,
    )


def _verify_erasures(
    erased: list[RawRow],
    live: list[RawRow],
    erasures: list[tuple[int, int]],
    bad: Callable[[RawRow | None, str], None],
) -> None:
    """Every erased event is covered by a later ``content_erased`` event of its stream,
    and no event such an event covers holds content again (docs/erasure.md)."""

    def covering(row: RawRow) -> int | None:
        return next(
            (at for at, up_to in erasures if at > row.version and up_to >= row.version), None
        )

    for row in erased:
        if covering(row) is None:
            bad(
                row,
                "its content was erased, but no later content_erased event of the "
                "conversation records the erasure (erased outside chatledger erase)",
            )
    for row in live:
        at = covering(row)
        if at is not None:
            bad(
                row,
                f"the content_erased event at v{at} erased it, but it holds content again "
                "(restored from a copy), or the erasure was interrupted: run chatledger "
                "erase again",
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
