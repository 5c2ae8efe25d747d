"""OpenTelemetry spans of model and function calls (docs/integrations.md#opentelemetry).

Real parts only: the OpenTelemetry SDK with its in-memory exporter, chatledger on a real
SQLite file talking to the loopback Gemini server. Every test checks the spans against
the events the log holds, so that a trace links back to the log.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.semconv._incubating.attributes import (
    error_attributes,
    gen_ai_attributes,
    server_attributes,
)
from opentelemetry.trace import SpanKind, StatusCode

import chatledger
from chatledger.client._telemetry import CAPTURE_ENV, NOOP
from chatledger.client.transports import ScriptedTransport
from chatledger.client.transports.base import ModelRequest
from chatledger.events.envelope import RecordedEvent
from chatledger.events.kinds import ModelCallFailed
from tests.conftest import API_KEY
from tests.support.gemini_server import GeminiServer, Reply, text_response

ROOT = Path(__file__).resolve().parents[2]

USAGE = {
    "promptTokenCount": 12,
    "candidatesTokenCount": 5,
    "thoughtsTokenCount": 2,
    "cachedContentTokenCount": 4,
    "totalTokenCount": 19,
}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def make_client(
    server: GeminiServer, path: Path, provider: TracerProvider, **options: Any
) -> chatledger.Client:
    http_options: dict[str, Any] = {"base_url": server.base_url}
    if "retry" in options:
        http_options["retry_options"] = options.pop("retry")
    return chatledger.Client(
        api_key=API_KEY,
        http_options=http_options,
        store=str(path),
        actor="tester",
        tracer_provider=provider,
        **options,
    )


@pytest.fixture
def client(
    gemini_server: GeminiServer, db_path: Path, provider: TracerProvider
) -> Iterator[chatledger.Client]:
    with make_client(gemini_server, db_path, provider) as client:
        yield client


def named(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name.startswith(prefix)]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def check_links(spans: list[ReadableSpan], events: list[RecordedEvent]) -> None:
    """Every span's chatledger.event.* name events of the log exactly (id, type, version,
    position); every model call and function call of the log is in exactly one span."""
    by_id = {event.event_id: event for event in events}
    claimed: dict[str, str] = {}
    ours = [
        span for span in spans if span.name.startswith(("chat ", "execute_tool ", "chatledger."))
    ]
    assert ours
    for span in ours:
        values = attrs(span)
        ids = values["chatledger.event.ids"]
        assert len(ids) == len(values["chatledger.event.types"])
        for event_id, kind, version, position in zip(
            ids,
            values["chatledger.event.types"],
            values["chatledger.event.versions"],
            values["chatledger.event.positions"],
            strict=True,
        ):
            event = by_id[event_id]
            assert (event.type, event.version, event.position) == (kind, version, position)
            assert event.conversation_id == values["gen_ai.conversation.id"]
            if span.name != "chatledger.turn":
                assert event_id not in claimed, f"{event_id} in {span.name} and {claimed[event_id]}"
                claimed[event_id] = span.name
    calls = {"model_call_started", "model_responded", "model_call_failed"}
    functions = {"function_called", "function_responded"}
    for event in events:
        if event.type in calls:
            assert claimed.get(event.event_id, "").startswith("chat "), event.type
        elif event.type in functions:
            assert claimed.get(event.event_id, "").startswith("execute_tool "), event.type


def check_semconv_names(spans: list[ReadableSpan]) -> None:
    """Every non-chatledger attribute is a name of the semantic conventions."""
    known = {
        value
        for module in (gen_ai_attributes, error_attributes, server_attributes)
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str)
    }
    for span in spans:
        if not span.name.startswith(("chat ", "execute_tool ", "chatledger.")):
            continue
        for key in attrs(span):
            if not key.startswith("chatledger."):
                assert key in known, key


# ---------------------------------------------------------------------- sync


def test_a_send_is_a_turn_span_with_one_chat_span_linked_to_its_events(
    client: chatledger.Client, gemini_server: GeminiServer, exporter: InMemorySpanExporter
) -> None:
    gemini_server.reply_json(
        text_response("Paris.", usage=USAGE, modelVersion="gemini-2.5-flash-001", responseId="r-1")
    )
    chat = client.chats.create(
        model="gemini-2.5-flash",
        config={
            "temperature": 0.3,
            "top_p": 0.9,
            "top_k": 20,
            "max_output_tokens": 64,
            "stop_sequences": ["END"],
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
            "candidate_count": 1,
        },
    )
    chat.send_message("Capital of France?")
    spans = list(exporter.get_finished_spans())
    assert [span.name for span in spans] == ["chat gemini-2.5-flash", "chatledger.turn"]
    call, turn = spans
    assert call.parent is not None and call.parent.span_id == turn.context.span_id
    assert turn.parent is None
    assert call.kind is SpanKind.CLIENT
    assert call.status.status_code is StatusCode.UNSET
    values = attrs(call)
    port = int(gemini_server.base_url.rsplit(":", 1)[1])
    assert values["gen_ai.operation.name"] == "chat"
    assert values["gen_ai.provider.name"] == "gcp.gemini"
    assert values["gen_ai.system"] == "gemini"
    assert values["gen_ai.request.model"] == "gemini-2.5-flash"
    assert values["server.address"] == "127.0.0.1"
    assert values["server.port"] == port
    assert values["gen_ai.conversation.id"] == chat.id
    assert values["gen_ai.request.temperature"] == 0.3
    assert values["gen_ai.request.top_p"] == 0.9
    assert values["gen_ai.request.top_k"] == 20.0
    assert values["gen_ai.request.max_tokens"] == 64
    assert values["gen_ai.request.stop_sequences"] == ("END",)
    assert values["gen_ai.request.seed"] == 7
    assert values["gen_ai.request.presence_penalty"] == 0.5
    assert values["gen_ai.request.frequency_penalty"] == 0.25
    assert "gen_ai.request.choice.count" not in values  # 1 is the default: not recorded
    assert "gen_ai.request.stream" not in values
    assert "gen_ai.response.time_to_first_chunk" not in values
    assert values["gen_ai.response.model"] == "gemini-2.5-flash-001"
    assert values["gen_ai.response.id"] == "r-1"
    assert values["gen_ai.response.finish_reasons"] == ("stop",)
    assert values["gen_ai.usage.input_tokens"] == 12
    assert values["gen_ai.usage.output_tokens"] == 7  # candidates + thoughts
    assert values["gen_ai.usage.reasoning.output_tokens"] == 2
    assert values["gen_ai.usage.cache_read.input_tokens"] == 4
    assert values["chatledger.turn"] == 1
    assert values["chatledger.attempt"] == 1
    assert values["chatledger.event.types"] == ("model_call_started", "model_responded")
    assert "error.type" not in values
    # No contents without the opt-in.
    assert not any("messages" in key or "instructions" in key for key in values)
    events = chat.events()
    assert attrs(turn)["chatledger.event.types"] == tuple(event.type for event in events[1:])
    check_links(spans, events)
    check_semconv_names(spans)


def test_function_calls_are_execute_tool_spans_current_while_the_function_runs(
    client: chatledger.Client,
    gemini_server: GeminiServer,
    exporter: InMemorySpanExporter,
    provider: TracerProvider,
) -> None:
    tracer = provider.get_tracer("app")

    def get_weather(city: str) -> dict[str, Any]:
        """Get the current weather in a city.

        Longer details that are not the description."""
        with tracer.start_as_current_span("weather lookup"):
            return {"city": city, "sky": "clear"}

    def get_time(city: str) -> str:
        """The local time in a city."""
        raise ValueError("clock is broken")

    gemini_server.reply_json(
        text_response(
            parts=[
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "c-1"}},
                {"functionCall": {"name": "get_time", "args": {"city": "Paris"}, "id": "c-2"}},
                {"functionCall": {"name": "nowhere", "args": {}}},
            ]
        )
    )
    gemini_server.reply_text("Clear, time unknown.")
    chat = client.chats.create(model="gemini-2.5-flash", config={"tools": [get_weather, get_time]})
    chat.send_message("Weather and time in Paris?")
    spans = list(exporter.get_finished_spans())
    turn = named(spans, "chatledger.turn")[0]
    tools = named(spans, "execute_tool ")
    assert [span.name for span in tools] == [
        "execute_tool get_weather",
        "execute_tool get_time",
        "execute_tool nowhere",
    ]
    assert len(named(spans, "chat ")) == 2
    for span in [*tools, *named(spans, "chat ")]:
        assert span.parent is not None and span.parent.span_id == turn.context.span_id
    weather, clock, unknown = tools
    inner = named(spans, "weather lookup")[0]
    assert inner.parent is not None and inner.parent.span_id == weather.context.span_id
    assert weather.kind is SpanKind.INTERNAL
    values = attrs(weather)
    assert values["gen_ai.operation.name"] == "execute_tool"
    assert values["gen_ai.tool.name"] == "get_weather"
    assert values["gen_ai.tool.call.id"] == "c-1"
    assert values["gen_ai.tool.type"] == "function"
    assert values["gen_ai.tool.description"] == "Get the current weather in a city."
    assert values["chatledger.function.index"] == 0
    assert "gen_ai.tool.call.arguments" not in values
    assert "gen_ai.tool.call.result" not in values
    assert weather.status.status_code is StatusCode.UNSET
    assert attrs(clock)["error.type"] == "ValueError"
    assert clock.status.status_code is StatusCode.ERROR
    # The error text quotes arguments and the exception: contents, not shown by default.
    assert (
        clock.status.description
        == "function get_time failed: ValueError (its message is in the log)"
    )
    assert attrs(unknown)["error.type"] == "unknown_function"
    assert "gen_ai.tool.call.id" not in attrs(unknown)
    check_links(spans, chat.events())
    check_semconv_names(spans)


def test_a_failed_call_is_a_span_with_error_type_and_the_turn_too(
    client: chatledger.Client, gemini_server: GeminiServer, exporter: InMemorySpanExporter
) -> None:
    gemini_server.reply_error(400, "INVALID_ARGUMENT", "bad request")
    chat = client.chats.create(model="gemini-2.5-flash")
    with pytest.raises(chatledger.errors.ClientError):
        chat.send_message("Hello")
    spans = list(exporter.get_finished_spans())
    call, turn = named(spans, "chat ")[0], named(spans, "chatledger.turn")[0]
    assert attrs(call)["error.type"] == "ClientError"
    assert attrs(call)["chatledger.error.code"] == 400
    assert call.status.status_code is StatusCode.ERROR
    assert "bad request" in (call.status.description or "")
    assert attrs(call)["chatledger.event.types"] == ("model_call_started", "model_call_failed")
    assert attrs(turn)["error.type"] == "ClientError"
    assert turn.status.status_code is StatusCode.ERROR
    check_links(spans, chat.events())


def test_each_retry_attempt_is_its_own_chat_span(
    gemini_server: GeminiServer,
    db_path: Path,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    retry = {"attempts": 3, "initial_delay": 0, "max_delay": 0, "jitter": 0}
    with make_client(gemini_server, db_path, provider, retry=retry) as client:
        gemini_server.reply_error(503, "UNAVAILABLE", "try later")
        gemini_server.reply_error(500, "INTERNAL", "oops")
        gemini_server.reply_text("Third time lucky.")
        chat = client.chats.create(model="gemini-2.5-flash")
        assert chat.send_message("Hi").text == "Third time lucky."
        events = chat.events()
    spans = list(exporter.get_finished_spans())
    calls = named(spans, "chat ")
    assert [attrs(span)["chatledger.attempt"] for span in calls] == [1, 2, 3]
    assert [attrs(span).get("error.type") for span in calls] == ["ServerError", "ServerError", None]
    assert [attrs(span).get("chatledger.retried") for span in calls] == [True, True, None]
    turn = named(spans, "chatledger.turn")[0]
    assert "error.type" not in attrs(turn)
    assert turn.status.status_code is StatusCode.UNSET
    check_links(spans, events)


def test_a_stream_is_one_chat_span_marked_streamed(
    client: chatledger.Client, gemini_server: GeminiServer, exporter: InMemorySpanExporter
) -> None:
    gemini_server.reply_sse(
        [
            text_response("Hel", finish_reason=None),
            text_response("lo!", usage=USAGE, modelVersion="gemini-2.5-flash-001"),
        ]
    )
    chat = client.chats.create(model="gemini-2.5-flash")
    assert "".join(chunk.text or "" for chunk in chat.send_message_stream("Hi")) == "Hello!"
    spans = list(exporter.get_finished_spans())
    (call,) = named(spans, "chat ")
    assert attrs(call)["gen_ai.request.stream"] is True
    # Measured from the span's start to the first chunk: within the span.
    assert call.start_time is not None and call.end_time is not None
    first_chunk = attrs(call)["gen_ai.response.time_to_first_chunk"]
    assert 0 <= first_chunk <= (call.end_time - call.start_time) / 1e9
    assert attrs(call)["gen_ai.usage.input_tokens"] == 12
    assert attrs(call)["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs(named(spans, "chatledger.turn")[0])["chatledger.streamed"] is True
    check_links(spans, chat.events())


def test_a_stream_left_early_ends_its_span_as_abandoned(
    client: chatledger.Client, gemini_server: GeminiServer, exporter: InMemorySpanExporter
) -> None:
    gemini_server.reply_sse([text_response("one ", finish_reason=None), text_response("two")])
    chat = client.chats.create(model="gemini-2.5-flash")
    stream = chat.send_message_stream("Count")
    next(stream)
    stream.close()
    spans = list(exporter.get_finished_spans())
    call, turn = named(spans, "chat ")[0], named(spans, "chatledger.turn")[0]
    assert attrs(call)["error.type"] == "abandoned"
    assert attrs(turn)["error.type"] == "abandoned"
    check_links(spans, chat.events())


def test_the_turn_span_is_a_child_of_the_callers_span(
    client: chatledger.Client,
    gemini_server: GeminiServer,
    exporter: InMemorySpanExporter,
    provider: TracerProvider,
) -> None:
    gemini_server.reply_text("Hi!")
    chat = client.chats.create(model="gemini-2.5-flash")
    with provider.get_tracer("app").start_as_current_span("handle request") as outer:
        chat.send_message("Hello")
    turn = named(exporter.get_finished_spans(), "chatledger.turn")[0]
    assert turn.parent is not None and turn.parent.span_id == outer.get_span_context().span_id
    assert turn.context.trace_id == outer.get_span_context().trace_id


class _TracedTransport(ScriptedTransport):
    """A transport that makes a span of its own per request, as an instrumented HTTP
    client would."""

    def __init__(self, tracer: Any) -> None:
        super().__init__()
        self.tracer = tracer

    def generate(self, request: ModelRequest) -> dict[str, Any]:
        with self.tracer.start_as_current_span("POST generateContent"):
            return super().generate(request)

    async def agenerate(self, request: ModelRequest) -> dict[str, Any]:
        with self.tracer.start_as_current_span("POST generateContent"):
            await asyncio.sleep(0)
            return super().generate(request)


async def test_the_chat_span_is_current_while_the_request_is_sent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    transport = _TracedTransport(provider.get_tracer("http"))
    transport.enqueue("sync").enqueue("async")
    client = chatledger.Client(transport=transport, tracer_provider=provider)
    client.chats.create(model="gemini-2.5-flash").send_message("Hi")
    await client.aio.chats.create(model="gemini-2.5-flash").send_message("Hi")
    spans = list(exporter.get_finished_spans())
    requests = named(spans, "POST ")
    calls = named(spans, "chat ")
    assert len(requests) == len(calls) == 2
    for request, call in zip(requests, calls, strict=True):
        assert request.parent is not None and request.parent.span_id == call.context.span_id
    assert attrs(calls[0])["gen_ai.provider.name"] == "scripted"
    assert calls[0].kind is SpanKind.INTERNAL  # an in-process transport


class _CurrentSpanTransport(ScriptedTransport):
    """Records the span current while each request is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.current: list[Any] = []

    def generate(self, request: ModelRequest) -> dict[str, Any]:
        self.current.append(trace.get_current_span().get_span_context())
        return super().generate(request)


def test_a_tracer_that_makes_no_spans_leaves_the_callers_span_current(
    provider: TracerProvider,
) -> None:
    """A no-op tracer (OpenTelemetry's API without an SDK) makes no span: chatledger then
    makes none of the turn's spans, and the caller's span is current while the request
    is sent, as when the API's non-recording spans were activated. A turn that an SDK
    samples out still has spans of its own (new ids, not recorded), and its chat span
    is current."""
    app = provider.get_tracer("app")
    noop = _CountingProvider(trace.NoOpTracerProvider())
    for chat_provider, own_span in (
        (noop, False),
        (TracerProvider(sampler=ALWAYS_OFF), True),
    ):
        transport = _CurrentSpanTransport()
        transport.enqueue("Hi").enqueue("Again")
        client = chatledger.Client(transport=transport, tracer_provider=chat_provider)
        with app.start_as_current_span("handler") as handler:
            chat = client.chats.create(model="gemini-2.5-flash")
            assert chat.send_message("Hello").text == "Hi"
            assert chat.send_message("Hello again").text == "Again"
        caller = handler.get_span_context()
        for current in transport.current:
            assert current.trace_id == caller.trace_id
            assert (current.span_id != caller.span_id) is own_span
        assert len(chat.events()) == 7
    # One span asked for per turn (the turn's, handed back unmade), none after it.
    assert noop.started == ["chatledger.turn", "chatledger.turn"]


class _CountingProvider:
    """A tracer provider whose tracers note the name of each span asked for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.started: list[str] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        tracer = self.inner.get_tracer(*args, **kwargs)
        started = self.started

        class Counting:
            def start_span(self, name: str, *a: Any, **k: Any) -> Any:
                started.append(name)
                return tracer.start_span(name, *a, **k)

        return Counting()


# ---------------------------------------------------------------------- async


async def test_async_send_stream_and_concurrent_functions(
    client: chatledger.Client,
    gemini_server: GeminiServer,
    exporter: InMemorySpanExporter,
    provider: TracerProvider,
) -> None:
    tracer = provider.get_tracer("app")

    async def fetch(item: str) -> str:
        """Fetch an item."""
        with tracer.start_as_current_span(f"inside {item}"):
            await asyncio.sleep(0)
            return item.upper()

    def lookup(item: str) -> str:
        """Look an item up (a plain function: it runs in a worker thread)."""
        with tracer.start_as_current_span(f"inside {item}"):
            return item * 2

    gemini_server.reply_json(
        text_response(
            parts=[
                {"functionCall": {"name": "fetch", "args": {"item": "a"}, "id": "f-a"}},
                {"functionCall": {"name": "lookup", "args": {"item": "b"}, "id": "f-b"}},
            ]
        )
    )
    gemini_server.reply_text("Done.")
    gemini_server.reply_sse([text_response("Str", finish_reason=None), text_response("eam")])
    chat = client.aio.chats.create(model="gemini-2.5-flash", config={"tools": [fetch, lookup]})
    with tracer.start_as_current_span("async caller") as outer:
        assert (await chat.send_message("Go")).text == "Done."
        text = "".join([chunk.text or "" async for chunk in await chat.send_message_stream("More")])
    events = await chat.events()
    await client.aclose()  # before any assertion: the async transports' connections
    assert text == "Stream"
    spans = list(exporter.get_finished_spans())
    turns = named(spans, "chatledger.turn")
    assert len(turns) == 2
    for turn in turns:
        assert turn.parent is not None and turn.parent.span_id == outer.get_span_context().span_id
    tools = {span.name: span for span in named(spans, "execute_tool ")}
    assert set(tools) == {"execute_tool fetch", "execute_tool lookup"}
    for item, tool in (("a", "fetch"), ("b", "lookup")):
        inner = named(spans, f"inside {item}")[0]
        assert inner.parent is not None
        assert inner.parent.span_id == tools[f"execute_tool {tool}"].context.span_id
    calls = named(spans, "chat ")
    assert [attrs(span).get("gen_ai.request.stream") for span in calls] == [None, None, True]
    check_links(spans, events)
    check_semconv_names(spans)


# ---------------------------------------------------------------------- contents


def test_contents_only_with_the_opt_in(
    gemini_server: GeminiServer,
    db_path: Path,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    monkeypatch.setenv(CAPTURE_ENV, "true")
    gemini_server.reply_json(
        text_response(
            parts=[
                {"thought": True, "text": "I should add."},
                {"functionCall": {"name": "add", "args": {"a": 2, "b": 3}, "id": "x"}},
            ]
        )
    )
    gemini_server.reply_text("5")
    with make_client(gemini_server, db_path, provider) as client:
        chat = client.chats.create(
            model="gemini-2.5-flash",
            config={"tools": [add], "system_instruction": "You add."},
        )
        chat.send_message("2 + 3?")
    spans = list(exporter.get_finished_spans())
    first, second = named(spans, "chat ")
    assert json.loads(attrs(first)["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "2 + 3?"}]}
    ]
    assert json.loads(attrs(first)["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "You add."}
    ]
    assert json.loads(attrs(first)["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "I should add."},
                {"type": "tool_call", "name": "add", "id": "x", "arguments": {"a": 2, "b": 3}},
            ],
            "finish_reason": "tool_call",
        }
    ]
    second_input = json.loads(attrs(second)["gen_ai.input.messages"])
    assert [message["role"] for message in second_input] == ["user", "assistant", "tool"]
    assert second_input[2]["parts"] == [
        {"type": "tool_call_response", "id": "x", "response": {"result": 5}}
    ]
    assert json.loads(attrs(second)["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "5"}], "finish_reason": "stop"}
    ]
    (tool,) = named(spans, "execute_tool ")
    assert json.loads(attrs(tool)["gen_ai.tool.call.arguments"]) == {"a": 2, "b": 3}
    assert json.loads(attrs(tool)["gen_ai.tool.call.result"]) == 5

    # The client's option wins over the environment.
    exporter.clear()
    gemini_server.reply_text("Off.")
    with make_client(gemini_server, db_path, provider, capture_message_content=False) as client:
        client.chats.get(chat.id).send_message("Quiet?")
    (call,) = named(exporter.get_finished_spans(), "chat ")
    assert not any(key.endswith(("messages", "instructions")) for key in attrs(call))


@pytest.mark.parametrize("value", ["false", "no_content", "event_only", ""])
def test_the_environment_variable_off_values(
    value: str,
    gemini_server: GeminiServer,
    db_path: Path,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, value)
    gemini_server.reply_text("Hi")
    with make_client(gemini_server, db_path, provider) as client:
        assert client.settings.telemetry.capture_content is False
        client.chats.create(model="gemini-2.5-flash").send_message("Hello")
    (call,) = named(exporter.get_finished_spans(), "chat ")
    assert "gen_ai.input.messages" not in attrs(call)


def test_no_secret_on_any_span_even_with_contents(
    gemini_server: GeminiServer,
    db_path: Path,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    # A model that echoes the API key: the log masks it, and so do the spans.
    gemini_server.reply_text(f"Your key is {API_KEY}.")
    gemini_server.reply_error(500, "INTERNAL", f"bad key {API_KEY}")
    with make_client(gemini_server, db_path, provider, capture_message_content=True) as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        chat.send_message("What is my key?")
        with pytest.raises(chatledger.errors.ServerError):
            chat.send_message("Again")
    spans = list(exporter.get_finished_spans())
    assert len(named(spans, "chat ")) == 2
    for span in spans:
        dumped = json.dumps(
            {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in attrs(span).items()
            }
        )
        assert API_KEY not in dumped
        assert API_KEY not in (span.status.description or "")
    output = json.loads(attrs(named(spans, "chat ")[0])["gen_ai.output.messages"])
    assert output[0]["parts"][0]["content"] == "Your key is ***."


# ---------------------------------------------------------------------- options, failures


def test_invalid_options_are_refused() -> None:
    with pytest.raises(chatledger.InvalidInputError, match="capture_message_content"):
        chatledger.Client(capture_message_content="yes")  # type: ignore[arg-type]
    with pytest.raises(chatledger.InvalidInputError, match="TracerProvider"):
        chatledger.Client(tracer_provider=object())


class _BrokenTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("exporter down")


class _BrokenProvider:
    def get_tracer(self, *args: Any, **kwargs: Any) -> _BrokenTracer:
        return _BrokenTracer()


def test_a_failing_tracer_never_changes_what_a_chat_does(
    gemini_server: GeminiServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gemini_server.reply_text("Still here.")
    with chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": gemini_server.base_url},
        store=str(db_path),
        tracer_provider=_BrokenProvider(),
    ) as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        assert chat.send_message("Hello").text == "Still here."
        assert [event.type for event in chat.events()][-1] == "model_responded"
    assert "OpenTelemetry spans of chatledger failed" in caplog.text


def test_without_an_sdk_the_global_provider_makes_no_spans(
    gemini_server: GeminiServer, db_path: Path, exporter: InMemorySpanExporter
) -> None:
    gemini_server.reply_text("Hi")
    with chatledger.Client(
        api_key=API_KEY, http_options={"base_url": gemini_server.base_url}, store=str(db_path)
    ) as client:
        assert client.settings.telemetry.enabled
        assert client.chats.create(model="gemini-2.5-flash").send_message("Hello").text == "Hi"
    assert exporter.get_finished_spans() == ()


# ---------------------------------------------------------------------- imports


def run_python(*pieces: str) -> dict[str, Any]:
    code = "\n".join(textwrap.dedent(piece) for piece in pieces)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(CAPTURE_ENV, None)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


CHAT = """
    from chatledger.client.transports import ScriptedTransport

    def add(a: int, b: int) -> int:
        \"\"\"Add.\"\"\"
        return a + b

    transport = ScriptedTransport()
    transport.enqueue({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "add", "args": {"a": 1, "b": 2}}}]}}]})
    transport.enqueue("3").enqueue(chunks=["o", "k"])
    client = chatledger.Client(transport=transport)
    before = "opentelemetry" in sys.modules
    chat = client.chats.create(model="gemini-2.5-flash", config={"tools": [add]})
    chat.send_message("1 + 2?")
    list(chat.send_message_stream("ok?"))
"""


def test_without_opentelemetry_nothing_of_it_is_imported() -> None:
    # The package is hidden as if it were not installed; every attempt to find it counts.
    loaded = run_python(
        """
        import importlib.abc, json, sys

        asked = []

        class NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    asked.append(name)
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NotInstalled())
        import chatledger
        from chatledger.client._telemetry import NOOP
        """,
        CHAT,
        """
        print(json.dumps({
            "asked": asked,
            "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"),
            "noop": client.settings.telemetry is NOOP,
            "events": len(chat.events()),
        }))
        """,
    )
    # One look for the package (when the client was made), no import, the no-op telemetry.
    assert loaded == {"asked": ["opentelemetry"], "loaded": [], "noop": True, "events": 11}


def test_installed_it_is_imported_at_the_first_turn_only() -> None:
    loaded = run_python(
        """
        import json, sys
        import chatledger
        after_import = "opentelemetry" in sys.modules
        """,
        CHAT,
        """
        print(json.dumps({
            "after_import": after_import,
            "after_client": before,
            "after_send": "opentelemetry.trace" in sys.modules,
        }))
        """,
    )
    assert loaded == {"after_import": False, "after_client": False, "after_send": True}


def test_the_noop_is_what_a_client_without_opentelemetry_gets() -> None:
    # In this process opentelemetry is installed, so a client gets the real telemetry;
    # the no-op is the class default every other settings object starts from.
    assert chatledger.Client().settings.telemetry is not NOOP
    assert NOOP.enabled is False


# ---------------------------------------------------------------------- edge cases


def test_a_stream_that_breaks_keeps_what_it_delivered(
    gemini_server: GeminiServer,
    db_path: Path,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    gemini_server.reply_sse(
        [text_response("Half ", finish_reason=None), text_response("never")], drop_after=1
    )
    with make_client(gemini_server, db_path, provider, capture_message_content=True) as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        with pytest.raises(chatledger.errors.ModelConnectionError):
            "".join(chunk.text or "" for chunk in chat.send_message_stream("Go"))
        events = chat.events()
    spans = list(exporter.get_finished_spans())
    (call,) = named(spans, "chat ")
    (failed,) = [event.data for event in events if isinstance(event.data, ModelCallFailed)]
    assert attrs(call)["error.type"] == failed.error.kind
    assert failed.partial is not None
    output = json.loads(attrs(call)["gen_ai.output.messages"])
    assert output[0]["parts"] == [{"type": "text", "content": "Half "}]
    check_links(spans, events)


def test_a_blocked_prompt_is_an_error_span(
    client: chatledger.Client, gemini_server: GeminiServer, exporter: InMemorySpanExporter
) -> None:
    gemini_server.reply_json({"promptFeedback": {"blockReason": "SAFETY"}})
    chat = client.chats.create(model="gemini-2.5-flash")
    chat.send_message("Something blocked")
    (call,) = named(exporter.get_finished_spans(), "chat ")
    assert attrs(call)["error.type"] == "BLOCKED_SAFETY"
    assert call.status.status_code is StatusCode.ERROR
    assert attrs(call)["chatledger.event.types"] == ("model_call_started", "model_responded")


class _Stop(BaseException):
    """Not an Exception: automatic function calling does not catch it."""


def test_spans_whose_outcome_the_log_lacks_end_as_other(
    client: chatledger.Client, gemini_server: GeminiServer, exporter: InMemorySpanExporter
) -> None:
    def halt() -> str:
        """Stops everything."""
        raise _Stop

    gemini_server.reply_json(text_response(parts=[{"functionCall": {"name": "halt", "args": {}}}]))
    chat = client.chats.create(model="gemini-2.5-flash", config={"tools": [halt]})
    with pytest.raises(_Stop):
        chat.send_message("Halt")
    spans = list(exporter.get_finished_spans())
    (tool,) = named(spans, "execute_tool ")
    assert attrs(tool)["error.type"] == "_OTHER"
    assert attrs(tool)["chatledger.event.types"] == ("function_called",)
    turn = named(spans, "chatledger.turn")[0]
    assert attrs(turn)["error.type"] == "_OTHER"
    check_links(spans, chat.events())


def test_an_openai_compatible_server_is_provider_openai(
    openai_server: Any, db_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    openai_server.reply_text("Hello from v1.")
    with chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": openai_server.base_url},
        store=str(db_path),
        tracer_provider=provider,
    ) as client:
        chat = client.chats.create(model="smollm2")
        assert chat.send_message("Hi").text == "Hello from v1."
    (call,) = named(exporter.get_finished_spans(), "chat ")
    assert attrs(call)["gen_ai.provider.name"] == "openai"
    assert attrs(call)["gen_ai.system"] == "openai"
    assert attrs(call)["server.address"] == "127.0.0.1"
    assert call.kind is SpanKind.CLIENT


def test_with_contents_a_failed_function_shows_its_error_text(
    gemini_server: GeminiServer,
    db_path: Path,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    def divide(a: int, b: int) -> float:
        """Divide a by b."""
        return a / b

    gemini_server.reply_json(
        text_response(parts=[{"functionCall": {"name": "divide", "args": {"a": 1, "b": 0}}}])
    )
    gemini_server.reply_text("Cannot divide by zero.")
    with make_client(gemini_server, db_path, provider, capture_message_content=True) as client:
        chat = client.chats.create(model="gemini-2.5-flash", config={"tools": [divide]})
        chat.send_message("1 / 0?")
        responded = [e.data for e in chat.events() if e.type == "function_responded"]
    (tool,) = named(exporter.get_finished_spans(), "execute_tool ")
    assert attrs(tool)["error.type"] == "ZeroDivisionError"
    assert tool.status.description == getattr(responded[0], "error", None)
    assert "division by zero" in (tool.status.description or "")
    assert "gen_ai.tool.call.result" not in attrs(tool)  # only for a function that succeeded


def test_each_continuation_hop_is_its_own_chat_span(
    client: chatledger.Client, gemini_server: GeminiServer, exporter: InMemorySpanExporter
) -> None:
    """A long answer the model continues (docs/chat-api.md#continuation): one chat span per
    hop, as one model call event per hop, under one turn span."""
    hop1 = text_response("One. ", finish_reason="CONTINUATION")
    hop1["candidates"][0]["continuationToken"] = "dG9r"
    gemini_server.enqueue(Reply("json", body=hop1))
    gemini_server.reply_text("Two.")
    chat = client.chats.create(model="gemini-2.5-flash")
    assert chat.send_message("Long").text == "One. Two."
    events = chat.events()
    spans = list(exporter.get_finished_spans())
    assert len(named(spans, "chat ")) == 2
    assert len(named(spans, "chatledger.turn")) == 1
    check_links(spans, events)
