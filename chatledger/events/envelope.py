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

What the log stores is plain JSON that every encoder involved agrees on (see
:func:`check_json`): objects with string keys, arrays, strings that are valid Unicode (no
lone surrogates, which UTF-8 cannot carry although ``ensure_ascii`` would hash them), finite
numbers, and at most :data:`MAX_NESTING` levels of arrays and objects, well within what
msgspec, the ``json`` module and pydantic can encode without exhausting the stack.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
import uuid
from typing import Any

import msgspec

from ..errors import InvalidInputError
from .kinds import EventData, data_to_builtins, event_schema_version, event_type
from .times import parse_utc_time

__all__ = [
    "MAX_NESTING",
    "NewEvent",
    "RecordedEvent",
    "canonical_json",
    "check_json",
    "event_hash",
    "new_event_id",
    "safe_text",
    "spliced_event_hash",
    "utc_now",
]

MAX_CONVERSATION_ID = 200
#: The deepest nesting of arrays and objects accepted in a message, a config, a model
#: response or an imported event (Google's API front ends parse requests with protobuf's
#: default recursion limit of 100; pydantic stops serializing at 255).
MAX_NESTING = 128
_SURROGATE = re.compile("[\ud800-\udfff]")
#: json.dumps with these arguments, without building an encoder per call.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)
#: How json.dumps(..., ensure_ascii=True) writes a string (the C function when available).
_ascii_string = json.encoder.encode_basestring_ascii


def new_event_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds and a ``Z``."""
    # isoformat is C and twice as fast as strftime; "+00:00" becomes "Z".
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"


def canonical_json(value: Any) -> bytes:
    """The canonical encoding hashed by the chain (see the module docstring)."""
    try:
        return _CANONICAL.encode(value).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"event data is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInputError(
            f"event data is nested more than {MAX_NESTING} levels deep"
        ) from None


def safe_text(text: str) -> str:
    """``text`` with any lone surrogate written as its ``\\udXXX`` escape, so that a
    message taken from an exception or a function can always be recorded."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_json(value: Any, what: str, *, max_nesting: int = MAX_NESTING) -> None:
    """Raise InvalidInputError naming ``what`` unless ``value`` is JSON the log can store.

    That is: dicts with str keys, lists (tuples too), str without lone surrogates, bool,
    int, finite float and None, nested at most ``max_nesting`` levels. Iterative, so a
    value nested a million levels deep is refused, not a RecursionError.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            found = None if item.isascii() else _SURROGATE.search(item)
            if found is not None:
                raise InvalidInputError(
                    f"{what} holds a lone surrogate ({found.group()!r}), which is not valid "
                    "Unicode text; pass binary data as bytes (inline_data) instead"
                )
        elif item is None or isinstance(item, (bool, int)):
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInputError(f"{what} holds {item!r}, which JSON cannot carry")
        elif isinstance(item, (dict, list, tuple)):
            if depth >= max_nesting:
                raise InvalidInputError(
                    f"{what} is nested more than {max_nesting} levels deep; flatten it"
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InvalidInputError(
                            f"{what} has a {type(key).__name__} key {key!r:.40}; JSON keys are strings"
                        )
                    stack.append((key, depth + 1))
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        else:
            raise InvalidInputError(
                f"{what} holds a {type(item).__name__}, which is not JSON "
                "(use str, int, float, bool, None, lists and dicts)"
            )


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


def spliced_event_hash(
    *,
    conversation_id: str,
    version: int,
    event_id: str,
    type: str,
    schema_version: int,
    canonical_data: bytes,
    canonical_metadata: bytes,
    recorded_at: str,
    prev_hash: str,
) -> str:
    """:func:`event_hash` from the canonical encodings of ``data`` and ``metadata``,
    computed once by the caller: the object's keys in sorted order, each value encoded
    as :func:`canonical_json` would (a test checks the two agree byte for byte)."""

    def text(value: str) -> bytes:
        return _ascii_string(value).encode("ascii")

    encoded = b"".join(
        (
            b'{"conversation_id":',
            text(conversation_id),
            b',"data":',
            canonical_data,
            b',"event_id":',
            text(event_id),
            b',"metadata":',
            canonical_metadata,
            b',"prev_hash":',
            text(prev_hash),
            b',"recorded_at":',
            text(recorded_at),
            b',"schema_version":',
            b"%d" % schema_version,
            b',"type":',
            text(type),
            b',"version":',
            b"%d" % version,
            b"}",
        )
    )
    return hashlib.sha256(encoded).hexdigest()


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
    #: Whether its content was erased (placeholders stand in for it: docs/erasure.md).
    erased: bool = False

    @property
    def recorded_at_datetime(self) -> _dt.datetime:
        return parse_utc_time(self.recorded_at)

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
            **({"erased": True} if self.erased else {}),
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
