"""Function calling with a real model: SmolLM2-135M-Instruct served by llama.cpp's
OpenAI-compatible server, through chatledger's OpenAI-compatible transport.

The server runs ``python -m llama_cpp.server --chat_format chatml-function-calling``:
llama-cpp-python's generic tool-use format for chatml models (SmolLM2's own template is
chatml; the ``functionary`` formats need functionary models). With a forced tool choice
(``tool_config`` mode ``ANY`` with one allowed name, which the transport sends as
``tool_choice: {"type": "function", "function": {"name": ...}}``), that format appends
``functions.<name>:`` to the prompt and constrains the completion with a grammar built
from the function's JSON Schema, so even this tiny model always produces a parseable
call; the tests assert its structure, never the model's words.

A forced call comes back parseable, streamed or not, and once (llama.cpp's server sends
a non-streamed call in both ``tool_calls`` and the deprecated ``function_call`` field;
the transport reads the latter only when the former is absent). End to end, the call is
run by automatic function calling and recorded, then the model answers in text (the
transport sends a function-call turn back with ``content: ""``, which that server
requires).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import chatledger
from chatledger.cli import cli
from chatledger.events.kinds import FunctionCalled, FunctionResponded, ModelResponded
from tests.support.llama_server import llama_server

pytestmark = pytest.mark.local_model

FORCED = {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["get_weather"]}}
DETERMINISTIC = {"temperature": 0, "seed": 7, "max_output_tokens": 64}


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` with SmolLM2 and the chatml-function-calling chat
    format on a free loopback port; its base URL (``.../v1``)."""
    log_dir = tmp_path_factory.mktemp("llama_tool_server")
    with llama_server(log_dir, "--chat_format", "chatml-function-calling") as base_url:
        yield base_url


class WeatherService:
    """A Python function tool that remembers how it was called."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def tool(self) -> Any:
        def get_weather(city: str) -> dict[str, Any]:
            """Get the current weather in a city.

            Args:
                city: The name of the city.
            """
            self.calls.append({"city": city})
            return {"city": city, "temperature_c": 21, "sky": "sunny"}

        return get_weather


def _send(
    chat: chatledger.Chat, message: str, mode: str, config: Any = None
) -> chatledger.types.GenerateContentResponse:
    if mode == "send":
        return chat.send_message(message, config=config)
    chunks = list(chat.send_message_stream(message, config=config))
    assert chunks
    last = chat.last
    assert last is not None
    return last


@pytest.mark.parametrize("mode", ["send", "stream"])
def test_a_forced_tool_choice_gives_a_parseable_call(
    tool_server: str, tmp_path: Path, mode: str
) -> None:
    """AFC off: the call is returned. The grammar of the chat format makes it parse."""
    service = WeatherService()
    with chatledger.Client(
        http_options={"base_url": tool_server}, store=str(tmp_path / "log.db")
    ) as client:
        chat = client.chats.create(
            model="smollm2",
            config={
                "tools": [service.tool()],
                "tool_config": FORCED,
                "automatic_function_calling": {"disable": True},
                **DETERMINISTIC,
            },
        )
        response = _send(chat, "What is the weather like in Paris?", mode)

        calls = response.function_calls
        assert calls, response.to_wire()
        for call in calls:
            assert call.name == "get_weather"
            assert call.args is not None and set(call.args) == {"city"}
            assert isinstance(call.args["city"], str) and call.args["city"].strip()
        assert service.calls == []  # not run: AFC is off
        (responded,) = [e.data for e in chat.events() if isinstance(e.data, ModelResponded)]
        recorded = responded.response["candidates"][0]["content"]["parts"]
        assert [part["functionCall"]["name"] for part in recorded] == ["get_weather"] * len(calls)
        assert responded.streamed is (mode == "stream")
        assert chat.verify().ok


def test_a_non_streamed_forced_call_comes_back_once(tool_server: str, tmp_path: Path) -> None:
    with chatledger.Client(
        http_options={"base_url": tool_server}, store=str(tmp_path / "log.db")
    ) as client:
        chat = client.chats.create(
            model="smollm2",
            config={
                "tools": [WeatherService().tool()],
                "tool_config": FORCED,
                "automatic_function_calling": {"disable": True},
                **DETERMINISTIC,
            },
        )
        response = chat.send_message("What is the weather like in Paris?")
        assert response.function_calls is not None and len(response.function_calls) == 1


@pytest.mark.parametrize("mode", ["send", "stream"])
def test_a_forced_call_is_run_and_recorded_end_to_end(
    tool_server: str, tmp_path: Path, mode: str
) -> None:
    """Turn 1: the forced call is run by automatic function calling and recorded with
    the arguments the model produced; the tool choice stays forced for the turn, so the
    model calls again and the budget (2 model calls) ends the turn on that unexecuted
    call. Turn 2 (mode NONE): the model answers in text, with the answered call and its
    response in the request and the unanswered one left out (SEMANTICS §2)."""
    service = WeatherService()
    db_path = tmp_path / "log.db"
    with chatledger.Client(http_options={"base_url": tool_server}, store=str(db_path)) as client:
        chat = client.chats.create(
            model="smollm2",
            config={
                "tools": [service.tool()],
                "tool_config": FORCED,
                "automatic_function_calling": {"maximum_remote_calls": 2},
                **DETERMINISTIC,
            },
        )
        first = _send(chat, "What is the weather like in Paris?", mode)
        assert first.function_calls and first.function_calls[0].name == "get_weather"

        events = chat.events()
        assert [e.type for e in events] == [
            "conversation_started",
            "user_message_added",
            "model_call_started",
            "model_responded",
            "function_called",
            "function_responded",
            "model_call_started",
            "model_responded",
        ]
        model_call = events[3].data
        called = events[4].data
        responded = events[5].data
        assert isinstance(model_call, ModelResponded) and not model_call.ends_turn
        assert isinstance(called, FunctionCalled) and isinstance(responded, FunctionResponded)
        produced = model_call.response["candidates"][0]["content"]["parts"][0]["functionCall"]
        # The function ran once, with exactly the arguments the model produced.
        assert called.name == "get_weather" and called.args == produced["args"]
        assert service.calls == [called.args]
        assert called.call_id == produced.get("id")
        assert responded.error is None and responded.duration_ms >= 0
        assert responded.response == {
            "result": {"city": called.args["city"], "temperature_c": 21, "sky": "sunny"}
        }

        history = [content.to_wire() for content in chat.get_history()]
        assert [content["role"] for content in history] == ["user", "model", "user", "model"]
        assert "functionCall" in history[1]["parts"][0]
        assert history[2]["parts"][0]["functionResponse"]["response"] == responded.response
        assert "functionCall" in history[3]["parts"][0]  # left unexecuted by the budget

        final = _send(
            chat,
            "Say in one sentence what the weather is.",
            mode,
            config={"tool_config": {"function_calling_config": {"mode": "NONE"}}},
        )
        assert final.text and final.text.strip()
        assert not final.function_calls
        assert [content["role"] for content in (c.to_wire() for c in chat.get_history())][-2:] == [
            "user",
            "model",
        ]
        context = [content.to_wire() for content in chat.get_context()]
        assert context[:3] == history[:3] and all(
            "functionCall" not in part for content in context[3:] for part in content["parts"]
        )
        assert len(service.calls) == 1
        assert chat.verify().ok
        conversation_id = chat.id

    # The audit: `chatledger log ID` shows which function ran, with what arguments.
    result = CliRunner().invoke(cli, ["--db", str(db_path), "log", conversation_id])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "function_" in line]
    assert len(lines) == 2
    assert "get_weather(" in lines[0] and called.args["city"] in lines[0]
    assert "get_weather →" in lines[1] and "sunny" in lines[1]
