"""A stored row as the backends return it, and how it becomes a :class:`RecordedEvent`.

Every backend reads its tables into :class:`RawRow` values, undecoded; reads decode them
with :func:`row_to_event`, and ``verify`` checks them without trusting any column. A row
only a damaged database can hold (NULL, or a number where text belongs) is named by
:func:`damaged_field` rather than crashing a read.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ..errors import IntegrityError, StoreError
from .envelope import RecordedEvent
from .kinds import ConversationStarted, NewerSchemaError, decode_data

__all__ = ["RawRow", "damaged_field", "parent_of_rows", "row_to_event"]

_decode = msgspec.json.decode


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


def parent_of_rows(rows: Sequence[RawRow]) -> tuple[str | None, int | None]:
    """The parent stream and version named by a stored stream's first row, if forked."""
    if not rows or rows[0].type != ConversationStarted.type_name:
        return None, None
    try:
        data = _decode(rows[0].data)
    except msgspec.DecodeError:
        return None, None
    parent = data.get("parent") if isinstance(data, dict) else None
    if isinstance(parent, dict) and isinstance(parent.get("conversation_id"), str):
        version = parent.get("version")
        return parent["conversation_id"], version if isinstance(version, int) else None
    return None, None


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
    ):
        return None
    for name, kind in _ENVELOPE_TYPES:
        value = getattr(row, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"its {name} is damaged ({type(value).__name__} {value!r:.40})"
    return None


def row_to_event(row: RawRow) -> RecordedEvent:
    damage = damaged_field(row)
    if damage is not None:
        raise IntegrityError(
            f"{row.conversation_id!r:.80} v{row.version!r:.20} (position {row.position!r:.20}) "
            f"is not a valid event: {damage}; run verify to find every damaged event"
        )
    try:
        data = decode_data(row.type, row.schema_version, row.data)
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
    )
