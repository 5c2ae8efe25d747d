"""The event envelope (the same for every store) and its sha256 hash chain.

The hash of an event is ``sha256`` over the canonical encoding of this JSON object::

    {"conversation_id", "version", "event_id", "type", "schema_version",
     "data", "metadata", "recorded_at", "prev_hash"}

where ``prev_hash`` is the hash of the previous event in the same stream ("" for the
first). The canonical encoding is exactly Python's::

    json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
               allow_nan=False).encode("ascii")

so a third party can verify an export with the standard library alone (see the README).
``position`` is not hashed: it is the store's order, and differs after an import.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import uuid
from typing import Any

import msgspec

from ..errors import InvalidInputError
from .kinds import EventData, data_to_builtins, event_schema_version, event_type

__all__ = [
    "NewEvent",
    "RecordedEvent",
    "canonical_json",
    "event_hash",
    "new_event_id",
    "utc_now",
]

MAX_CONVERSATION_ID = 200


def new_event_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds and a ``Z``."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> bytes:
    """The canonical encoding hashed by the chain (see the module docstring)."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        ).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"event data is not valid JSON: {exc}") from None


def event_hash(
    *,
    conversation_id: str,
    version: int,
    event_id: str,
    type: str,
    schema_version: int,
    data: Any,
    metadata: dict[str, Any],
    recorded_at: str,
    prev_hash: str,
) -> str:
    envelope = {
        "conversation_id": conversation_id,
        "version": version,
        "event_id": event_id,
        "type": type,
        "schema_version": schema_version,
        "data": data,
        "metadata": metadata,
        "recorded_at": recorded_at,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(envelope)).hexdigest()


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to append. ``event_id`` may be supplied by the caller: re-appending the
    same ids is a no-op that returns the original positions (idempotent retry)."""

    data: EventData
    event_id: str = msgspec.field(default_factory=new_event_id)
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def type(self) -> str:
        return event_type(self.data)

    @property
    def schema_version(self) -> int:
        return event_schema_version(self.data)


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored: the envelope with its decoded data."""

    conversation_id: str
    version: int
    position: int
    event_id: str
    type: str
    schema_version: int
    data: EventData
    metadata: dict[str, Any]
    recorded_at: str
    hash: str

    @property
    def recorded_at_datetime(self) -> _dt.datetime:
        return _dt.datetime.fromisoformat(self.recorded_at.replace("Z", "+00:00"))

    @property
    def actor(self) -> str | None:
        actor = self.metadata.get("actor")
        return actor if isinstance(actor, str) else None

    def to_export(self) -> dict[str, Any]:
        """The envelope as JSON-ready data (the export line format)."""
        return {
            "conversation_id": self.conversation_id,
            "version": self.version,
            "position": self.position,
            "event_id": self.event_id,
            "type": self.type,
            "schema_version": self.schema_version,
            "data": data_to_builtins(self.data),
            "metadata": self.metadata,
            "recorded_at": self.recorded_at,
            "hash": self.hash,
        }


def validate_conversation_id(conversation_id: object) -> str:
    if not isinstance(conversation_id, str) or not conversation_id:
        raise InvalidInputError(
            f"conversation_id must be a non-empty string, got {type(conversation_id).__name__}"
        )
    if len(conversation_id) > MAX_CONVERSATION_ID or not conversation_id.isprintable():
        raise InvalidInputError(
            "conversation_id must be at most 200 printable characters; "
            f"got {conversation_id[:40]!r}"
        )
    return conversation_id


def validate_event_id(event_id: object) -> str:
    if not isinstance(event_id, str) or not event_id or len(event_id) > 100:
        raise InvalidInputError("event_id must be a non-empty string of at most 100 characters")
    if not event_id.isprintable():
        raise InvalidInputError("event_id must be printable")
    return event_id
