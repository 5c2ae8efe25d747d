"""The OpenAI-compatible transport: the contract against a scripted server and against a
real llama.cpp server, the request and response mapping, errors, and a full chat."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.client._client import transport_kind
from chatledger.client.transports.base import ModelRequest
from chatledger.client.transports.openai import (
    OpenAITransport,
    chat_messages,
    chat_request,
    json_schema_from_gemini,
)
from chatledger.errors import (
    ClientError,
    InvalidInputError,
    InvalidResponseError,
    ModelConnectionError,
    ModelTimeoutError,
    ServerError,
)
from chatledger.types import HttpOptions
from tests.support.llama_server import llama_server as run_llama_server
from tests.support.openai_server import OpenAIServer, completion, text_events, tool_call
from tests.transport_contract import (
    Harness,
    HttpContract,
    HttpHarness,
    Prepared,
    TimeoutContract,
    TransportContract,
    candidate,
    check_a_chat,
    response_text,
)

API_KEY = "sk-test-openai-key-DO-NOT-LEAK-77aa"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def model(text: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text}]}


def request(
    *contents: dict[str, Any], model_name: str = "openai/scripted-model", **config: Any
) -> ModelRequest:
    return ModelRequest(model=model_name, contents=list(contents) or [user("Hi")], config=config)


@pytest.fixture
def transport(openai_server: OpenAIServer) -> Iterator[OpenAITransport]:
    transport = OpenAITransport(None, HttpOptions(base_url=openai_server.base_url))
    yield transport
    transport.close()


def last_body(server: OpenAIServer) -> dict[str, Any]:
    body = server.requests[-1].body
    assert isinstance(body, dict)
    return body


# --------------------------------------------------------------------------- contract: scripted


class ScriptedServerHarness(HttpHarness):
    def __init__(self, server: OpenAIServer) -> None:
        super().__init__(server, OpenAITransport, server.base_url)

    def request(self, max_output_tokens: int | None = None) -> ModelRequest:
        if max_output_tokens:
            return request(
                user("Say hello"), generationConfig={"maxOutputTokens": max_output_tokens}
            )
        return request(user("Say hello"))

    def body(self, text: str, *, max_tokens: bool = False, tokens: int = 1) -> dict[str, Any]:
        usage = {"prompt_tokens": 9, "completion_tokens": tokens, "total_tokens": 9 + tokens}
        return completion(text, finish_reason="length" if max_tokens else "stop", usage=usage)

    def events(
        self, pieces: list[str], *, max_tokens: bool = False, finish: bool = True
    ) -> list[Any]:
        usage = {
            "prompt_tokens": 9,
            "completion_tokens": len(pieces),
            "total_tokens": 9 + len(pieces),
        }
        return text_events(pieces, finish_reason="length" if max_tokens else "stop", usage=usage)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        # As vLLM and llama.cpp's server send it: the status as an integer code.
        return {
            "error": {"message": message, "type": "server_error", "param": None, "code": status}
        }


class TestScriptedServerContract(TransportContract, HttpContract):
    @pytest.fixture
    def harness(self, openai_server: OpenAIServer) -> Iterator[ScriptedServerHarness]:
        harness = ScriptedServerHarness(openai_server)
        yield harness
        harness.transport.close()


# --------------------------------------------------------------------------- requests


def test_request_goes_to_chat_completions_with_the_model_name(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    openai_server.reply_text("ok")
    transport.generate(request(user("Hi"), model_name="openai/gpt-4o-mini"))
    recorded = openai_server.requests[-1]
    assert recorded.path == "/v1/chat/completions"
    assert recorded.body["model"] == "gpt-4o-mini"
    assert "stream" not in recorded.body
    assert "authorization" not in recorded.headers
    assert recorded.headers["content-type"] == "application/json"


def test_api_key_goes_in_a_bearer_header_and_never_in_errors(openai_server: OpenAIServer) -> None:
    transport = OpenAITransport(
        API_KEY, HttpOptions(base_url=openai_server.base_url, headers={"X-Team": "ledger"})
    )
    openai_server.reply_error(401, f"Incorrect API key provided: {API_KEY}", "invalid_api_key")
    with pytest.raises(ClientError) as caught:
        transport.generate(request())
    transport.close()
    recorded = openai_server.requests[-1]
    assert recorded.headers["authorization"] == f"Bearer {API_KEY}"
    assert recorded.headers["x-team"] == "ledger"
    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(caught.value.details)
    assert API_KEY not in repr(transport)
    assert caught.value.code == 401
    assert caught.value.details["error"]["reason"] == "invalid_api_key"


def test_generation_config_maps_to_openai_fields() -> None:
    body = chat_request(
        request(
            user("Hi"),
            generationConfig={
                "temperature": 0.3,
                "topP": 0.9,
                "topK": 20,
                "maxOutputTokens": 64,
                "stopSequences": ["END"],
                "seed": 42,
                "candidateCount": 2,
                "presencePenalty": 0.5,
                "frequencyPenalty": 0.25,
                "thinkingConfig": {"thinkingBudget": 0},
            },
        ),
        stream=True,
    )
    assert body == {
        "model": "scripted-model",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 20,
        "max_tokens": 64,
        "stop": ["END"],
        "seed": 42,
        "n": 2,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_json_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = chat_request(
        request(generationConfig={"responseMimeType": "application/json"}), stream=False
    )
    assert body["response_format"] == {"type": "json_object"}
    body = chat_request(
        request(
            generationConfig={"responseMimeType": "application/json", "responseJsonSchema": schema}
        ),
        stream=False,
    )
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }
    with pytest.raises(InvalidInputError):
        chat_request(request(generationConfig={"responseMimeType": "text/x.enum"}), stream=False)


def test_system_instruction_and_a_multi_turn_history(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    openai_server.reply_text("Paris, still.")
    transport.generate(
        request(
            user("Capital of France?"),
            model("Paris."),
            {"role": "user", "parts": [{"text": "And"}, {"text": "now?"}]},
            systemInstruction={"parts": [{"text": "Be brief."}, {"text": "Be kind."}]},
        )
    )
    assert last_body(openai_server)["messages"] == [
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And\nnow?"},
    ]


def test_model_thoughts_are_not_sent_back_and_images_are() -> None:
    messages = chat_messages(
        [
            {
                "role": "user",
                "parts": [
                    {"text": "What is this?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo_-A"}},
                ],
            },
            {
                "role": "model",
                "parts": [{"text": "Hmm", "thought": True}, {"text": "A "}, {"text": "logo."}],
            },
        ]
    )
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo/+A=="},
                },
            ],
        },
        {"role": "assistant", "content": "A logo."},
    ]


def test_parts_the_protocol_cannot_carry_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="executableCode"):
        chat_messages([{"role": "user", "parts": [{"executableCode": {"code": "1+1"}}]}])
    with pytest.raises(InvalidInputError, match="inlineData"):
        chat_messages(
            [{"role": "user", "parts": [{"inlineData": {"mimeType": "audio/wav", "data": "AA"}}]}]
        )
    with pytest.raises(InvalidInputError, match="googleSearch"):
        chat_request(request(tools=[{"googleSearch": {}}]), stream=False)


WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parametersJsonSchema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TIME = {
    "name": "get_time",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "zone": {"type": "STRING", "nullable": True, "enum": ["UTC", "CET"], "format": "enum"},
            "hours": {"type": "ARRAY", "items": {"type": "INTEGER"}, "minItems": 1},
        },
        "required": ["zone"],
        "propertyOrdering": ["zone", "hours"],
    },
}


def test_tools_map_to_functions_with_json_schema() -> None:
    body = chat_request(request(tools=[{"functionDeclarations": [WEATHER, TIME]}]), stream=False)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER["parametersJsonSchema"],
            },
        },
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "zone": {"type": ["string", "null"], "enum": ["UTC", "CET"]},
                        "hours": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
                    },
                    "required": ["zone"],
                },
            },
        },
    ]
    assert "tool_choice" not in body


def test_json_schema_from_gemini_handles_any_of_and_examples() -> None:
    schema = {
        "anyOf": [{"type": "STRING"}, {"type": "NUMBER"}],
        "nullable": True,
        "example": "x",
        "title": "T",
    }
    assert json_schema_from_gemini(schema) == {
        "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}],
        "examples": ["x"],
        "title": "T",
    }


@pytest.mark.parametrize(
    ("calling", "choice", "names"),
    [
        ({"mode": "AUTO"}, "auto", ["get_weather", "get_time"]),
        ({"mode": "NONE"}, "none", ["get_weather", "get_time"]),
        ({"mode": "ANY"}, "required", ["get_weather", "get_time"]),
        (
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
            {"type": "function", "function": {"name": "get_time"}},
            ["get_weather", "get_time"],
        ),
        (
            {"mode": "any", "allowedFunctionNames": ["get_time", "get_weather"]},
            "required",
            ["get_weather", "get_time"],
        ),
    ],
)
def test_tool_config_maps_to_tool_choice(
    calling: dict[str, Any], choice: Any, names: list[str]
) -> None:
    body = chat_request(
        request(
            tools=[{"functionDeclarations": [WEATHER, TIME]}],
            toolConfig={"functionCallingConfig": calling},
        ),
        stream=False,
    )
    assert body["tool_choice"] == choice
    assert [tool["function"]["name"] for tool in body["tools"]] == names


def test_any_with_some_allowed_names_sends_only_those_tools() -> None:
    third = {"name": "get_date"}
    body = chat_request(
        request(
            tools=[{"functionDeclarations": [WEATHER, TIME, third]}],
            toolConfig={
                "functionCallingConfig": {
                    "mode": "ANY",
                    "allowedFunctionNames": ["get_date", "get_time"],
                }
            },
        ),
        stream=False,
    )
    assert body["tool_choice"] == "required"
    assert [tool["function"]["name"] for tool in body["tools"]] == ["get_time", "get_date"]
    assert body["tools"][1]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_function_calls_and_responses_round_trip_as_tool_messages() -> None:
    messages = chat_messages(
        [
            user("Weather in Paris and Rome, and the time?"),
            {
                "role": "model",
                "parts": [
                    {"text": "Let me check."},
                    {
                        "functionCall": {
                            "name": "get_weather",
                            "args": {"city": "Paris"},
                            "id": "call_a",
                        }
                    },
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                    {"functionCall": {"name": "get_time", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "get_weather",
                            "response": {"result": "sunny"},
                            "id": "call_a",
                        }
                    },
                    {"functionResponse": {"name": "get_weather", "response": {"result": "rain"}}},
                    {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
                ],
            },
            model("Sunny in Paris, rain in Rome, noon."),
        ]
    )
    assert messages == [
        {"role": "user", "content": "Weather in Paris and Rome, and the time?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_1_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
                {
                    "id": "call_1_3",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": '{"result":"sunny"}'},
        {"role": "tool", "tool_call_id": "call_1_2", "content": '{"result":"rain"}'},
        {"role": "tool", "tool_call_id": "call_1_3", "content": '{"result":"noon"}'},
        {"role": "assistant", "content": "Sunny in Paris, rain in Rome, noon."},
    ]
    # The generated ids depend only on the contents: the same history maps the same way.
    assert (
        chat_messages(
            [user("x"), {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}]
        )[1]["tool_calls"][0]["id"]
        == "call_1_0"
    )


def test_a_function_call_alone_has_empty_content() -> None:
    # Not null: llama.cpp's server answers HTTP 500 to content null beside tool_calls.
    messages = chat_messages(
        [user("x"), {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]}]
    )
    assert messages[1]["content"] == ""
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"a": 1}


def test_a_function_response_that_answers_no_call_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="answers no functionCall"):
        chat_messages(
            [
                user("x"),
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]},
            ]
        )


# --------------------------------------------------------------------------- responses


def test_tool_calls_in_a_response_become_function_calls(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    openai_server.reply_json(
        completion(
            None,
            finish_reason="tool_calls",
            tool_calls=[
                tool_call("get_weather", {"city": "Paris"}, "call_x"),
                tool_call("get_time", "", None),
            ],
        )
    )
    response = transport.generate(request(tools=[{"functionDeclarations": [WEATHER]}]))
    first = candidate(response)
    assert first["finishReason"] == "STOP"
    assert first["content"]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_x"}},
        {"functionCall": {"name": "get_time", "args": {}}},
    ]
    assert response["usageMetadata"] == {
        "promptTokenCount": 7,
        "candidatesTokenCount": 5,
        "totalTokenCount": 12,
    }
    assert response["modelVersion"] == "scripted-model"


def test_invalid_tool_call_arguments_are_an_invalid_response(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    openai_server.reply_json(
        completion(None, finish_reason="tool_calls", tool_calls=[tool_call("f", "{oops")])
    )
    with pytest.raises(InvalidResponseError, match="not valid JSON"):
        transport.generate(request())
    openai_server.reply_json(
        completion(None, finish_reason="tool_calls", tool_calls=[tool_call("f", "[1, 2]")])
    )
    with pytest.raises(InvalidResponseError, match="not a JSON object"):
        transport.generate(request())


def test_streamed_tool_call_deltas_are_accumulated_and_emitted_whole(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    deltas = [
        {
            "index": 0,
            "id": "call_p",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"ci'}},
        {
            "index": 1,
            "id": "call_r",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city"'},
        },
        {"index": 0, "function": {"arguments": 'ty": "Paris"}'}},
        {"index": 1, "function": {"arguments": ': "Rome"}'}},
    ]
    openai_server.reply_sse(
        text_events(["Checking"], finish_reason="tool_calls", tool_call_deltas=deltas)
    )
    chunks = list(transport.stream(request(tools=[{"functionDeclarations": [WEATHER]}])))
    assert [response_text(chunk) for chunk in chunks[:-1]] == ["Checking"]
    last = chunks[-1]
    assert candidate(last)["finishReason"] == "STOP"
    assert candidate(last)["content"]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_p"}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}, "id": "call_r"}},
    ]
    # The usage-only event that follows the finish lands on the same, last chunk.
    assert last["usageMetadata"]["totalTokenCount"] == 8
    assert last_body(openai_server)["stream_options"] == {"include_usage": True}


def test_invalid_streamed_tool_call_arguments_are_an_invalid_response(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    deltas = [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{nope"}}]
    openai_server.reply_sse(text_events([], finish_reason="tool_calls", tool_call_deltas=deltas))
    with pytest.raises(InvalidResponseError):
        list(transport.stream(request()))


def _message(**fields: Any) -> dict[str, Any]:
    return completion(choices=[{"index": 0, "message": {"role": "assistant", **fields}}])


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        (_message(tool_calls=[tool_call("f", {}, call_id=7)]), "whose id is a JSON int"),  # type: ignore[arg-type]
        (
            _message(tool_calls=[{"id": "c", "function": {"name": "f", "arguments": [1, 2]}}]),
            "are a JSON list",
        ),
        (
            _message(tool_calls=[tool_call("f", "[" * 100_000 + "]" * 100_000)]),
            "not valid JSON",
        ),
        (_message(content=[{"type": "text", "text": {"a": 1}}]), "whose text is a JSON dict"),
        (_message(content={"text": "hi"}), "content that is a JSON dict"),
    ],
    ids=["call-id", "arguments", "deep-arguments", "part-text", "content"],
)
def test_fields_of_the_wrong_type_are_an_invalid_response(
    openai_server: OpenAIServer, transport: OpenAITransport, body: dict[str, Any], phrase: str
) -> None:
    """A field of the wrong type was turned into its ``str()`` (a tool call id ``7``, a
    text ``{'a': 1}``) or dropped (arguments ``[1, 2]`` became ``{}``): each is refused."""
    openai_server.reply_json(body)
    with pytest.raises(InvalidResponseError, match=phrase):
        transport.generate(request())


@pytest.mark.parametrize(
    ("delta", "phrase"),
    [
        ({"index": 0, "id": 7, "function": {"name": "f", "arguments": "{}"}}, "id is a JSON int"),
        (
            {"index": 0, "id": "c", "function": {"name": ["f"], "arguments": "{}"}},
            "name is a JSON list",
        ),
        ({"index": 0, "id": "c", "function": {"name": "f", "arguments": 3}}, "are a JSON int"),
    ],
    ids=["call-id", "name", "arguments"],
)
def test_streamed_tool_call_fields_of_the_wrong_type_are_an_invalid_response(
    openai_server: OpenAIServer, transport: OpenAITransport, delta: dict[str, Any], phrase: str
) -> None:
    openai_server.reply_sse(text_events([], finish_reason="tool_calls", tool_call_deltas=[delta]))
    with pytest.raises(InvalidResponseError, match=phrase):
        list(transport.stream(request()))


def test_endless_tool_call_arguments_stop_at_the_answer_limit(openai_server: OpenAIServer) -> None:
    """Tool-call arguments are accumulated until the call is complete: a server that
    never completes one is stopped by ``max_response_bytes`` like any other answer."""
    piece = {"index": 0, "function": {"arguments": "x" * 1000}}
    deltas = [{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a": "'}}]
    deltas += [piece] * 200
    openai_server.reply_sse(text_events([], finish_reason="tool_calls", tool_call_deltas=deltas))
    transport = OpenAITransport(
        None, HttpOptions(base_url=openai_server.base_url, max_response_bytes=50_000)
    )
    with pytest.raises(InvalidResponseError, match=r"max_response_bytes \(50000 bytes\)"):
        list(transport.stream(request()))
    transport.close()


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", "STOP"),
        ("length", "MAX_TOKENS"),
        ("content_filter", "SAFETY"),
        ("tool_calls", "STOP"),
        ("weird", "OTHER"),
    ],
)
def test_finish_reasons(
    openai_server: OpenAIServer, transport: OpenAITransport, reason: str, expected: str
) -> None:
    openai_server.reply_text("x", finish_reason=reason)
    assert candidate(transport.generate(request()))["finishReason"] == expected
    openai_server.reply_sse(text_events(["x"], finish_reason=reason))
    assert candidate(list(transport.stream(request()))[-1])["finishReason"] == expected


def test_reasoning_comes_back_as_thoughts_and_usage_counts_them(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    body = completion(
        "42",
        usage={
            "prompt_tokens": 10,
            "completion_tokens": 30,
            "total_tokens": 40,
            "completion_tokens_details": {"reasoning_tokens": 20},
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    )
    body["choices"][0]["message"]["reasoning_content"] = "Six times seven."
    openai_server.reply_json(body)
    response = transport.generate(request())
    assert candidate(response)["content"]["parts"] == [
        {"text": "Six times seven.", "thought": True},
        {"text": "42"},
    ]
    assert response_text(response) == "42"
    assert response["usageMetadata"] == {
        "promptTokenCount": 10,
        "candidatesTokenCount": 10,
        "thoughtsTokenCount": 20,
        "totalTokenCount": 40,
        "cachedContentTokenCount": 4,
    }


def test_several_choices_become_several_candidates(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    openai_server.reply_json(
        completion(
            choices=[
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "A"},
                    "finish_reason": "stop",
                },
                {
                    "index": 1,
                    "message": {"role": "assistant", "content": "B"},
                    "finish_reason": "length",
                },
            ]
        )
    )
    response = transport.generate(request(generationConfig={"candidateCount": 2}))
    assert [
        (c["index"], c["content"]["parts"], c["finishReason"]) for c in response["candidates"]
    ] == [
        (0, [{"text": "A"}], "STOP"),
        (1, [{"text": "B"}], "MAX_TOKENS"),
    ]
    assert last_body(openai_server)["n"] == 2


def test_a_server_that_does_not_stream_still_gives_one_chunk(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    openai_server.reply_text("all at once")
    chunks = list(transport.stream(request()))
    assert len(chunks) == 1
    assert response_text(chunks[0]) == "all at once"
    assert candidate(chunks[0])["finishReason"] == "STOP"


def test_a_stream_without_usage_ends_with_the_finish_chunk(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    # llama.cpp's server ignores stream_options and reports no usage for streams.
    openai_server.reply_sse(text_events(["a", "b"], include_usage=False))
    chunks = list(transport.stream(request()))
    assert [response_text(chunk) for chunk in chunks] == ["a", "b", ""]
    assert "usageMetadata" not in chunks[-1]
    assert candidate(chunks[-1])["finishReason"] == "STOP"


# --------------------------------------------------------------------------- errors


def test_a_stream_that_ends_without_finishing_is_a_connection_error(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    events = text_events(["Hel", "lo"], done=False)[:3]  # no finish event, no [DONE]
    openai_server.reply_sse(events)
    with pytest.raises(ModelConnectionError, match="ended before"):
        list(transport.stream(request()))


def test_a_stream_with_nothing_but_done_is_an_invalid_response(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    openai_server.reply_sse(["[DONE]"])
    with pytest.raises(InvalidResponseError, match="without any answer"):
        list(transport.stream(request()))


@pytest.mark.parametrize("status", [400, 500])
def test_an_error_event_mid_stream_raises_by_its_code(
    openai_server: OpenAIServer, transport: OpenAITransport, status: int
) -> None:
    events = text_events(["Hel"], done=False)[:2]
    events.append({"error": {"message": "overloaded", "type": "server_error", "code": status}})
    openai_server.reply_sse(events)
    received = []
    with pytest.raises(ClientError if status == 400 else ServerError) as caught:
        for chunk in transport.stream(request()):
            received.append(chunk)
    assert [response_text(chunk) for chunk in received] == ["Hel"]
    assert caught.value.code == status
    assert caught.value.status == "server_error"
    assert caught.value.error_message == "overloaded"


@pytest.mark.parametrize(
    ("status", "body", "error_class", "status_name", "message"),
    [
        (
            400,
            {
                "object": "error",
                "message": "too long",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            ClientError,
            "BadRequestError",
            "too long",
        ),  # vLLM
        (
            404,
            {"error": "model 'llama9' not found"},
            ClientError,
            "NOT_FOUND",
            "model 'llama9' not found",
        ),  # Ollama
        (
            422,
            {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
            ClientError,
            "INVALID_ARGUMENT",
            None,
        ),
        (
            503,
            {"error": {"message": "busy", "code": "overloaded"}},
            ServerError,
            "UNAVAILABLE",
            "busy",
        ),
    ],
)
def test_error_bodies_of_other_servers(
    openai_server: OpenAIServer,
    transport: OpenAITransport,
    status: int,
    body: Any,
    error_class: type[Exception],
    status_name: str,
    message: str | None,
) -> None:
    openai_server.reply_json(body, status=status)
    with pytest.raises(error_class) as caught:
        transport.generate(request())
    error = caught.value
    assert error.code == status  # type: ignore[attr-defined]
    assert error.status == status_name  # type: ignore[attr-defined]
    if message is not None:
        assert error.error_message == message  # type: ignore[attr-defined]
    else:
        assert "field required" in error.error_message  # type: ignore[attr-defined]


def test_an_html_error_page_is_a_server_error(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    openai_server.reply_raw(b"<html>Bad Gateway</html>", status=502)
    with pytest.raises(ServerError) as caught:
        transport.generate(request())
    assert caught.value.code == 502
    assert caught.value.status == "UNAVAILABLE"
    assert caught.value.error_message == "<html>Bad Gateway</html>"


def test_a_json_body_without_choices_is_an_invalid_response(
    openai_server: OpenAIServer, transport: OpenAITransport
) -> None:
    openai_server.reply_json({"id": "x", "object": "chat.completion"})
    with pytest.raises(InvalidResponseError, match="no choices"):
        transport.generate(request())


def test_an_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = OpenAITransport(None, HttpOptions(base_url=f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(ModelConnectionError, match="cannot reach"):
        transport.generate(request())
    transport.close()


def test_a_slow_server_is_a_timeout(openai_server: OpenAIServer) -> None:
    transport = OpenAITransport(None, HttpOptions(base_url=openai_server.base_url, timeout=100))
    openai_server.reply_json(completion("late"), delay=1.0)
    with pytest.raises(ModelTimeoutError):
        transport.generate(request())
    transport.close()


def test_invalid_options_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        OpenAITransport(None, HttpOptions(base_url="127.0.0.1:8000/v1"))
    with pytest.raises(InvalidInputError):
        chat_request(request(model_name="openai/"), stream=False)


# --------------------------------------------------------------------------- chats


def test_a_base_url_ending_in_v1_routes_to_this_transport(openai_server: OpenAIServer) -> None:
    assert transport_kind("anything", HttpOptions(base_url=openai_server.base_url)) == "openai"
    assert transport_kind("openai/gpt-4o", None) == "openai"


def test_a_client_sends_its_own_key_never_the_gemini_key_from_the_environment(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-from-the-environment")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    openai_server.reply_text("one").reply_text("two")
    with chatledger.Client(http_options={"base_url": openai_server.base_url}) as client:
        client.chats.create(model="m").send_message("Hi")
    assert "authorization" not in openai_server.requests[-1].headers
    with chatledger.Client(API_KEY, http_options={"base_url": openai_server.base_url}) as client:
        client.chats.create(model="m").send_message("Hi")
    assert openai_server.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"


def test_a_chat_with_automatic_function_calling(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    openai_server.reply_json(
        completion(
            None,
            finish_reason="tool_calls",
            tool_calls=[tool_call("get_weather", {"city": "Paris"}, "call_w")],
        )
    )
    openai_server.reply_text("It is sunny in Paris.")
    with chatledger.Client(
        http_options={"base_url": openai_server.base_url}, store=str(tmp_path / "chat.db")
    ) as client:
        chat = client.chats.create(model="some-model", config={"tools": [get_weather]})
        reply = chat.send_message("Weather in Paris?")
        assert reply.text == "It is sunny in Paris."
        events = chat.events()
    first, second = (r.body for r in openai_server.requests)
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_w"
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_w",
        "content": '{"result":"sunny in Paris"}',
    }
    types = [event.type for event in events]
    assert types.count("function_called") == 1 and types.count("function_responded") == 1
    started = [event.data for event in events if event.type == "model_call_started"]
    assert {data.transport for data in started} == {"openai"}  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- a real llama.cpp server


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` with SmolLM2 on a free port; its base URL."""
    with run_llama_server(tmp_path_factory.mktemp("llama_server")) as base_url:
        yield base_url


def real_model_request(model_name: str, max_output_tokens: int | None = None) -> ModelRequest:
    """A request a real model answers with text: deterministic sampling, a few tokens."""
    if max_output_tokens:
        prompt, limit = (
            "Write a long story about a brave dragon and a small village.",
            max_output_tokens,
        )
    else:
        prompt, limit = "Write two sentences about the sea.", 24
    return ModelRequest(
        model=model_name,
        contents=[user(prompt)],
        config={"generationConfig": {"temperature": 0, "seed": 7, "maxOutputTokens": limit}},
    )


class LlamaServerHarness(Harness):
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.transport = OpenAITransport(None, HttpOptions(base_url=base_url))

    def prepare(self, *, stream: bool, max_output_tokens: int | None = None) -> Prepared:
        return Prepared(real_model_request("smollm2", max_output_tokens))

    def transport_with(self, **http_options: Any) -> OpenAITransport:
        return OpenAITransport(None, HttpOptions(base_url=self.base_url, **http_options))

    def slow_request(self, *, stream: bool) -> ModelRequest:
        return real_model_request("smollm2", 400)


class TestLlamaServerContract(TransportContract, TimeoutContract):
    @pytest.fixture
    def harness(self, llama_server: str) -> Iterator[Harness]:
        harness = LlamaServerHarness(llama_server)
        yield harness
        harness.transport.close()


def test_a_chat_through_the_llama_server(llama_server: str, tmp_path: Path) -> None:
    with chatledger.Client(
        http_options={"base_url": llama_server}, store=str(tmp_path / "chat.db")
    ) as client:
        config = {"max_output_tokens": 24, "temperature": 0, "seed": 7}
        check_a_chat(client, "smollm2", config, "openai")
