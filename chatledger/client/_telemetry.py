"""OpenTelemetry spans for the model calls and function calls of a chat
(docs/integrations.md#opentelemetry).

The conversation calls this module where it records events: every append of a turn's
events goes through :meth:`Telemetry.recorded`, which opens a span when a call starts
(``model_call_started``, ``function_called``) and ends it when its outcome is recorded
(``model_responded``, ``model_call_failed``, ``function_responded``). So each span
carries the ids, versions and positions of the very events it stands for, and every
model call the log holds (each retry attempt, each step of automatic function calling)
is a span, and none that the log does not hold.

When the ``opentelemetry`` package is not installed, :func:`make_telemetry` returns
:data:`NOOP`, whose methods do nothing, and nothing of OpenTelemetry is imported. When
it is installed, it is imported at the first turn (not by ``import chatledger`` or
``Client()``), and spans go to the global tracer provider (a no-op one until an SDK is
configured) or to the ``tracer_provider`` given to the client.

Attribute names follow the OpenTelemetry semantic conventions for generative AI
(``gen_ai.*``, "chat {model}" and "execute_tool {name}" spans). Message contents are
recorded only when the user opts in (``capture_message_content=True``, or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``). Telemetry never changes what a
chat does: an error inside it is logged once and swallowed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from ..errors import mask_echoed_secrets
from ..events.kinds import (
    FunctionCalled,
    FunctionResponded,
    ModelCallFailed,
    ModelCallStarted,
    ModelResponded,
    UserMessageAdded,
)

if TYPE_CHECKING:
    from ..events.envelope import NewEvent
    from .transports.base import ModelRequest, Transport

__all__ = [
    "CAPTURE_ENV",
    "NOOP",
    "TRACER_NAME",
    "Telemetry",
    "capture_from_env",
    "make_telemetry",
    "otel_installed",
]

logger = logging.getLogger("chatledger")

#: The environment variable of the conventions that opts in to message contents.
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: The instrumentation scope name of chatledger's spans.
TRACER_NAME = "chatledger"

_ON = frozenset({"true", "1", "yes", "on", "span_only", "span_and_event"})
_OFF = frozenset({"", "false", "0", "no", "off", "no_content", "event_only"})

#: gen_ai.provider.name (and the deprecated gen_ai.system) of each transport name.
_PROVIDERS = {
    "gemini": ("gcp.gemini", "gemini"),
    "vertex": ("gcp.vertex_ai", "vertex_ai"),
    "vertex_ai": ("gcp.vertex_ai", "vertex_ai"),
    "openai": ("openai", "openai"),
    "local": ("llama_cpp", "llama_cpp"),
}
#: Transports that run the model in this process: their spans are INTERNAL, not CLIENT.
_IN_PROCESS = frozenset({"local", "scripted", "replay"})

#: Request parameters of the config (wire names) -> gen_ai.request.* attributes.
_REQUEST_PARAMETERS = {
    "temperature": ("gen_ai.request.temperature", float),
    "topP": ("gen_ai.request.top_p", float),
    "topK": ("gen_ai.request.top_k", float),
    "maxOutputTokens": ("gen_ai.request.max_tokens", int),
    "presencePenalty": ("gen_ai.request.presence_penalty", float),
    "frequencyPenalty": ("gen_ai.request.frequency_penalty", float),
    "seed": ("gen_ai.request.seed", int),
}

#: Longest inline data (base64 characters) kept in a captured message; longer blobs are
#: described (type, MIME type, size) without their bytes.
MAX_CAPTURED_BLOB = 16 * 1024


def otel_installed() -> bool:
    """Whether the ``opentelemetry`` package can be imported (found without importing)."""
    global _INSTALLED
    if _INSTALLED is None:
        try:
            _INSTALLED = importlib.util.find_spec("opentelemetry") is not None
        except (ImportError, ValueError):
            _INSTALLED = False
    return _INSTALLED


_INSTALLED: bool | None = None


def capture_from_env() -> bool:
    """Whether ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for contents on
    spans: ``true`` (or ``1``, ``span_only``, ``span_and_event``). ``false``,
    ``no_content`` and ``event_only`` (chatledger writes no log events) do not; an
    unknown value is warned about and taken as no."""
    value = os.environ.get(CAPTURE_ENV, "").strip().lower()
    if value in _ON:
        return True
    if value not in _OFF:
        logger.warning(
            "%s=%r is not one of true, false, span_only, span_and_event, event_only, "
            "no_content: message contents are not recorded on spans",
            CAPTURE_ENV,
            value[:40],
        )
    return False


class Turn(Protocol):
    """What telemetry reads of a turn (chatledger.client._conversation.Turn)."""

    number: int
    streamed: bool
    config: dict[str, Any] | None
    request: ModelRequest | None
    functions: dict[str, Callable[..., Any]]
    trace: Any
    function_errors: dict[int, str]
    first_chunk_at: float | None


class _Settings(Protocol):
    @property
    def transport_for(self) -> Callable[[str], Transport]: ...


class Conversation(Protocol):
    """What telemetry reads of a conversation (chatledger.client._conversation)."""

    @property
    def id(self) -> str: ...

    @property
    def settings(self) -> _Settings: ...


class Telemetry:
    """What the conversation calls where it records events. This base class is the
    no-op used when OpenTelemetry is not installed: every method returns at once."""

    #: Whether spans are made at all.
    enabled = False
    #: Whether message contents go on the spans.
    capture_content = False

    def recorded(
        self,
        conversation: Conversation,
        turn: Turn,
        events: Sequence[NewEvent],
        first_version: int,
        positions: Sequence[int],
    ) -> None:
        """``events`` of ``turn`` were appended at ``first_version`` onwards."""

    def turn_ended(self, turn: Turn) -> None:
        """``turn`` is over (returned, raised, or its stream was closed)."""

    def running_call(self, turn: Turn) -> contextlib.AbstractContextManager[None]:
        """A context in which the current model call of ``turn`` is sent (not for streams,
        whose chunks are yielded to the caller): its ``chat`` span is current there."""
        return _NULL

    def running_function(self, turn: Turn, index: int) -> contextlib.AbstractContextManager[None]:
        """A context in which the function call ``index`` of ``turn`` runs: its
        ``execute_tool`` span is the current span there, so that spans the function makes
        are its children."""
        return _NULL


_NULL: contextlib.AbstractContextManager[None] = contextlib.nullcontext()

#: The telemetry of a client when OpenTelemetry is not installed.
NOOP = Telemetry()


def make_telemetry(tracer_provider: Any = None, capture_content: bool | None = None) -> Telemetry:
    """The telemetry of a client: :data:`NOOP` when OpenTelemetry is not installed and no
    ``tracer_provider`` is given, else spans to ``tracer_provider`` (default: the global
    one, as it is when the first turn begins). ``capture_content`` None reads
    :data:`CAPTURE_ENV`."""
    if tracer_provider is None and not otel_installed():
        return NOOP
    capture = capture_from_env() if capture_content is None else bool(capture_content)
    return OpenTelemetry(tracer_provider, capture)


class _TurnTrace:
    """The spans of one turn: the turn's own span, the open model call, open functions."""

    __slots__ = (
        "call",
        "call_events",
        "call_started_at",
        "error_type",
        "events",
        "functions",
        "span",
    )

    def __init__(self, span: Any) -> None:
        self.span = span
        self.events: list[tuple[str, int, int, str]] = []
        self.call: Any = None
        self.call_started_at = 0.0
        self.call_events: list[tuple[str, int, int, str]] = []
        self.functions: dict[int, tuple[Any, list[tuple[str, int, int, str]]]] = {}
        self.error_type: str | None = None


class OpenTelemetry(Telemetry):
    """Spans through the OpenTelemetry API (imported at the first turn)."""

    enabled = True

    def __init__(self, tracer_provider: Any, capture_content: bool) -> None:
        self.capture_content = capture_content
        self._provider = tracer_provider
        self._tracer: Any = None
        self._api: Any = None
        self._servers: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        self._failed = False

    # ------------------------------------------------------------------ plumbing

    def _load(self) -> Any:
        if self._api is None:
            from opentelemetry import context, trace

            from .._version import __version__

            provider = self._provider
            self._tracer = (
                provider.get_tracer(TRACER_NAME, __version__)
                if provider is not None
                else trace.get_tracer(TRACER_NAME, __version__)
            )
            self._api = (trace, context)
        return self._api

    def _swallow(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            logger.warning(
                "OpenTelemetry spans of chatledger failed (%s: %s); the chat goes on",
                type(exc).__name__,
                exc,
            )

    # ------------------------------------------------------------------ hooks

    def recorded(
        self,
        conversation: Conversation,
        turn: Turn,
        events: Sequence[NewEvent],
        first_version: int,
        positions: Sequence[int],
    ) -> None:
        try:
            for offset, event in enumerate(events):
                ref = (event.type, first_version + offset, positions[offset], event.event_id)
                self._on_event(conversation, turn, event.data, ref)
        except Exception as exc:  # telemetry never changes what a chat does
            self._swallow(exc)

    def turn_ended(self, turn: Turn) -> None:
        trace_ = turn.trace
        if trace_ is None:
            return
        turn.trace = None
        try:
            trace, _ = self._load()
            now = time.time_ns()
            # Spans whose outcome the log did not record (the append failed, or something
            # other than a model or function error ended the turn).
            for index in sorted(trace_.functions):
                trace_.error_type = trace_.error_type or "_OTHER"
                span, refs = trace_.functions.pop(index)
                self._fail(
                    span,
                    "_OTHER",
                    "the turn ended before the function's response was recorded",
                    refs,
                    now,
                )
            if trace_.call is not None:
                self._fail(
                    trace_.call,
                    "_OTHER",
                    "the turn ended before the model call's outcome was recorded",
                    trace_.call_events,
                    now,
                )
                trace_.call = None
                trace_.error_type = trace_.error_type or "_OTHER"
            span = trace_.span
            if span.is_recording():
                _set_refs(span, trace_.events)
                if trace_.error_type is not None:
                    span.set_attribute("error.type", trace_.error_type)
                    span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end(end_time=now)
        except Exception as exc:
            self._swallow(exc)

    @contextlib.contextmanager
    def _activate(self, span: Any) -> Iterator[None]:
        token = None
        try:
            trace, context = self._load()
            token = context.attach(trace.set_span_in_context(span))
        except Exception as exc:
            self._swallow(exc)
        try:
            yield
        finally:
            if token is not None:
                try:
                    context.detach(token)
                except Exception as exc:
                    self._swallow(exc)

    def running_call(self, turn: Turn) -> contextlib.AbstractContextManager[None]:
        trace_ = turn.trace
        if trace_ is None or trace_.call is None:
            return _NULL
        return self._activate(trace_.call)

    def running_function(self, turn: Turn, index: int) -> contextlib.AbstractContextManager[None]:
        trace_ = turn.trace
        if trace_ is None or index not in trace_.functions:
            return _NULL
        return self._activate(trace_.functions[index][0])

    # ------------------------------------------------------------------ events

    def _on_event(
        self,
        conversation: Conversation,
        turn: Turn,
        data: Any,
        ref: tuple[str, int, int, str],
    ) -> None:
        if isinstance(data, UserMessageAdded):
            self._turn_started(conversation, turn, ref)
            return
        trace_ = turn.trace
        if trace_ is None:
            return
        trace_.events.append(ref)
        if isinstance(data, ModelCallStarted):
            self._call_started(conversation, turn, trace_, data, ref)
        elif isinstance(data, ModelResponded):
            self._call_responded(turn, trace_, data, ref)
        elif isinstance(data, ModelCallFailed):
            self._call_failed(turn, trace_, data, ref)
        elif isinstance(data, FunctionCalled):
            self._function_called(conversation, turn, trace_, data, ref)
        elif isinstance(data, FunctionResponded):
            self._function_responded(turn, trace_, data, ref)

    def _turn_started(
        self, conversation: Conversation, turn: Turn, ref: tuple[str, int, int, str]
    ) -> None:
        trace, _ = self._load()
        # The caller's current span is the parent (for the async chat, the worker thread
        # that records runs in a copy of the caller's context).
        span = self._tracer.start_span(
            "chatledger.turn",
            kind=trace.SpanKind.INTERNAL,
            attributes={
                "gen_ai.conversation.id": conversation.id,
                "chatledger.turn": turn.number,
                "chatledger.streamed": turn.streamed,
            },
        )
        if not span.is_recording() and (
            span.get_span_context() == trace.get_current_span().get_span_context()
        ):
            # No span was made: OpenTelemetry's API without an SDK (or a no-op tracer
            # provider) hands back the current span, or a non-recording one with its
            # context. Nothing of this turn could be exported or change any context, so
            # none of its spans is made (docs/performance.md#load-client).
            return
        turn.trace = _TurnTrace(span)
        turn.trace.events.append(ref)

    def _parent(self, trace_: _TurnTrace) -> Any:
        trace, _ = self._load()
        return trace.set_span_in_context(trace_.span)

    def _server(self, conversation: Conversation, model: str) -> dict[str, Any]:
        transport = conversation.settings.transport_for(model)
        try:
            cached = self._servers.get(transport)
        except TypeError:  # not weak-referenceable
            cached = None
        if cached is not None:
            return cached
        server: dict[str, Any] = {}
        endpoint = getattr(transport, "endpoint", None)
        url = getattr(endpoint, "url", None)
        if isinstance(url, str):
            parts = urlsplit(url)  # the URL without credentials (see transports/_credentials.py)
            if parts.hostname:
                server["server.address"] = parts.hostname
                port = parts.port or (443 if parts.scheme == "https" else 80)
                server["server.port"] = port
        with contextlib.suppress(TypeError):
            self._servers[transport] = server
        return server

    def _call_started(
        self,
        conversation: Conversation,
        turn: Turn,
        trace_: _TurnTrace,
        data: ModelCallStarted,
        ref: tuple[str, int, int, str],
    ) -> None:
        trace, _ = self._load()
        provider, system = _PROVIDERS.get(data.transport, (data.transport, data.transport))
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": data.model,
            **self._server(conversation, data.model),
        }
        span = self._tracer.start_span(
            f"chat {data.model}",
            context=self._parent(trace_),
            kind=trace.SpanKind.INTERNAL
            if data.transport in _IN_PROCESS
            else trace.SpanKind.CLIENT,
            attributes=attributes,
        )
        trace_.call = span
        trace_.call_started_at = time.perf_counter()
        trace_.call_events = [ref]
        if not span.is_recording():
            return
        more: dict[str, Any] = {
            "gen_ai.system": system,
            "gen_ai.conversation.id": conversation.id,
            "chatledger.turn": turn.number,
            "chatledger.attempt": data.attempt,
            "chatledger.transport": data.transport,
        }
        if data.streamed:
            more["gen_ai.request.stream"] = True
        _request_parameters(more, turn.config or {})
        span.set_attributes(more)

    def _end_call(self, turn: Turn, trace_: _TurnTrace, ref: tuple[str, int, int, str]) -> Any:
        span = trace_.call
        trace_.call = None
        if span is None:
            return None
        trace_.call_events.append(ref)
        if span.is_recording():
            _set_refs(span, trace_.call_events)
            if self.capture_content and turn.request is not None:
                config = turn.request.config
                contents = {"gen_ai.input.messages": _dumps(input_messages(turn.request.contents))}
                instructions = system_instructions(config.get("systemInstruction"))
                if instructions:
                    contents["gen_ai.system_instructions"] = _dumps(instructions)
                span.set_attributes(contents)
        return span

    def _call_responded(
        self,
        turn: Turn,
        trace_: _TurnTrace,
        data: ModelResponded,
        ref: tuple[str, int, int, str],
    ) -> None:
        started_at = trace_.call_started_at
        span = self._end_call(turn, trace_, ref)
        if span is None:
            return
        if span.is_recording():
            _set_response(span, data.response)
            if data.streamed and turn.first_chunk_at is not None:
                span.set_attribute(
                    "gen_ai.response.time_to_first_chunk",
                    max(0.0, turn.first_chunk_at - started_at),
                )
            if self.capture_content:
                span.set_attribute("gen_ai.output.messages", _dumps(output_messages(data.response)))
            blocked = _blocked(data.response)
            if blocked is not None:
                trace, _ = self._load()
                span.set_attribute("error.type", blocked)
                span.set_status(trace.Status(trace.StatusCode.ERROR, blocked))
        span.end()

    def _call_failed(
        self,
        turn: Turn,
        trace_: _TurnTrace,
        data: ModelCallFailed,
        ref: tuple[str, int, int, str],
    ) -> None:
        error_type = data.error.kind or "_OTHER"
        if data.ends_turn:
            trace_.error_type = error_type
        span = self._end_call(turn, trace_, ref)
        if span is None:
            return
        if span.is_recording():
            if data.error.code is not None:
                span.set_attribute("chatledger.error.code", data.error.code)
            if not data.ends_turn:
                span.set_attribute("chatledger.retried", True)
            if data.partial is not None:
                _set_response(span, data.partial)
                if self.capture_content:
                    span.set_attribute(
                        "gen_ai.output.messages", _dumps(output_messages(data.partial))
                    )
        self._fail(span, error_type, data.error.message, None, None)

    def _fail(
        self,
        span: Any,
        error_type: str,
        message: str,
        refs: list[tuple[str, int, int, str]] | None,
        end_time: int | None,
    ) -> None:
        trace, _ = self._load()
        if span.is_recording():
            if refs:
                _set_refs(span, refs)
            span.set_attribute("error.type", error_type)
            span.set_status(trace.Status(trace.StatusCode.ERROR, message[:500]))
        span.end(end_time=end_time)

    def _function_called(
        self,
        conversation: Conversation,
        turn: Turn,
        trace_: _TurnTrace,
        data: FunctionCalled,
        ref: tuple[str, int, int, str],
    ) -> None:
        trace, _ = self._load()
        span = self._tracer.start_span(
            f"execute_tool {data.name}",
            context=self._parent(trace_),
            kind=trace.SpanKind.INTERNAL,
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": data.name},
        )
        trace_.functions[data.index] = (span, [ref])
        if not span.is_recording():
            return
        more: dict[str, Any] = {
            "gen_ai.tool.type": "function",
            "gen_ai.conversation.id": conversation.id,
            "chatledger.turn": turn.number,
            "chatledger.function.index": data.index,
        }
        if data.call_id:
            more["gen_ai.tool.call.id"] = data.call_id
        description = _description(turn.functions.get(data.name))
        if description:
            more["gen_ai.tool.description"] = description
        if self.capture_content:
            more["gen_ai.tool.call.arguments"] = _dumps(data.args)
        span.set_attributes(more)

    def _function_responded(
        self,
        turn: Turn,
        trace_: _TurnTrace,
        data: FunctionResponded,
        ref: tuple[str, int, int, str],
    ) -> None:
        entry = trace_.functions.pop(data.index, None)
        if entry is None:
            return
        span, refs = entry
        refs.append(ref)
        if data.error is not None:
            error_type = turn.function_errors.get(data.index) or "_OTHER"
            # The error text quotes the arguments and the exception's message: contents,
            # shown only on opt-in.
            message = (
                data.error
                if self.capture_content
                else f"function {data.name} failed: {error_type} (its message is in the log)"
            )
            self._fail(span, error_type, message, refs, None)
            return
        if span.is_recording():
            _set_refs(span, refs)
            if self.capture_content:
                span.set_attribute("gen_ai.tool.call.result", _dumps(data.response.get("result")))
        span.end()


# ---------------------------------------------------------------------- attributes


def _set_refs(span: Any, refs: list[tuple[str, int, int, str]]) -> None:
    """The events a span stands for, in log order: where to find them in the log."""
    span.set_attributes(
        {
            "chatledger.event.types": [ref[0] for ref in refs],
            "chatledger.event.versions": [ref[1] for ref in refs],
            "chatledger.event.positions": [ref[2] for ref in refs],
            "chatledger.event.ids": [ref[3] for ref in refs],
        }
    )


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return kind(value)


def _request_parameters(into: dict[str, Any], config: dict[str, Any]) -> None:
    """The config's gen_ai.request.* attributes (and gen_ai.output.type), into ``into``."""
    for key, (name, kind) in _REQUEST_PARAMETERS.items():
        value = _number(config.get(key), kind)
        if value is not None:
            into[name] = value
    count = _number(config.get("candidateCount"), int)
    if count is not None and count != 1:
        into["gen_ai.request.choice.count"] = count
    stops = config.get("stopSequences")
    if isinstance(stops, list) and all(isinstance(stop, str) for stop in stops):
        into["gen_ai.request.stop_sequences"] = stops
    mime = config.get("responseMimeType")
    if isinstance(mime, str):
        output = {"text/plain": "text", "application/json": "json", "text/x.enum": "text"}
        into["gen_ai.output.type"] = output.get(mime, mime)


def _set_response(span: Any, response: dict[str, Any]) -> None:
    attributes: dict[str, Any] = {}
    model = response.get("modelVersion")
    if isinstance(model, str):
        attributes["gen_ai.response.model"] = model
    response_id = response.get("responseId")
    if isinstance(response_id, str):
        attributes["gen_ai.response.id"] = response_id
    reasons = [
        candidate["finishReason"].lower()
        for candidate in response.get("candidates") or []
        if isinstance(candidate, dict) and isinstance(candidate.get("finishReason"), str)
    ]
    if reasons:
        attributes["gen_ai.response.finish_reasons"] = reasons
    usage = response.get("usageMetadata")
    if isinstance(usage, dict):
        prompt = _number(usage.get("promptTokenCount"), int)
        output = _number(usage.get("candidatesTokenCount"), int)
        thoughts = _number(usage.get("thoughtsTokenCount"), int)
        cached = _number(usage.get("cachedContentTokenCount"), int)
        if prompt is not None:
            attributes["gen_ai.usage.input_tokens"] = prompt
        if output is not None or thoughts is not None:
            # As the conventions ask (and Google's own instrumentation does): reasoning
            # tokens count as output tokens too.
            attributes["gen_ai.usage.output_tokens"] = (output or 0) + (thoughts or 0)
        if thoughts is not None:
            attributes["gen_ai.usage.reasoning.output_tokens"] = thoughts
        if cached is not None:
            attributes["gen_ai.usage.cache_read.input_tokens"] = cached
    span.set_attributes(attributes)


def _blocked(response: dict[str, Any]) -> str | None:
    """error.type for a response with no candidate (a blocked prompt), else None."""
    if response.get("candidates"):
        return None
    feedback = response.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    return f"BLOCKED_{reason}" if isinstance(reason, str) else "NO_CANDIDATES"


def _description(func: Any) -> str | None:
    doc = getattr(func, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    return inspect.cleandoc(doc).split("\n\n", 1)[0][:1000]


def _dumps(value: Any) -> str:
    """JSON text for a span attribute (span attributes cannot hold structures), with
    registered secrets masked as in the log."""
    return json.dumps(mask_echoed_secrets(value), ensure_ascii=False, default=repr)


# ---------------------------------------------------------------------- messages


def _modality(mime: Any) -> str:
    kind = mime.split("/", 1)[0] if isinstance(mime, str) else ""
    return kind if kind in ("image", "video", "audio") else "document"


def _part(part: Any) -> dict[str, Any]:
    """A Gemini wire Part as a message part of the conventions' JSON schemas."""
    if not isinstance(part, dict):
        return {"type": "unknown"}
    if isinstance(part.get("text"), str):
        return {"type": "reasoning" if part.get("thought") else "text", "content": part["text"]}
    call = part.get("functionCall")
    if isinstance(call, dict):
        tool_call: dict[str, Any] = {"type": "tool_call", "name": call.get("name")}
        if call.get("id") is not None:
            tool_call["id"] = call["id"]
        tool_call["arguments"] = call.get("args")
        return tool_call
    reply = part.get("functionResponse")
    if isinstance(reply, dict):
        response: dict[str, Any] = {"type": "tool_call_response"}
        if reply.get("id") is not None:
            response["id"] = reply["id"]
        response["response"] = reply.get("response")
        return response
    inline = part.get("inlineData")
    if isinstance(inline, dict):
        mime = inline.get("mimeType")
        data = inline.get("data")
        blob: dict[str, Any] = {"type": "blob", "mime_type": mime, "modality": _modality(mime)}
        if isinstance(data, str) and len(data) <= MAX_CAPTURED_BLOB:
            blob["content"] = data
        else:
            blob["content"] = ""
            blob["size"] = len(data) if isinstance(data, str) else 0
        return blob
    file = part.get("fileData")
    if isinstance(file, dict):
        mime = file.get("mimeType")
        return {
            "type": "uri",
            "mime_type": mime,
            "modality": _modality(mime),
            "uri": file.get("fileUri"),
        }
    # executableCode, codeExecutionResult, ...: a generic part named after its field.
    fields = [key for key in part if key not in ("thoughtSignature", "thought")]
    name = fields[0] if fields else "unknown"
    return {"type": name, name: part.get(name)}


def _role(content: dict[str, Any]) -> str:
    parts = content.get("parts") or []
    if content.get("role") == "model":
        return "assistant"
    if parts and all(isinstance(part, dict) and "functionResponse" in part for part in parts):
        return "tool"
    return "user"


def input_messages(contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request contents as ``gen_ai.input.messages``."""
    return [
        {"role": _role(content), "parts": [_part(part) for part in content.get("parts") or []]}
        for content in contents
        if isinstance(content, dict)
    ]


def system_instructions(instruction: Any) -> list[dict[str, Any]]:
    """A request's ``systemInstruction`` as ``gen_ai.system_instructions``."""
    if not isinstance(instruction, dict):
        return []
    return [_part(part) for part in instruction.get("parts") or []]


_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
}


def output_messages(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A response's candidates as ``gen_ai.output.messages``."""
    messages: list[dict[str, Any]] = []
    for candidate in response.get("candidates") or []:
        if not isinstance(candidate, dict):
            continue
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        converted = [_part(part) for part in parts or []]
        reason = candidate.get("finishReason")
        if any(part["type"] == "tool_call" for part in converted):
            finish = "tool_call"
        elif isinstance(reason, str):
            finish = _FINISH_REASONS.get(reason, reason.lower())
        else:
            finish = "stop"
        messages.append({"role": "assistant", "parts": converted, "finish_reason": finish})
    return messages
