"""A stored row as the backends return it, and how it becomes a :class:`RecordedEvent`.

Every backend reads its tables into :class:`RawRow` values, undecoded; reads decode them
with :func:`row_to_event`, and ``verify`` checks them without trusting any column. A row
only a damaged database can hold (NULL, or a number where text belongs) is named by
:func:`damaged_field` rather than crashing a read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from ..errors import IntegrityError, StoreError
from .envelope import RecordedEvent
from .erasure import display_data
from .kinds import ConversationStarted, EventData, NewerSchemaError, decode_data

__all__ = [
    "HeadEvidence",
    "RawRow",
    "StreamRow",
    "damaged_field",
    "head_error",
    "head_problem",
    "missing_head_reason",
    "noncanonical_field",
    "parent_of_data",
    "parent_of_rows",
    "row_data",
    "row_to_event",
]

_decode = msgspec.json.decode
_encode = msgspec.json.encode


class RawRow(msgspec.Struct, frozen=True):
    """A stored row, undecoded, as ``verify`` checks it."""

    conversation_id: str
    version: int
    position: int
    event_id: str
    type: str
    schema_version: int
    data: bytes | str
    metadata: bytes | str
    recorded_at: str
    hash: str
    #: None: hashed as stored; 64 hex digits: content committed with this salt; "":
    #: content erased (see :mod:`chatledger.events.erasure`, docs/erasure.md).
    content_salt: str | None = None


def parent_of_rows(rows: Sequence[RawRow]) -> tuple[str | None, int | None]:
    """The parent stream and version named by a stored stream's first row, if forked."""
    if not rows:
        return None, None
    return parent_of_data(rows[0].type, rows[0].data)


def parent_of_data(type_name: object, data: object) -> tuple[str | None, int | None]:
    """The parent stream and version a stream's first event (its stored ``type`` and
    ``data``) names, or (None, None): not a fork, or not a readable conversation_started
    (verify names that event)."""
    if type_name != ConversationStarted.type_name or not isinstance(data, (bytes, str)):
        return None, None
    try:
        decoded = _decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        return None, None
    parent = decoded.get("parent") if isinstance(decoded, dict) else None
    if isinstance(parent, dict) and isinstance(parent.get("conversation_id"), str):
        version = parent.get("version")
        is_version = isinstance(version, int) and not isinstance(version, bool)
        return parent["conversation_id"], version if is_version else None
    return None, None


class StreamRow(msgspec.Struct, frozen=True):
    """A stream's head row as stored (the ``streams`` table), undecoded: a cache of what
    its events say, which reads check against them and ``verify`` checks in full. Only a
    damaged or edited database holds a value of another type than the annotation."""

    conversation_id: str
    version: int
    head_hash: str
    created_at: str
    updated_at: str
    parent_id: str | None
    parent_version: int | None


class HeadEvidence(NamedTuple):
    """What a stream's events say about its head row, read beside it.

    ``last_version``: the stream's highest version (None: it has no events);
    ``event_hash`` and ``event_recorded_at``: the event at the row's version (None: there
    is none); ``first_recorded_at``: version 1's time; ``first_parent``: the parent its
    first event names, or None when the caller did not read it.
    """

    last_version: object
    event_hash: object
    event_recorded_at: object
    first_recorded_at: object
    first_parent: tuple[str | None, int | None] | None = None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def head_problem(row: StreamRow, evidence: HeadEvidence) -> str | None:
    """What is wrong with a stream's head row, given what its events say; None if it
    agrees with them. Every column the library reads is compared: the version and hash
    (appends chain onto them), the times (listings sort by them) and the parent (trees
    and exports follow it)."""
    version = row.version
    if not _is_int(version):
        return f"its head row is damaged (its version is {version!r:.40})"
    last = evidence.last_version
    if last is None:
        return (
            f"its head row says version {version}, but the conversation has no events "
            "(the streams table was edited)"
        )
    if isinstance(last, int) and not isinstance(last, bool) and last != version:
        edited = "events deleted, or the row edited" if version > last else "the row edited"
        return (
            f"its head row says version {version}, but its events end at version {last} ({edited})"
        )
    if evidence.event_hash != row.head_hash:
        return (
            f"its head row's hash is not the hash of event {version} (the row was edited, "
            "or the event)"
        )
    if evidence.event_recorded_at != row.updated_at:
        return (
            f"its head row's updated_at {row.updated_at!r:.40} is not the time of event "
            f"{version} ({evidence.event_recorded_at!r:.40}): the row was edited"
        )
    if evidence.first_recorded_at != row.created_at:
        return (
            f"its head row's created_at {row.created_at!r:.40} is not the time of its first "
            f"event ({evidence.first_recorded_at!r:.40}): the row was edited"
        )
    if evidence.first_parent is not None and evidence.first_parent != (
        row.parent_id,
        row.parent_version,
    ):
        named = _parent_text(row.parent_id, row.parent_version)
        actual = _parent_text(*evidence.first_parent)
        return (
            f"its head row names {named} as its parent, but its first event names {actual} "
            "(the row was edited)"
        )
    return None


def _parent_text(parent_id: object, parent_version: object) -> str:
    if parent_id is None and parent_version is None:
        return "no parent"
    return f"{parent_id!s:.80} v{parent_version!s:.20}"


def head_error(location: str, conversation_id: object, reason: str) -> IntegrityError:
    """The error a read or an append raises for a head row its events contradict."""
    return IntegrityError(
        f"{location}: conversation {conversation_id!s:.200}: {reason}. Nothing was written. "
        "The events are the record and are intact: run `chatledger verify` to find every "
        "such row, then export the conversation from its events "
        "(chatledger.export_conversation(store, ID)) and import it into a new log, or "
        "restore the database from a backup"
    )


def missing_head_reason(last_version: object) -> str:
    """Why a stream whose events exist but whose head row does not is refused."""
    return (
        f"it has events (up to version {last_version!s:.20}) but no head row in the streams "
        "table (the row was deleted): it is missing from listings and appends to it are "
        "refused"
    )


_ENVELOPE_TYPES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("conversation_id", str),
    ("version", int),
    ("position", int),
    ("event_id", str),
    ("type", str),
    ("schema_version", int),
    ("data", (bytes, str)),
    ("metadata", (bytes, str)),
    ("recorded_at", str),
    ("hash", str),
)


_TEXT_TYPES = (bytes, str)


def damaged_field(row: RawRow) -> str | None:
    """What is wrong with a stored row's envelope (a column holding NULL, or a number
    where text belongs: only a damaged file has such rows), or None."""
    # The drivers return exactly these types for a sound row: check them in one go
    # (a fifth of reading a conversation went into the loop below).
    if (
        type(row.conversation_id) is str
        and type(row.version) is int
        and type(row.position) is int
        and type(row.event_id) is str
        and type(row.type) is str
        and type(row.schema_version) is int
        and type(row.data) in _TEXT_TYPES
        and type(row.metadata) in _TEXT_TYPES
        and type(row.recorded_at) is str
        and type(row.hash) is str
        and (row.content_salt is None or type(row.content_salt) is str)
    ):
        return None
    for name, kind in _ENVELOPE_TYPES:
        value = getattr(row, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"its {name} is damaged ({type(value).__name__} {value!r:.40})"
    if row.content_salt is not None and not isinstance(row.content_salt, str):
        return f"its content_salt is damaged ({type(row.content_salt).__name__})"
    return None


def noncanonical_field(row: RawRow, data: object, metadata: object) -> str | None:
    """What is wrong when a row's data or metadata (decoded as ``data`` and ``metadata``)
    is not stored exactly as chatledger writes it, or None.

    Every row chatledger writes (appended, imported or erased) stores the compact
    encoding of its decoded value, so the encoding of what a reader decodes must give the
    stored text back byte for byte. Anything else was written outside chatledger; above
    all a repeated key, which JSON readers resolve differently (chatledger takes the last,
    SQLite's ``json_extract`` and the SQL views the first), so the hash could cover one
    value while others read another (docs/erasure.md).
    """
    for name, stored, value in (("data", row.data, data), ("metadata", row.metadata, metadata)):
        if name == "metadata" and not stored:
            continue
        raw = stored.encode("utf-8") if isinstance(stored, str) else bytes(stored)
        if _encode(value) != raw:
            return (
                f"its {name} is not stored as chatledger writes it (a repeated key, or "
                "written outside chatledger), so other readers (the SQL views) may see other "
                "content than the hash covers"
            )
    return None


def row_data(row: RawRow) -> EventData:
    """A stored row's data decoded as its kind; an erased row's placeholders as readers
    see them (docs/erasure.md). Raises what :func:`decode_data` raises."""
    if row.content_salt == "":
        try:
            shown = display_data(row.type, _decode(row.data), in_place=True)
        except (RecursionError, UnicodeError) as exc:
            raise msgspec.DecodeError(f"{type(exc).__name__}: {exc}") from None
        return decode_data(row.type, row.schema_version, msgspec.json.encode(shown))
    return decode_data(row.type, row.schema_version, row.data)


def row_to_event(row: RawRow) -> RecordedEvent:
    damage = damaged_field(row)
    if damage is not None:
        raise IntegrityError(
            f"{row.conversation_id!r:.80} v{row.version!r:.20} (position {row.position!r:.20}) "
            f"is not a valid event: {damage}; run verify to find every damaged event"
        )
    try:
        data = row_data(row)
        metadata = _decode(row.metadata) if row.metadata else {}
        if not isinstance(metadata, dict):
            raise msgspec.ValidationError("its metadata is not a JSON object")
    except NewerSchemaError as exc:
        raise StoreError(f"{row.conversation_id} v{row.version}: {exc}") from None
    except (
        msgspec.DecodeError,
        msgspec.ValidationError,
        KeyError,
        RecursionError,
        UnicodeError,
    ) as exc:
        raise IntegrityError(
            f"{row.conversation_id} v{row.version} (position {row.position}) is not a valid "
            f"{row.type} event ({exc}); run verify to find every damaged event"
        ) from None
    return RecordedEvent(
        conversation_id=row.conversation_id,
        version=row.version,
        position=row.position,
        event_id=row.event_id,
        type=row.type,
        schema_version=row.schema_version,
        data=data,
        metadata=metadata,
        recorded_at=row.recorded_at,
        hash=row.hash,
        erased=row.content_salt == "",
    )
