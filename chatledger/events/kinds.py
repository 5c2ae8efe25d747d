"""The event kinds: what can happen in a conversation, as frozen msgspec Structs.

Each kind is stored with its ``type`` name and ``schema_version`` in the envelope, and its
fields as the event's JSON ``data``. Model content is kept in wire form (the camelCase JSON
the Gemini API speaks), exactly as it was sent or received, so nothing is lost.

Decoding checks types, not the shape of model content: a stored response is kept as the
server sent it, however odd. :func:`shape_problem` says whether an event has a shape that
chatledger itself never writes (an import refuses those: only a forged or hand-made file
holds them).

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
    "MAX_LEASE_SECONDS",
    "ConfigChanged",
    "ContentErased",
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
    "SessionCleared",
    "SessionItemPopped",
    "SessionItemsAdded",
    "TurnAbandoned",
    "TurnRewound",
    "UnknownEvent",
    "UserMessageAdded",
    "decode_data",
    "register_upcaster",
    "shape_problem",
]

WireContent = dict[str, Any]
"""A Content in wire form: ``{"role": ..., "parts": [...]}`` with camelCase keys."""


def _check_content(content: Any, where: str, *, history: bool = False) -> None:
    """Raise ValueError unless ``content`` is an object whose ``parts`` (when set) are an
    array; a history's contents must also have the role ``user`` or ``model``."""
    if not isinstance(content, dict):
        raise ValueError(f"{where} is not an object")
    if history and content.get("role") not in ("user", "model"):
        raise ValueError(
            f"{where} has the role {content.get('role')!r:.40}: a history holds user and "
            "model contents"
        )
    parts = content.get("parts")
    if parts is not None and not isinstance(parts, list):
        raise ValueError(f"{where}.parts is not an array")


def _check_history(history: Any, where: str) -> None:
    for index, content in enumerate(history):
        _check_content(content, f"{where}[{index}]", history=True)


def _check_response(response: Any, where: str) -> None:
    """Raise ValueError unless the content a reader takes from ``response`` (the first
    candidate's, when it has one) has the shape of a content. Other odd shapes are kept."""
    candidates = response.get("candidates") if isinstance(response, dict) else None
    if not candidates or not isinstance(candidates, list) or not isinstance(candidates[0], dict):
        return
    content = candidates[0].get("content")
    if isinstance(content, dict) and content:
        _check_content(content, f"{where}.candidates[0].content")


def _check_config(config: Any, where: str) -> None:
    """Raise ValueError unless ``config``'s tools (read for their declarations) are an
    array, and each tool's ``functionDeclarations`` too."""
    tools = config.get("tools") if isinstance(config, dict) else None
    if tools is None:
        return
    if not isinstance(tools, list):
        raise ValueError(f"{where}.tools is not an array")
    for index, tool in enumerate(tools):
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        if declarations is not None and not isinstance(declarations, list):
            raise ValueError(f"{where}.tools[{index}].functionDeclarations is not an array")


class EventData(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of every event kind. ``type_name`` is the stored ``type``."""

    type_name: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1


class ParentRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where a forked conversation branched off: the parent stream, version and hash."""

    conversation_id: str
    version: int
    hash: str

    def __post_init__(self) -> None:
        # Only a forged or hand-made log names no parent, or a version before the first.
        cid = self.conversation_id
        if not cid or len(cid) > 200 or not cid.isprintable():
            raise ValueError("parent.conversation_id is not a conversation id")
        if self.version < 1:
            raise ValueError("parent.version must be 1 or more")


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


#: The longest lease a turn may carry (one day): an import refuses a longer one, so that
#: no file can hold a conversation closed to every other writer for longer.
MAX_LEASE_SECONDS = 86_400.0


class UserMessageAdded(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """The caller sent a message: this opens turn ``turn``.

    ``lease_seconds`` is how long other writers must wait for this turn to close before
    they may take the conversation over (a writer that crashed never closes its turn); at
    most :data:`MAX_LEASE_SECONDS`.
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
    given, merged over the chat's config on read. ``transport`` names the transport;
    ``endpoint`` which kind of Google endpoint served the call ("gemini" or "vertex",
    empty for other servers; docs/events.md).
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
    endpoint: str = ""
    #: A continuation hop: the token this request resumes the previous call's answer
    #: with (URL-safe base64, as sent). Its contents are that call's
    #: (docs/chat-api.md#continuation).
    continuation_token: str | None = None


class ModelResponded(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """The model answered. ``response`` is the raw (for streams: merged) response.

    ``ends_turn`` is false when automatic function calling goes on after this response.
    ``continued``: the answer is not over (``finishReason: CONTINUATION``); the next
    model call resumes it with its token, and the turn's reply is the hops merged.
    """

    type_name: ClassVar[str] = "model_responded"
    turn: int
    response: dict[str, Any]
    latency_ms: float = 0.0
    streamed: bool = False
    chunks: int = 0
    ends_turn: bool = True
    continued: bool = False


class ModelCallFailed(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """The model call failed: an HTTP error, a dropped connection, an abandoned stream...

    ``partial`` holds whatever a stream delivered before it failed (at most the
    transport's ``max_response_bytes`` of JSON, the bound of a whole reply; a longer one
    is cut, see docs/events.md#kinds). A failed
    call that ends its turn leaves the histories unchanged. ``continued``: the stream
    broke after a continuation checkpoint; the next model call resumes it with the
    token, and ``partial`` is part of the turn's reply.
    """

    type_name: ClassVar[str] = "model_call_failed"
    turn: int
    error: ErrorInfo
    attempt: int = 1
    streamed: bool = False
    partial: dict[str, Any] | None = None
    latency_ms: float = 0.0
    ends_turn: bool = True
    continued: bool = False


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


class SessionItemsAdded(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """Items were added to another framework's session kept in this conversation (an
    openai-agents ``Session``, a LangChain message history; see
    :mod:`chatledger.integrations`). Each item is a JSON object, stored exactly as given."""

    type_name: ClassVar[str] = "session_items_added"
    items: list[dict[str, Any]]


class SessionItemPopped(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """The session's last item was taken off (``pop_item``); nothing is deleted. The item
    is the one at ``item_index`` of the ``session_items_added`` event at ``item_version``
    of this conversation, or of ``item_conversation_id`` when it came from an ancestor (a
    fork starts with its parent's items)."""

    type_name: ClassVar[str] = "session_item_popped"
    item_version: int
    item_index: int
    item_conversation_id: str | None = None


class SessionCleared(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """Every item of the session was taken off (``clear_session``, ``clear()``); nothing is
    deleted. ``count`` is how many items there were."""

    type_name: ClassVar[str] = "session_cleared"
    count: int = 0


class ContentErased(EventData, frozen=True, kw_only=True, omit_defaults=True):
    """The content of this conversation's events up to ``up_to_version`` was erased
    (docs/erasure.md): ``count`` events now hold placeholders where their content was,
    their hashes unchanged. Who erased is the event's actor, when its ``recorded_at``,
    why ``reason``; ``subject`` or ``older_than`` say which request selected it.
    ``not_erasable`` lists the versions written before erasure existed, whose content
    could not be erased in place."""

    type_name: ClassVar[str] = "content_erased"
    reason: str
    up_to_version: int
    count: int = 0
    subject: str | None = None
    older_than: str | None = None
    not_erasable: list[int] = []


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
        SessionItemsAdded,
        SessionItemPopped,
        SessionCleared,
        ContentErased,
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

    Raises msgspec.ValidationError / DecodeError when the data does not fit the kind
    (DecodeError too for data nested deeper than the stack allows, or text that is not
    valid Unicode).
    """
    try:
        return _decode_data(type_name, schema_version, data)
    except (RecursionError, UnicodeError) as exc:
        raise msgspec.DecodeError(f"{type(exc).__name__}: {exc}") from None


def _decode_data(type_name: str, schema_version: int, data: bytes | str) -> EventData:
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
        upcaster = _UPCASTERS.get((type_name, version))
        if upcaster is None:
            raise msgspec.ValidationError(
                f"{type_name} events have no schema_version {schema_version}"
            )
        value = upcaster(value)
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


def shape_problem(data: EventData) -> str | None:
    """Why ``data`` has a shape chatledger never writes, or None.

    The projections rely on little: contents are objects whose ``parts`` are an array, a
    history's contents have the role ``user`` or ``model``, a config's ``tools`` (and
    their ``functionDeclarations``) are arrays. Every event chatledger writes passes.
    """
    try:
        if isinstance(data, (ConversationStarted, HistoryReplaced)):
            _check_history(data.history, "history")
        if isinstance(data, (ConversationStarted, ModelCallStarted, ConfigChanged)):
            _check_config(data.config, "config")
        if isinstance(data, UserMessageAdded):
            _check_content(data.content, "content")
        elif isinstance(data, ModelResponded):
            _check_response(data.response, "response")
        elif isinstance(data, ModelCallFailed):
            _check_response(data.partial, "partial")
    except ValueError as exc:
        return str(exc)
    return None
