"""The event kinds: what can happen in a conversation, as frozen msgspec Structs.

Each kind is stored with its ``type`` name and ``schema_version`` in the envelope, and its
fields as the event's JSON ``data``. Model content is kept in wire form (the camelCase JSON
the Gemini API speaks), exactly as it was sent or received, so nothing is lost.

Schema evolution: every field added after a kind's first release has a default, so old
events decode unchanged. A change that cannot be expressed that way bumps the kind's
``schema_version`` and registers an upcaster (old data -> new data), applied on read;
stored events are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

__all__ = [
    "KINDS",
    "ConfigChanged",
    "ConversationStarted",
    "ErrorInfo",
    "EventData",
    "FunctionCalled",
    "FunctionResponded",
    "HistoryReplaced",
    "ModelCallFailed",
    "ModelCallStarted",
    "ModelResponded",
    "ParentRef",
    "TurnAbandoned",
    "TurnRewound",
    "UnknownEvent",
    "UserMessageAdded",
    "decode_data",
    "register_upcaster",
]

WireContent = dict[str, Any]
"""A Content in wire form: ``{"role": ..., "parts": [...]}`` with camelCase keys."""


class EventData(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of every event kind. ``type_name`` is the stored ``type``."""

    type_name: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1


class ParentRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where a forked conversation branched off: the parent stream, version and hash."""

    conversation_id: str
    version: int
    hash: str


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A failure as recorded: the error class, HTTP code and status when there was one."""

    kind: str
    message: str
    code: int | None = None
    status: str | None = None


class ConversationStarted(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """A conversation (or a fork of one) began."""

    type_name: ClassVar[str] = "conversation_started"
    model: str
    config: dict[str, Any] | None = None
    history: list[WireContent] = []
    parent: ParentRef | None = None


class UserMessageAdded(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """The caller sent a message: this opens turn ``turn``.

    ``lease_seconds`` is how long other writers must wait for this turn to close before
    they may take the conversation over (a writer that crashed never closes its turn).
    """

    type_name: ClassVar[str] = "user_message_added"
    turn: int
    content: WireContent
    lease_seconds: float = 600.0


class ModelCallStarted(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """A request is about to go to the model.

    The request's contents are the context projection at this point plus the turn's
    contents so far, so only their count and digest are stored (keeping the log linear
    in the conversation's length); ``config`` is the per-message config when one was
    given, merged over the chat's config on read.
    """

    type_name: ClassVar[str] = "model_call_started"
    turn: int
    model: str
    attempt: int = 1
    streamed: bool = False
    config: dict[str, Any] | None = None
    contents_count: int = 0
    contents_sha256: str = ""
    transport: str = ""


class ModelResponded(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """The model answered. ``response`` is the raw (for streams: merged) response.

    ``ends_turn`` is false when automatic function calling goes on after this response.
    """

    type_name: ClassVar[str] = "model_responded"
    turn: int
    response: dict[str, Any]
    latency_ms: float = 0.0
    streamed: bool = False
    chunks: int = 0
    ends_turn: bool = True


class ModelCallFailed(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """The model call failed: an HTTP error, a dropped connection, an abandoned stream...

    ``partial`` holds whatever a stream delivered before it failed. A failed call that
    ends its turn leaves the histories unchanged.
    """

    type_name: ClassVar[str] = "model_call_failed"
    turn: int
    error: ErrorInfo
    attempt: int = 1
    streamed: bool = False
    partial: dict[str, Any] | None = None
    latency_ms: float = 0.0
    ends_turn: bool = True


class FunctionCalled(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """Automatic function calling is about to run ``name(**args)``."""

    type_name: ClassVar[str] = "function_called"
    turn: int
    name: str
    args: dict[str, Any] = {}
    call_id: str | None = None
    index: int = 0


class FunctionResponded(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """A function call finished; ``response`` is the function_response part's response."""

    type_name: ClassVar[str] = "function_responded"
    turn: int
    name: str
    response: dict[str, Any]
    call_id: str | None = None
    index: int = 0
    error: str | None = None
    duration_ms: float = 0.0


class TurnRewound(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """The last completed turn was taken back (``rewind()``); nothing is deleted."""

    type_name: ClassVar[str] = "turn_rewound"
    turn: int


class TurnAbandoned(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """An open turn was closed without an answer (its writer crashed or timed out)."""

    type_name: ClassVar[str] = "turn_abandoned"
    turn: int
    reason: str


class ConfigChanged(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """The chat's model or default config changed from here on."""

    type_name: ClassVar[str] = "config_changed"
    config: dict[str, Any] | None = None
    model: str | None = None


class HistoryReplaced(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """The whole history was set (the legacy ``ChatSession.history`` setter)."""

    type_name: ClassVar[str] = "history_replaced"
    history: list[WireContent] = []


class UnknownEvent(EventData, frozen=True, kw_only=True):
    """An event of a type this version of chatledger does not know (written by a newer one).

    Kept, verified and exported like any other; projections ignore it.
    """

    type_name: ClassVar[str] = ""
    type: str
    data: Any = None
    version: int = 1


KINDS: dict[str, type[EventData]] = {
    kind.type_name: kind
    for kind in (
        ConversationStarted,
        UserMessageAdded,
        ModelCallStarted,
        ModelResponded,
        ModelCallFailed,
        FunctionCalled,
        FunctionResponded,
        TurnRewound,
        TurnAbandoned,
        ConfigChanged,
        HistoryReplaced,
    )
}

_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(kind) for name, kind in KINDS.items()
}
Upcaster = Callable[[Any], Any]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(type_name: str, from_version: int, upcaster: Upcaster) -> None:
    """Register ``upcaster`` turning ``type_name`` data at ``from_version`` into the next."""
    _UPCASTERS[(type_name, from_version)] = upcaster


def decode_data(type_name: str, schema_version: int, data: bytes | str) -> EventData:
    """Decode stored JSON ``data`` of an event into its kind, upcasting old versions.

    Raises msgspec.ValidationError / DecodeError when the data does not fit the kind.
    """
    kind = KINDS.get(type_name)
    if kind is None:
        return UnknownEvent(type=type_name, data=msgspec.json.decode(data), version=schema_version)
    if schema_version > kind.schema_version:
        raise NewerSchemaError(
            f"{type_name} events at schema_version {schema_version} were written by a newer "
            f"chatledger (this one reads up to {kind.schema_version}); upgrade chatledger"
        )
    if schema_version == kind.schema_version:
        return _DECODERS[type_name].decode(data)  # type: ignore[no-any-return]
    value = msgspec.json.decode(data)
    version = schema_version
    while version < kind.schema_version:
        value = _UPCASTERS[(type_name, version)](value)
        version += 1
    return msgspec.convert(value, kind)


class NewerSchemaError(ValueError):
    """Stored data of a known kind at a schema version this library does not know yet."""


def event_type(data: EventData) -> str:
    """The stored ``type`` of ``data`` (an UnknownEvent keeps the type it was read with)."""
    return data.type if isinstance(data, UnknownEvent) else data.type_name


def event_schema_version(data: EventData) -> int:
    return data.version if isinstance(data, UnknownEvent) else data.schema_version


def data_to_builtins(data: EventData) -> Any:
    """The JSON-ready value stored (and hashed) for ``data``."""
    if isinstance(data, UnknownEvent):
        return data.data
    return msgspec.to_builtins(data)
