"""Differential tests against google-genai 3.3.0 on one loopback server: automatic function calling,
sync, streamed and async.

Every scenario runs through google-genai's chat and through chatledger's chat, against
the same :class:`GeminiServer` with identical scripted replies, and compares the request
bodies, the full histories, and google-genai's curated history with chatledger's context
(docs/chat-api.md). Each chatledger run is also reopened by a fresh client from the same
SQLite file, and must rebuild to identical histories (``Differential._finish``). Where
chatledger deliberately differs, a test shows the difference precisely and names it
(docs/differences.md). Fixtures and normal forms: ``tests/support/differential.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.differential import (
    TURN_EVENTS,
    Differential,
    adiff,
    assert_same,
    capture,
    diff,
    model,
    sse,
    stream_texts,
    text_chunk,
    user,
)
from tests.support.gemini_server import text_response

# The shared fixtures, used by name in the tests' arguments.
FIXTURES = (adiff, diff)


# =========================================================================== automatic function calling


def get_weather(city: str) -> dict:  # type: ignore[type-arg]
    """The weather in a city."""
    return {"temp_c": 21, "city": city}


async def aget_weather(city: str) -> dict:  # type: ignore[type-arg]
    """The weather in a city."""
    await asyncio.sleep(0)
    return {"temp_c": 21, "city": city}


def afc_call(name: str = "get_weather") -> dict[str, Any]:
    return text_response(parts=[{"functionCall": {"name": name, "args": {"city": "Paris"}}}])


AFC_CALL = afc_call()
AFC_FULL = [
    user("Weather in Paris?"),
    {
        "role": "model",
        "parts": [{"function_call": {"name": "get_weather", "args": {"city": "Paris"}}}],
    },
    {
        "role": "user",
        "parts": [
            {
                "function_response": {
                    "name": "get_weather",
                    "response": {"result": {"temp_c": 21, "city": "Paris"}},
                }
            }
        ],
    },
    model("21 C in Paris."),
]


def test_automatic_function_calling(diff: Differential) -> None:
    def script(chat: Any, t: Any) -> Any:
        return [chat.send_message("Weather in Paris?").text, chat.send_message("Thanks").text]

    replies = [AFC_CALL, text_response("21 C in Paris."), text_response("Bye")]
    g, led = diff.run(replies, script, config={"tools": [get_weather]})

    assert g.observed == led.observed == ["21 C in Paris.", "Bye"]
    assert_same(g, led)
    assert led.full == [*AFC_FULL, user("Thanks"), model("Bye")]
    declaration = led.requests[0].body["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather"
    assert declaration["parametersJsonSchema"]["properties"] == {"city": {"type": "string"}}
    assert led.events == [
        "conversation_started",
        "user_message_added",
        "model_call_started",
        "model_responded",
        "function_called",
        "function_responded",
        "model_call_started",
        "model_responded",
        *TURN_EVENTS,
    ]


def test_automatic_function_calling_stream(diff: Differential) -> None:
    def script(chat: Any, t: Any) -> Any:
        return stream_texts(chat, "Weather in Paris?")

    replies = [sse(AFC_CALL), sse(text_chunk("21 C in Paris.", "STOP"))]
    g, led = diff.run(replies, script, config={"tools": [get_weather]})

    assert g.observed == led.observed == [None, "21 C in Paris."]
    assert_same(g, led)
    assert led.full == AFC_FULL


async def test_async_automatic_function_calling(adiff: Differential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        return (await chat.send_message("Weather in Paris?")).text

    replies = [afc_call("aget_weather"), text_response("21 C in Paris.")]
    g, led = await adiff.arun(replies, script, config={"tools": [aget_weather]})

    assert g.observed == led.observed == "21 C in Paris."
    assert_same(g, led)
    assert [content["role"] for content in led.full] == ["user", "model", "user", "model"]
    assert led.full[2]["parts"][0]["function_response"]["name"] == "aget_weather"


def test_unknown_function_name_in_automatic_function_calling(diff: Differential) -> None:
    """docs/differences.md#unknown-functions: google-genai raises KeyError for a call to a function that is not
    among the tools, and records nothing; chatledger answers the call with an error
    naming the function and goes on."""

    def script(chat: Any, t: Any) -> Any:
        outcome = capture(lambda: chat.send_message("Weather in Paris?"))
        return outcome if isinstance(outcome, Exception) else outcome.text

    replies = [afc_call("get_forecast"), text_response("Sorry, no forecast.")]
    g = diff.run_genai(replies[:1], script, config={"tools": [get_weather]})
    led = diff.run_ledger(replies, script, config={"tools": [get_weather]})

    assert isinstance(g.observed, KeyError) and g.observed.args == ("get_forecast",)
    assert g.full == []
    assert led.observed == "Sorry, no forecast."
    assert led.bodies[0] == g.bodies[0]
    error = "function 'get_forecast' is not among this chat's tools; it was not called"
    answer = {"functionResponse": {"name": "get_forecast", "response": {"error": error}}}
    assert led.contents[1][-1] == {"role": "user", "parts": [answer]}
    (responded,) = led.event_data("function_responded")
    assert (responded.name, responded.error) == ("get_forecast", error)


def test_curated_means_the_seeds_curated(diff: Differential) -> None:
    """docs/differences.md#curated: google-genai's curated history is what the next request sends
    (chatledger's context); chatledger's curated history is the conversation as a person
    reads it: valid turns only, function call and response steps removed."""
    history = [user("a"), {"role": "model", "parts": []}]  # an invalid turn

    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("Weather in Paris?").text

    replies = [AFC_CALL, text_response("21 C in Paris.")]
    g, led = diff.run(replies, script, config={"tools": [get_weather]}, history=history)

    assert g.observed == led.observed == "21 C in Paris."
    assert_same(g, led)
    assert g.context == led.context == AFC_FULL  # invalid turn out, function steps in
    assert led.curated == [user("Weather in Paris?"), model("21 C in Paris.")]
    assert led.full == g.full == [*history, *AFC_FULL]


def test_automatic_function_calling_content_classes(diff: Differential) -> None:
    """The message is a ``UserContent``; the call, the function response and the answer
    are ``Content``, as in google-genai (pydantic equality compares classes)."""

    def script(chat: Any, t: Any) -> Any:
        chat.send_message("Weather in Paris?")
        return [type(content).__name__ for content in chat.get_history()]

    g, led = diff.run(
        [AFC_CALL, text_response("21 C in Paris.")], script, config={"tools": [get_weather]}
    )
    assert g.observed == led.observed == ["UserContent", "Content", "Content", "Content"]
    assert_same(g, led)
