"""Differential tests: chatledger against google-genai 3.3.0, on one loopback server.

Every scenario runs through google-genai's chat and through chatledger's chat, against
the same :class:`GeminiServer` with identical scripted replies, and compares the request
bodies, the full histories, and google-genai's curated history with chatledger's context
(SEMANTICS §3.3). Each chatledger run is also reopened by a fresh client from the same
SQLite file, and must rebuild to identical histories (see ``Differential._finish``).

Where chatledger deliberately differs (SEMANTICS §3), a test shows the difference
precisely, and says which item of §3 it is. Normal forms are in
``tests/support/differential.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.genai import errors as genai_errors

import chatledger
from tests.support.differential import (
    Differential,
    Run,
    base64_fields,
    dump_contents,
    error_signature,
    http_error,
    sse,
    text_chunk,
)
from tests.support.gemini_server import GeminiServer, text_response

WAIT = 10.0  # seconds an event may take before a test gives up (never a duration assertion)

TURN_EVENTS = ["user_message_added", "model_call_started", "model_responded"]
FAILED_TURN_EVENTS = ["user_message_added", "model_call_started", "model_call_failed"]


@pytest.fixture
def diff(gemini_server: GeminiServer, db_path: Path) -> Iterator[Differential]:
    differential = Differential(gemini_server, db_path)
    yield differential
    differential.close()


@pytest.fixture
async def adiff(gemini_server: GeminiServer, db_path: Path) -> AsyncIterator[Differential]:
    differential = Differential(gemini_server, db_path)
    yield differential
    differential.close_resumed()
    await differential.aclose()


def user(*texts: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text} for text in texts]}


def model(*texts: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text} for text in texts]}


def assert_same(genai_run: Run, ledger_run: Run) -> None:
    """Requests, full history and context (google-genai's curated) are identical."""
    assert ledger_run.paths == genai_run.paths
    assert ledger_run.bodies == genai_run.bodies
    assert ledger_run.full == genai_run.full
    assert ledger_run.context == genai_run.context


def capture(call: Any) -> Any:
    """Run ``call``; return its result, or the exception it raised."""
    try:
        return call()
    except Exception as exc:
        return exc


# =========================================================================== plain turns


def test_plain_multi_turn_text(diff: Differential) -> None:
    usage = {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}
    replies = [
        text_response("Hi there", usage=usage),
        text_response("Fine, thanks"),
        text_response("Goodbye"),
    ]

    def script(chat: Any, t: Any) -> Any:
        return [chat.send_message(text).text for text in ("Hello", "How are you?", "Bye")]

    g, led = diff.run(replies, script)

    assert g.observed == led.observed == ["Hi there", "Fine, thanks", "Goodbye"]
    assert_same(g, led)
    assert led.contents[2] == [
        user("Hello"),
        model("Hi there"),
        user("How are you?"),
        model("Fine, thanks"),
        user("Bye"),
    ]
    assert led.full == [*led.contents[2], model("Goodbye")]
    assert led.context == led.full
    assert led.curated == led.full  # no function calls, no invalid turn: all three agree
    assert led.events == ["conversation_started", *TURN_EVENTS * 3]
    assert led.chat.last.text == "Goodbye"


def test_multi_part_user_messages(diff: Differential) -> None:
    image = b"\xfb\xff\xfe\x00"  # standard and URL-safe base64 differ for these bytes

    def script(chat: Any, t: Any) -> Any:
        return [
            chat.send_message(
                ["Describe this", t.Part.from_bytes(data=image, mime_type="image/png")]
            ).text,
            chat.send_message(
                t.Part.from_uri(file_uri="gs://bucket/report.pdf", mime_type="application/pdf")
            ).text,
            chat.send_message([t.Part(text="two"), "strings"]).text,
            chat.send_message(t.Part.from_text(text="a single Part")).text,
        ]

    g, led = diff.run([text_response(f"r{i}") for i in range(4)], script)

    assert g.observed == led.observed == ["r0", "r1", "r2", "r3"]
    assert_same(g, led)
    # chatledger's wire form is canonical camelCase; bytes are URL-safe base64, as google-genai.
    sent = led.requests[3].body["contents"]
    assert sent[0] == {
        "role": "user",
        "parts": [
            {"text": "Describe this"},
            {"inlineData": {"data": "-__-AA==", "mimeType": "image/png"}},
        ],
    }
    assert sent[2] == {
        "role": "user",
        "parts": [
            {"fileData": {"fileUri": "gs://bucket/report.pdf", "mimeType": "application/pdf"}}
        ],
    }
    assert sent[4] == user("two", "strings")
    assert sent[6] == user("a single Part")
    assert base64_fields(led.requests[3].body) == base64_fields(g.requests[3].body) == ["-__-AA=="]
    assert led.full[0]["parts"][1] == {
        "inline_data": {"data": "-__-AA==", "mime_type": "image/png"}
    }


def test_chat_config_is_sent_identically(diff: Differential) -> None:
    config = {
        "system_instruction": "Be terse.",
        "temperature": 0.25,
        "max_output_tokens": 64,
        "stop_sequences": ["END"],
        "seed": 7,
        "response_mime_type": "text/plain",
        "thinking_config": {"include_thoughts": True, "thinking_budget": 128},
        "safety_settings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}
        ],
        "tools": [
            {
                "function_declarations": [
                    {
                        "name": "get_weather",
                        "description": "The weather in a city.",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"city": {"type": "STRING"}},
                            "required": ["city"],
                        },
                    }
                ]
            }
        ],
        "tool_config": {"function_calling_config": {"mode": "AUTO"}},
    }

    def script(chat: Any, t: Any) -> Any:
        return [chat.send_message("one").text, chat.send_message("two").text]

    g, led = diff.run([text_response("1"), text_response("2")], script, config=config)

    assert g.observed == led.observed == ["1", "2"]
    assert_same(g, led)
    body = led.requests[1].body
    assert body["systemInstruction"] == user("Be terse.")
    assert body["generationConfig"] == {
        "temperature": 0.25,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
        "seed": 7,
        "responseMimeType": "text/plain",
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 128},
    }
    assert body["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}
    ]
    assert body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


# =========================================================================== no content


@pytest.mark.parametrize(
    ("reply", "recorded"),
    [
        pytest.param(
            {"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "STOP"}]},
            {"role": "model", "parts": []},
            id="empty-parts",
        ),
        pytest.param(
            {"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}]},
            {"role": "model"},
            id="content-without-parts",
        ),
        pytest.param(
            {"candidates": [{"content": {"role": "model", "parts": [{}]}, "finishReason": "STOP"}]},
            {"role": "model", "parts": [{}]},
            id="one-empty-part",
        ),
        pytest.param(
            {
                "candidates": [
                    {
                        "finishReason": "SAFETY",
                        "safetyRatings": [
                            {
                                "category": "HARM_CATEGORY_HARASSMENT",
                                "probability": "HIGH",
                                "blocked": True,
                            }
                        ],
                    }
                ]
            },
            {"role": "model", "parts": []},
            id="candidate-without-content",
        ),
        pytest.param({"candidates": []}, {"role": "model", "parts": []}, id="empty-candidates"),
        pytest.param({}, {"role": "model", "parts": []}, id="no-candidates"),
        pytest.param(
            {"usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}},
            {"role": "model", "parts": []},
            id="usage-only",
        ),
    ],
)
def test_response_without_model_content(
    diff: Differential, reply: dict[str, Any], recorded: dict[str, Any]
) -> None:
    def script(chat: Any, t: Any) -> Any:
        first = chat.send_message("first")
        return [first.text, chat.send_message("second").text]

    g, led = diff.run([reply, text_response("ok")], script)

    assert g.observed == led.observed == [None, "ok"]
    assert_same(g, led)
    # The invalid turn is in the full history (with a placeholder model content) ...
    assert led.full == [user("first"), recorded, user("second"), model("ok")]
    # ... but never sent again, and not part of the context.
    assert led.contents[1] == [user("second")]
    assert led.context == [user("second"), model("ok")]
    assert led.curated == led.context


def test_blocked_prompt(diff: Differential) -> None:
    blocked = {
        "promptFeedback": {
            "blockReason": "SAFETY",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
            ],
        },
        "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4},
    }

    def script(chat: Any, t: Any) -> Any:
        response = chat.send_message("something dangerous")
        observed = (response.text, response.candidates, response.prompt_feedback.block_reason.value)
        return [observed, chat.send_message("something fine").text]

    g, led = diff.run([blocked, text_response("fine")], script)

    assert g.observed == led.observed == [(None, None, "SAFETY"), "fine"]
    assert_same(g, led)
    assert led.full == [
        user("something dangerous"),
        {"role": "model", "parts": []},
        user("something fine"),
        model("fine"),
    ]
    assert led.contents[1] == [user("something fine")]
    assert led.context == [user("something fine"), model("fine")]


def test_empty_content_object_is_recorded_with_role(diff: Differential) -> None:
    """``"content": {}`` (present but empty). Not listed in SEMANTICS §3: google-genai
    records a role-less ``Content()``, chatledger records ``Content(role="model",
    parts=[])`` as SEMANTICS §2 says for a response with no candidate content. google-genai's
    history then cannot seed a new chat; chatledger's can. Requests and contexts agree."""
    reply = {"candidates": [{"content": {}, "finishReason": "STOP"}]}

    def script(chat: Any, t: Any) -> Any:
        return [chat.send_message("first").text, chat.send_message("second").text]

    g, led = diff.run([reply, text_response("ok")], script)

    assert g.observed == led.observed == [None, "ok"]
    assert led.bodies == g.bodies
    assert led.context == g.context == [user("second"), model("ok")]
    assert g.full == [user("first"), {}, user("second"), model("ok")]
    assert led.full == [user("first"), {"role": "model", "parts": []}, user("second"), model("ok")]
    with pytest.raises(ValueError, match="Role must be user or model, but got None"):
        diff.create_genai(history=g.chat.get_history())
    reseeded = diff.create_ledger(history=led.chat.get_history())
    assert dump_contents(reseeded.get_history()) == led.full


# =========================================================================== model turns


def test_model_turn_with_several_text_parts(diff: Differential) -> None:
    reply = text_response(parts=[{"text": "One. "}, {"text": "Two."}])

    def script(chat: Any, t: Any) -> Any:
        response = chat.send_message("count")
        return [
            response.text,
            len(response.candidates[0].content.parts),
            chat.send_message("again").text,
        ]

    g, led = diff.run([reply, text_response("Three.")], script)

    assert g.observed == led.observed == ["One. Two.", 2, "Three."]
    assert_same(g, led)
    # A non-streamed response is kept as sent: parts are not merged.
    assert led.contents[1] == [user("count"), model("One. ", "Two."), user("again")]


WEATHER_TOOL = {
    "tools": [
        {
            "function_declarations": [
                {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
                }
            ]
        }
    ]
}
CALL = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}


def test_model_turn_with_text_and_function_call(diff: Differential) -> None:
    """A declared (not Python) function: the call comes back to the caller, who answers it
    with a function response Part. Also SEMANTICS §3.3: chatledger's curated history is the
    seed's (function steps removed); google-genai's curated history is chatledger's context."""

    def script(chat: Any, t: Any) -> Any:
        first = chat.send_message("Weather in Paris?")
        call = first.function_calls[0]
        answer = t.Part.from_function_response(name=call.name, response={"temp_c": 21})
        return [first.text, call.name, call.args, chat.send_message(answer).text]

    replies = [text_response(parts=[{"text": "Let me check."}, CALL]), text_response("It is 21 C.")]
    g, led = diff.run(replies, script, config=WEATHER_TOOL)

    assert (
        g.observed
        == led.observed
        == ["Let me check.", "get_weather", {"city": "Paris"}, "It is 21 C."]
    )
    assert_same(g, led)
    answer = {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}],
    }
    assert led.contents[1] == [
        user("Weather in Paris?"),
        {"role": "model", "parts": [{"text": "Let me check."}, CALL]},
        answer,
    ]
    # §3.3: google-genai's curated == chatledger's context, function steps included ...
    assert led.context == g.context == led.full
    assert any("function_call" in part for content in g.context for part in content["parts"])
    # ... while chatledger's curated history is the conversation as a person reads it.
    assert led.curated == [user("Weather in Paris?"), model("Let me check."), model("It is 21 C.")]


def test_unanswered_function_call_is_never_sent(diff: Differential) -> None:
    """SEMANTICS §2, extra rule of the context: a model function call not followed by its
    function response is not sent (google-genai sends it; the API then rejects or
    confuses the turn). The full histories agree."""

    def script(chat: Any, t: Any) -> Any:
        return [chat.send_message("Weather in Paris?").text, chat.send_message("Never mind.").text]

    replies = [text_response(parts=[{"text": "Let me check."}, CALL]), text_response("OK.")]
    g, led = diff.run(replies, script, config=WEATHER_TOOL)

    assert g.observed == led.observed == ["Let me check.", "OK."]
    assert led.full == g.full
    assert g.contents[1] == [
        user("Weather in Paris?"),
        {"role": "model", "parts": [{"text": "Let me check."}, CALL]},
        user("Never mind."),
    ]
    assert led.contents[1] == [
        user("Weather in Paris?"),
        model("Let me check."),
        user("Never mind."),
    ]
    assert led.context == [
        user("Weather in Paris?"),
        model("Let me check."),
        user("Never mind."),
        model("OK."),
    ]
    assert g.context == g.full


def test_function_call_part_message_is_a_model_turn(diff: Differential) -> None:
    """SEMANTICS §1: a Part holding a function call becomes a model turn and is sent as
    given, as google-genai sends it. (Regression: chatledger used to filter the new
    message itself with the §2 extra rule and sent ``contents: []``.) In later requests
    the call, never answered, is left out by that rule."""

    def script(chat: Any, t: Any) -> Any:
        call = t.Part.from_function_call(name="lookup", args={"x": 1})
        return [chat.send_message(call).text, chat.send_message("next").text]

    g, led = diff.run([text_response("a"), text_response("b")], script)

    call = {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"x": 1}}}]}
    assert g.observed == led.observed == ["a", "b"]
    assert led.bodies[0] == g.bodies[0] == {"contents": [call]}
    assert led.full == g.full
    assert led.full[0] == {
        "role": "model",
        "parts": [{"function_call": {"name": "lookup", "args": {"x": 1}}}],
    }
    assert g.contents[1] == [call, model("a"), user("next")]
    assert led.contents[1] == [model("a"), user("next")]


# =========================================================================== history at creation

SEED_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "parts": [{"text": "Hi"}]},
    {"role": "model", "parts": [{"text": "Hello!"}]},
    {
        "role": "user",
        "parts": [
            {"text": "Look"},
            {"inline_data": {"data": b"\x89PNG", "mime_type": "image/png"}},
        ],
    },
    {"role": "model", "parts": [{"text": "A "}, {"text": "picture."}]},
    {"role": "user", "parts": [{"text": "Weather?"}]},
    {
        "role": "model",
        "parts": [{"function_call": {"name": "get_weather", "args": {"city": "Oslo"}}}],
    },
    {
        "role": "user",
        "parts": [{"function_response": {"name": "get_weather", "response": {"temp_c": 3}}}],
    },
    {"role": "model", "parts": [{"text": "3 C in Oslo."}]},
]


def test_history_at_creation_valid(diff: Differential) -> None:
    def script(chat: Any, t: Any) -> Any:
        before = (dump_contents(chat.get_history()), dump_contents(chat.get_history(curated=True)))
        return [before, chat.send_message("Thanks").text]

    g, led = diff.run([text_response("You're welcome")], script, history=SEED_HISTORY)

    assert led.observed[1] == g.observed[1] == "You're welcome"
    (g_full, g_curated), (l_full, l_curated) = g.observed[0], led.observed[0]
    assert l_full == g_full == g_curated  # right after creation; every seeded turn is valid
    assert l_curated == [c for c in g_full if not any("function_" in k for k in c["parts"][0])]
    assert_same(g, led)
    assert len(led.contents[0]) == len(SEED_HISTORY) + 1
    assert led.requests[0].body["contents"][2]["parts"][1] == {
        "inlineData": {"data": "iVBORw==", "mimeType": "image/png"}
    }
    assert led.context == led.full == g.full
    assert led.curated == [
        user("Hi"),
        model("Hello!"),
        led.full[2],
        model("A ", "picture."),
        user("Weather?"),
        model("3 C in Oslo."),
        user("Thanks"),
        model("You're welcome"),
    ]


def test_history_at_creation_with_invalid_turns(diff: Differential) -> None:
    history = [
        user("a"),
        {"role": "model", "parts": []},  # no parts: an invalid turn
        user("b"),
        model("B1"),
        model("B2"),  # a run of model contents, all valid
        user("c"),
        {"role": "model", "parts": [{"text": "C"}, {}]},  # an empty part: invalid
        user("d"),
        model("D"),
    ]

    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("e").text

    g, led = diff.run([text_response("E")], script, history=history)

    assert g.observed == led.observed == "E"
    assert_same(g, led)
    assert led.contents[0] == [
        user("b"),
        model("B1"),
        model("B2"),
        user("d"),
        model("D"),
        user("e"),
    ]
    assert led.full == [*history, user("e"), model("E")]
    assert led.context == [*led.contents[0], model("E")]


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        ({"role": "system", "parts": [{"text": "x"}]}, "system"),
        ({"role": "assistant", "parts": [{"text": "x"}]}, "assistant"),
        ({"parts": [{"text": "x"}]}, "None"),
    ],
    ids=["system", "assistant", "missing"],
)
def test_history_at_creation_bad_role(diff: Differential, bad: dict[str, Any], shown: str) -> None:
    history = [user("a"), model("A"), bad]
    message = f"Role must be user or model, but got {shown}"
    with pytest.raises(ValueError, match=message):
        diff.create_genai(history=history)
    with pytest.raises(chatledger.InvalidInputError, match=message) as raised:
        diff.create_ledger(history=history)
    assert isinstance(raised.value, ValueError)
    assert diff.ledger.chats.list() == []  # nothing was recorded
    assert diff.server.requests == []


# =========================================================================== streaming


def stream_texts(chat: Any, message: Any) -> list[str | None]:
    return [chunk.text for chunk in chat.send_message_stream(message)]


def test_stream_single_chunk_with_finish_reason(diff: Differential) -> None:
    """One chunk that carries the whole answer and the finish reason: identical."""

    def script(chat: Any, t: Any) -> Any:
        return [stream_texts(chat, "Hello"), chat.send_message("And?").text]

    g, led = diff.run([sse(text_chunk("Hi!", "STOP")), text_response("That's all.")], script)

    assert g.observed == led.observed == [["Hi!"], "That's all."]
    assert_same(g, led)
    assert led.requests[0].streamed and led.requests[0].query == {"alt": ["sse"]}
    assert led.contents[1] == [user("Hello"), model("Hi!"), user("And?")]


def test_stream_is_one_model_turn(diff: Differential) -> None:
    """SEMANTICS §3.2: google-genai appends each chunk as its own model content;
    chatledger merges the chunks of the turn into one. Both count the turn valid."""
    chunks = [
        text_chunk("Hel"),
        text_chunk("lo, "),
        text_chunk("world", "STOP", usageMetadata={"totalTokenCount": 9}),
    ]

    def script(chat: Any, t: Any) -> Any:
        return [stream_texts(chat, "Greet me"), chat.send_message("Thanks").text]

    g, led = diff.run([sse(*chunks), text_response("Welcome")], script)

    assert g.observed == led.observed == [["Hel", "lo, ", "world"], "Welcome"]
    assert led.bodies[0] == g.bodies[0]
    assert g.full == [
        user("Greet me"),
        model("Hel"),
        model("lo, "),
        model("world"),
        user("Thanks"),
        model("Welcome"),
    ]
    assert led.full == [user("Greet me"), model("Hello, world"), user("Thanks"), model("Welcome")]
    # Both count it valid (it is in both contexts and in the next request), each in its shape.
    assert g.context == g.full and led.context == led.full
    assert g.contents[1] == [
        user("Greet me"),
        model("Hel"),
        model("lo, "),
        model("world"),
        user("Thanks"),
    ]
    assert led.contents[1] == [user("Greet me"), model("Hello, world"), user("Thanks")]
    # The merged content is exactly google-genai's chunk contents joined.
    joined = "".join(content["parts"][0]["text"] for content in g.full[1:4])
    assert led.full[1] == model(joined)
    events = led.event_data("model_responded")
    assert events[0].streamed and events[0].chunks == 3
    assert events[0].response == {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hello, world"}]},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"totalTokenCount": 9},
    }


def test_stream_last_is_the_merged_response(diff: Differential) -> None:
    chunks = [
        text_chunk("Hel"),
        text_chunk("lo", "STOP", usageMetadata={"promptTokenCount": 2, "totalTokenCount": 5}),
    ]

    def script(chat: Any, t: Any) -> Any:
        return stream_texts(chat, "Hi")

    g, led = diff.run([sse(*chunks)], script)

    assert g.observed == led.observed == ["Hel", "lo"]
    last = led.chat.last
    assert last.text == "".join(g.observed)
    assert last.candidates[0].finish_reason.value == "STOP"
    assert last.usage_metadata.total_token_count == 5


def test_stream_without_finish_reason(diff: Differential) -> None:
    """A stream that ends without a finish reason is an invalid turn in both libraries:
    kept in the full history (google-genai: one content per chunk; chatledger: one merged
    content, SEMANTICS §3.2), left out of the context and of the next request."""
    chunks = [text_chunk("Hel"), text_chunk("lo")]

    def script(chat: Any, t: Any) -> Any:
        return [stream_texts(chat, "Hi"), chat.send_message("Still there?").text]

    g, led = diff.run([sse(*chunks), text_response("Yes")], script)

    assert g.observed == led.observed == [["Hel", "lo"], "Yes"]
    assert led.bodies == g.bodies  # the invalid turn is sent by neither
    assert led.contents[1] == [user("Still there?")]
    assert g.full == [user("Hi"), model("Hel"), model("lo"), user("Still there?"), model("Yes")]
    assert led.full == [user("Hi"), model("Hello"), user("Still there?"), model("Yes")]
    assert led.context == g.context == [user("Still there?"), model("Yes")]


def test_stream_final_chunk_with_only_finish_reason(diff: Differential) -> None:
    """SEMANTICS §3.2: a final chunk carrying only the finish reason and usage is fine for
    chatledger (the merged content is valid); google-genai judges every chunk on its own,
    finds this one without content, and drops the whole turn from its curated history."""
    chunks = [
        text_chunk("Hel"),
        text_chunk("lo"),
        {"candidates": [{"finishReason": "STOP"}], "usageMetadata": {"totalTokenCount": 4}},
    ]

    def script(chat: Any, t: Any) -> Any:
        return [stream_texts(chat, "Hi"), chat.send_message("Again").text]

    g, led = diff.run([sse(*chunks), text_response("ok")], script)

    assert g.observed == led.observed == [["Hel", "lo", None], "ok"]
    assert g.full == [user("Hi"), model("Hel"), model("lo"), user("Again"), model("ok")]
    assert g.contents[1] == [user("Again")]
    assert g.context == [user("Again"), model("ok")]
    assert led.full == [user("Hi"), model("Hello"), user("Again"), model("ok")]
    assert led.contents[1] == [user("Hi"), model("Hello"), user("Again")]
    assert led.context == led.full


def test_stream_merges_text_and_keeps_other_parts(diff: Differential) -> None:
    """SEMANTICS §3.2: adjacent plain text parts are concatenated (thoughts with
    thoughts), other parts are kept in order with their thought signature."""
    signed_call = {**CALL, "thoughtSignature": "c2lnbmVk"}
    chunks = [
        text_response(parts=[{"text": "Plan: ", "thought": True}], finish_reason=None),
        text_response(parts=[{"text": "ask the tool.", "thought": True}], finish_reason=None),
        text_chunk("Let me "),
        text_chunk("check."),
        text_response(parts=[signed_call], finish_reason="STOP"),
    ]

    def script(chat: Any, t: Any) -> Any:
        texts = stream_texts(chat, "Weather in Paris?")
        answer = t.Part.from_function_response(name="get_weather", response={"temp_c": 21})
        return [texts, chat.send_message(answer).text]

    g, led = diff.run([sse(*chunks), text_response("21 C.")], script, config=WEATHER_TOOL)

    assert g.observed == led.observed == [[None, None, "Let me ", "check.", None], "21 C."]
    merged = {
        "role": "model",
        "parts": [
            {"text": "Plan: ask the tool.", "thought": True},
            {"text": "Let me check."},
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": "c2lnbmVk",
            },
        ],
    }
    assert led.requests[1].body["contents"][:2] == [user("Weather in Paris?"), merged]
    assert len(g.contents[1]) == 7  # google-genai: the user content, 5 chunk contents, the answer
    assert led.contents[1][2] == g.contents[1][6]
    assert (
        led.full[1]["parts"][2]["thought_signature"] == g.full[5]["parts"][0]["thought_signature"]
    )


# =========================================================================== abandoned streams


@pytest.mark.parametrize("how", ["break", "close"])
def test_abandoned_stream_changes_no_history(diff: Differential, how: str) -> None:
    def run(library: str) -> Run:
        gate = threading.Event()
        replies = [
            text_response("Hi"),
            sse(text_chunk("Hel"), text_chunk("lo", "STOP"), gates={1: gate}),
            text_response("ok"),
        ]

        def script(chat: Any, t: Any) -> Any:
            chat.send_message("first")
            before = dump_contents(chat.get_history())
            firsts = []
            if how == "break":
                for chunk in chat.send_message_stream("tell me"):
                    firsts.append(chunk.text)
                    break
            else:
                stream = chat.send_message_stream("tell me")
                firsts.append(next(stream).text)
                stream.close()
            gate.set()  # only now may the server send the rest (nobody reads it)
            after = dump_contents(chat.get_history())
            return [firsts, before == after, chat.send_message("again").text]

        runner = diff.run_genai if library == "genai" else diff.run_ledger
        return runner(replies, script)

    g, led = run("genai"), run("chatledger")

    assert g.observed == led.observed == [["Hel"], True, "ok"]
    assert_same(g, led)
    assert led.contents[2] == [user("first"), model("Hi"), user("again")]
    assert led.full == [user("first"), model("Hi"), user("again"), model("ok")]
    assert led.events == ["conversation_started", *TURN_EVENTS, *FAILED_TURN_EVENTS, *TURN_EVENTS]
    (failed,) = led.event_data("model_call_failed")
    assert failed.error.kind == "abandoned"
    assert failed.streamed
    assert failed.partial == {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]
    }


def test_new_send_abandons_a_suspended_stream(diff: Differential) -> None:
    """Not listed in SEMANTICS §3: a sync stream left suspended (neither finished nor
    closed) is abandoned by the chat's next send, so turns never interleave. google-genai
    lets the old stream go on afterwards and records its turn after the newer one."""

    def run(library: str) -> Run:
        gate = threading.Event()
        replies = [
            sse(text_chunk("Hel"), text_chunk("lo", "STOP"), gates={1: gate}),
            text_response("B"),
        ]

        def script(chat: Any, t: Any) -> Any:
            stream = chat.send_message_stream("A")
            first = next(stream).text
            answer = chat.send_message("b").text
            gate.set()
            return [first, answer, [chunk.text for chunk in stream]]

        return (diff.run_genai if library == "genai" else diff.run_ledger)(replies, script)

    g, led = run("genai"), run("chatledger")

    assert g.observed == ["Hel", "B", ["lo"]]
    assert led.observed == ["Hel", "B", []]
    assert led.bodies == g.bodies
    assert led.contents == [[user("A")], [user("b")]]
    assert g.full == [user("b"), model("B"), user("A"), model("Hel"), model("lo")]
    assert led.full == [user("b"), model("B")]
    assert led.events == ["conversation_started", *FAILED_TURN_EVENTS, *TURN_EVENTS]
    (failed,) = led.event_data("model_call_failed")
    assert failed.error.kind == "abandoned"


# =========================================================================== errors


HTTP_ERRORS = [
    pytest.param(400, "INVALID_ARGUMENT", "ClientError", id="400"),
    pytest.param(429, "RESOURCE_EXHAUSTED", "ClientError", id="429"),
    pytest.param(500, "INTERNAL", "ServerError", id="500"),
    pytest.param(503, "UNAVAILABLE", "ServerError", id="503"),
]


def check_failed_then_retried(g: Run, led: Run, code: int, status: str, class_name: str) -> None:
    (g_error, g_unchanged, g_retry), (l_error, l_unchanged, l_retry) = g.observed, led.observed
    assert isinstance(g_error, genai_errors.APIError)
    assert isinstance(l_error, chatledger.APIError)
    assert error_signature(l_error) == error_signature(g_error)
    assert type(l_error).__name__ == class_name
    assert (l_error.code, l_error.status) == (code, status)
    assert str(l_error).startswith(f"{code} {status}. {{'error': {{'code': {code}")
    assert l_error.details == g_error.details
    assert g_unchanged is l_unchanged is True
    assert g_retry == l_retry == "ok"
    assert_same(g, led)
    # The retry does not duplicate the user message: it is in the history once.
    assert led.full == [user("hello"), model("hi"), user("flaky"), model("ok")]
    assert led.contents[1] == led.contents[2] == [user("hello"), model("hi"), user("flaky")]
    # SEMANTICS §3.4: the failed attempt is in the log.
    assert led.events == ["conversation_started", *TURN_EVENTS, *FAILED_TURN_EVENTS, *TURN_EVENTS]
    (failed,) = led.event_data("model_call_failed")
    assert (failed.error.kind, failed.error.code, failed.error.status) == (class_name, code, status)
    added = led.event_data("user_message_added")
    assert [event.content for event in added] == [user("hello"), user("flaky"), user("flaky")]


@pytest.mark.parametrize(("code", "status", "class_name"), HTTP_ERRORS)
def test_http_error(diff: Differential, code: int, status: str, class_name: str) -> None:
    def script(chat: Any, t: Any) -> Any:
        chat.send_message("hello")
        before = dump_contents(chat.get_history())
        error = capture(lambda: chat.send_message("flaky"))
        unchanged = dump_contents(chat.get_history()) == before
        return [error, unchanged, chat.send_message("flaky").text]

    replies = [text_response("hi"), http_error(code, status, "try again"), text_response("ok")]
    g, led = diff.run(replies, script)
    check_failed_then_retried(g, led, code, status, class_name)


@pytest.mark.parametrize(("code", "status", "class_name"), HTTP_ERRORS)
def test_http_error_on_stream(diff: Differential, code: int, status: str, class_name: str) -> None:
    def script(chat: Any, t: Any) -> Any:
        chat.send_message("hello")
        before = dump_contents(chat.get_history())
        error = capture(lambda: stream_texts(chat, "flaky"))
        unchanged = dump_contents(chat.get_history()) == before
        return [error, unchanged, "".join(stream_texts(chat, "flaky"))]

    replies = [
        text_response("hi"),
        http_error(code, status, "try again"),
        sse(text_chunk("ok", "STOP")),
    ]
    g, led = diff.run(replies, script)
    check_failed_then_retried(g, led, code, status, class_name)
    assert [request.streamed for request in led.requests] == [False, True, True]


@pytest.mark.parametrize(
    ("code", "status", "error_class"),
    [(500, "INTERNAL", "ServerError"), (429, "RESOURCE_EXHAUSTED", "ClientError")],
    ids=["500", "429"],
)
def test_mid_stream_error_event(
    diff: Differential, code: int, status: str, error_class: str
) -> None:
    error_event = {"error": {"code": code, "message": "stream broke", "status": status}}

    def script(chat: Any, t: Any) -> Any:
        chat.send_message("hello")
        before = dump_contents(chat.get_history())
        received: list[str | None] = []

        def consume() -> None:
            for chunk in chat.send_message_stream("tell me"):
                received.append(chunk.text)

        error = capture(consume)
        return [
            error,
            received,
            dump_contents(chat.get_history()) == before,
            chat.send_message("again").text,
        ]

    replies = [text_response("hi"), sse(text_chunk("Hel"), error_event), text_response("ok")]
    g, led = diff.run(replies, script)

    (g_error, g_received, g_unchanged, g_after), (l_error, l_received, l_unchanged, l_after) = (
        g.observed,
        led.observed,
    )
    assert type(g_error).__name__ == type(l_error).__name__ == error_class
    assert isinstance(l_error, chatledger.APIError)
    assert error_signature(l_error) == error_signature(g_error)
    assert str(l_error) == f"{code} {status}. {error_event}"
    assert g_received == l_received == ["Hel"]
    assert g_unchanged is l_unchanged is True
    assert g_after == l_after == "ok"
    assert_same(g, led)
    assert led.full == [user("hello"), model("hi"), user("again"), model("ok")]
    (failed,) = led.event_data("model_call_failed")
    assert (failed.error.kind, failed.error.code, failed.error.status) == (
        error_class,
        code,
        status,
    )
    assert failed.partial == {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]
    }


def test_dropped_connection_mid_stream(diff: Differential) -> None:
    """The server closes the connection after one chunk. google-genai lets its HTTP
    library's error through; chatledger raises ModelConnectionError. Neither changes
    history; chatledger's log has the attempt with its partial text (SEMANTICS §3.4)."""

    def script(chat: Any, t: Any) -> Any:
        received: list[str | None] = []

        def consume() -> None:
            for chunk in chat.send_message_stream("tell me"):
                received.append(chunk.text)

        error = capture(consume)
        return [error, received, dump_contents(chat.get_history()), chat.send_message("again").text]

    replies = [sse(text_chunk("Hel"), text_chunk("lo", "STOP"), drop_after=1), text_response("ok")]
    g, led = diff.run(replies, script)

    assert type(g.observed[0]).__name__ in ("RemoteProtocolError", "ReadError")  # httpx's
    assert isinstance(led.observed[0], chatledger.ModelConnectionError)
    assert g.observed[1:] == led.observed[1:] == [["Hel"], [], "ok"]
    assert_same(g, led)
    assert led.events == ["conversation_started", *FAILED_TURN_EVENTS, *TURN_EVENTS]
    (failed,) = led.event_data("model_call_failed")
    assert failed.error.kind == "ModelConnectionError"
    assert failed.partial == {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]
    }


def test_failures_leave_events_not_history(diff: Differential) -> None:
    """SEMANTICS §3.4 in one conversation: an HTTP error, a mid-stream error and an
    abandoned stream leave the histories exactly as google-genai's (unchanged), while
    chatledger's log has every attempt, and the user message is in the history once."""

    def run(library: str) -> Run:
        gate = threading.Event()
        replies = [
            http_error(500, "INTERNAL", "oops"),
            sse(
                text_chunk("Par"),
                {"error": {"code": 503, "message": "gone", "status": "UNAVAILABLE"}},
            ),
            sse(text_chunk("tial"), text_chunk("!", "STOP"), gates={1: gate}),
            text_response("Finally."),
        ]

        def script(chat: Any, t: Any) -> Any:
            errors = [
                capture(lambda: chat.send_message("Q")),
                capture(lambda: stream_texts(chat, "Q")),
            ]
            for _chunk in chat.send_message_stream("Q"):
                break
            gate.set()
            empty = dump_contents(chat.get_history()) == []
            return [[error_signature(e)[:3] for e in errors], empty, chat.send_message("Q").text]

        return (diff.run_genai if library == "genai" else diff.run_ledger)(replies, script)

    g, led = run("genai"), run("chatledger")

    assert (
        g.observed
        == led.observed
        == [
            [("ServerError", 500, "INTERNAL"), ("ServerError", 503, "UNAVAILABLE")],
            True,
            "Finally.",
        ]
    )
    assert_same(g, led)
    assert led.full == [user("Q"), model("Finally.")]
    assert led.events == ["conversation_started", *FAILED_TURN_EVENTS * 3, *TURN_EVENTS]
    kinds = [event.error.kind for event in led.event_data("model_call_failed")]
    assert kinds == ["ServerError", "ServerError", "abandoned"]
    partials = [event.partial for event in led.event_data("model_call_failed")]
    assert partials[0] is None
    assert partials[1]["candidates"][0]["content"]["parts"] == [{"text": "Par"}]
    assert partials[2]["candidates"][0]["content"]["parts"] == [{"text": "tial"}]


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
    """SEMANTICS §3.5: google-genai raises KeyError for a call to a function that is not
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
    """SEMANTICS §3.3: google-genai's curated history is what the next request sends
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


# =========================================================================== per-message config


def test_per_message_config_is_merged(diff: Differential) -> None:
    """SEMANTICS §3.1: google-genai REPLACES the chat's config with a per-message config,
    so the system instruction (and every other chat setting) disappears from that request;
    chatledger MERGES: the per-message temperature overrides, the rest is kept."""
    config = {
        "system_instruction": "Answer in French.",
        "temperature": 0.9,
        "max_output_tokens": 50,
    }

    def script(chat: Any, t: Any) -> Any:
        return [
            chat.send_message("one").text,
            chat.send_message("two", config={"temperature": 0.1}).text,
            chat.send_message("three").text,
        ]

    g, led = diff.run(
        [text_response("un"), text_response("deux"), text_response("trois")], script, config=config
    )

    assert g.observed == led.observed == ["un", "deux", "trois"]
    assert led.full == g.full and led.context == g.context
    assert led.contents == g.contents
    chat_settings = {
        "systemInstruction": user("Answer in French."),
        "generationConfig": {"temperature": 0.9, "maxOutputTokens": 50},
    }
    # Before and after the per-message config, both send the chat's config.
    for index in (0, 2):
        assert g.bodies[index] == {"contents": g.contents[index], **chat_settings}
        assert led.bodies[index] == {"contents": led.contents[index], **chat_settings}
    # The difference: google-genai sent only the per-message config ...
    assert g.bodies[1] == {"contents": g.contents[1], "generationConfig": {"temperature": 0.1}}
    # ... chatledger the chat's config with the per-message temperature over it.
    assert led.bodies[1] == {
        "contents": led.contents[1],
        "systemInstruction": user("Answer in French."),
        "generationConfig": {"temperature": 0.1, "maxOutputTokens": 50},
    }


# =========================================================================== bad messages


BAD_MESSAGES = [
    pytest.param({"text": "hi"}, id="dict"),
    pytest.param(42, id="int"),
    pytest.param(None, id="None"),
    pytest.param([], id="empty-list"),
    pytest.param(["ok", {"text": "hi"}], id="list-with-dict"),
    pytest.param(b"bytes", id="bytes"),
]


@pytest.mark.parametrize("message", BAD_MESSAGES)
@pytest.mark.parametrize("method", ["send_message", "send_message_stream"])
def test_bad_message_types(diff: Differential, message: Any, method: str) -> None:
    def script(chat: Any, t: Any) -> Any:
        chat.send_message("fine")
        before = dump_contents(chat.get_history())
        at_call = True
        with pytest.raises(ValueError) as raised:
            result = getattr(chat, method)(message)
            at_call = False
            list(result)
        return [type(raised.value).__name__, at_call, dump_contents(chat.get_history()) == before]

    g, led = diff.run([text_response("yes")], script)

    # google-genai's sync stream is a generator function: it checks on the first iteration;
    # chatledger checks when send_message_stream is called.
    assert g.observed == ["ValueError", method == "send_message", True]
    assert led.observed == ["InvalidInputError", True, True]
    assert len(g.requests) == len(led.requests) == 1  # nothing sent for the bad message
    assert_same(g, led)
    assert led.events == ["conversation_started", *TURN_EVENTS]  # nothing recorded for it


def test_bad_message_leaves_the_log_unchanged(diff: Differential) -> None:
    chat = diff.create_ledger()
    count = len(chat.events())
    for message, named in (
        ({"text": "x"}, "dict"),
        (3, "int"),
        (None, "NoneType"),
        ([], "empty list"),
    ):
        with pytest.raises(chatledger.InvalidInputError, match=named):
            chat.send_message(message)
        with pytest.raises(chatledger.InvalidInputError, match=named):
            chat.send_message_stream(message)
    assert len(chat.events()) == count == 1
    assert diff.server.requests == []


# =========================================================================== unknown fields


def test_unknown_response_fields_are_kept_and_sent_back(diff: Differential) -> None:
    """SEMANTICS §1: a part's unknown field is kept in chatledger's history and sent back
    unchanged; google-genai drops it. ``thoughtSignature`` is known to both; chatledger
    sends back the server's own base64 text, google-genai re-encodes the bytes."""
    part = {"text": "x", "futureField": {"a": 1}, "thoughtSignature": "+/8="}
    reply = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [part]},
                "finishReason": "STOP",
                "futureCandidateField": 1,
            }
        ],
        "futureTopField": "y",
    }

    def script(chat: Any, t: Any) -> Any:
        return [chat.send_message("hi").text, chat.send_message("more").text]

    g, led = diff.run([reply, text_response("ok")], script)

    assert g.observed == led.observed == ["x", "ok"]
    sent_back = led.requests[1].body["contents"][1]
    assert sent_back == {"role": "model", "parts": [part]}  # verbatim, byte for byte
    assert g.requests[1].body["contents"][1]["parts"] == [{"text": "x", "thoughtSignature": "-_8="}]
    assert led.full[1] == {
        "role": "model",
        "parts": [{"text": "x", "thought_signature": "-_8=", "futureField": {"a": 1}}],
    }
    assert g.full[1] == {"role": "model", "parts": [{"text": "x", "thought_signature": "-_8="}]}
    # Apart from the unknown field, the two agree.
    without = [
        {
            **content,
            "parts": [{k: v for k, v in p.items() if k != "futureField"} for p in content["parts"]],
        }
        for content in led.full
    ]
    assert without == g.full
    bodies = led.bodies
    assert bodies[1]["contents"][1]["parts"][0].pop("futureField") == {"a": 1}
    assert bodies == g.bodies
    (responded, _) = led.event_data("model_responded")
    assert responded.response == reply  # the whole response is in the event


def test_part_with_only_an_unknown_field(diff: Differential) -> None:
    """Consequence of SEMANTICS §1: google-genai reads a part whose only field it does
    not know as an empty part, so the turn is invalid and never sent again; chatledger
    keeps the field, so the part is set, the turn valid, and the part sent back."""
    reply = text_response(parts=[{"text": "a"}, {"futurePart": {"k": 1}}])

    def script(chat: Any, t: Any) -> Any:
        return [chat.send_message("q").text, chat.send_message("next").text]

    g, led = diff.run([reply, text_response("ok")], script)

    assert g.observed == led.observed == ["a", "ok"]
    assert g.full[1] == {"role": "model", "parts": [{"text": "a"}, {}]}
    assert g.contents[1] == [user("next")]
    assert led.full[1] == {"role": "model", "parts": [{"text": "a"}, {"futurePart": {"k": 1}}]}
    assert led.contents[1] == [
        user("q"),
        {"role": "model", "parts": [{"text": "a"}, {"futurePart": {"k": 1}}]},
        user("next"),
    ]


# =========================================================================== chunks arrive as sent


def first_chunk_before_second_is_sent(chat: Any, gate: threading.Event) -> list[str | None]:
    """Consume a gated stream in a thread; check the first chunk arrives while the server
    still holds the second (it waits for ``gate``), then release it."""
    received: list[str | None] = []
    first = threading.Event()
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            for chunk in chat.send_message_stream("stream please"):
                received.append(chunk.text)
                first.set()
        except BaseException as exc:  # reported to the test thread
            failure.append(exc)
            first.set()

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    try:
        arrived = first.wait(timeout=WAIT)
        assert not gate.is_set()
        assert arrived and not failure, (
            f"first chunk not received while the second was held ({failure})"
        )
        assert received == ["Hel"]
    finally:
        gate.set()
        worker.join(timeout=WAIT)
    assert not worker.is_alive() and not failure
    return received


def test_chunks_reach_the_caller_as_they_arrive(diff: Differential) -> None:
    for library in ("genai", "chatledger"):
        gate = threading.Event()
        reply = sse(text_chunk("Hel"), text_chunk("lo", "STOP"), gates={1: gate})

        def script(chat: Any, t: Any, gate: threading.Event = gate) -> Any:
            return first_chunk_before_second_is_sent(chat, gate)

        run = (diff.run_genai if library == "genai" else diff.run_ledger)([reply], script)
        assert run.observed == ["Hel", "lo"]
        assert run.full[0] == user("stream please")


async def test_async_chunks_reach_the_caller_as_they_arrive(adiff: Differential) -> None:
    for library in ("genai", "chatledger"):
        gate = threading.Event()
        adiff.enqueue([sse(text_chunk("Hel"), text_chunk("lo", "STOP"), gates={1: gate})])
        if library == "genai":
            chat = adiff.create_genai(is_async=True)
        else:
            chat = adiff.create_ledger(is_async=True)
        stream = await chat.send_message_stream("stream please")
        iterator = stream.__aiter__()
        try:
            first = await asyncio.wait_for(iterator.__anext__(), timeout=WAIT)
            assert not gate.is_set()
            assert first.text == "Hel"
        finally:
            gate.set()
        rest = [chunk.text async for chunk in iterator]
        assert rest == ["lo"]
    assert adiff.server.pending == 0


# =========================================================================== get_history is a copy


def test_get_history_returns_a_copy(diff: Differential) -> None:
    """SEMANTICS §3.6: google-genai returns its live list (mutating it changes the chat and
    the next request); chatledger returns a copy."""

    def script(chat: Any, t: Any) -> Any:
        chat.send_message("hello")
        history = chat.get_history()
        history.append(t.Content(role="user", parts=[t.Part(text="injected")]))
        history[0].parts[0].text = "mutated"
        curated = chat.get_history(curated=True)
        curated.clear()
        return [chat.get_history() is chat.get_history(), chat.send_message("next").text]

    g, led = diff.run([text_response("hi"), text_response("ok")], script)

    assert g.observed == [True, "ok"]
    assert led.observed == [False, "ok"]
    # google-genai's mutations reached its state and its next request ...
    assert g.full[:3] == [user("mutated"), model("hi"), user("injected")]
    assert g.contents[1] == [user("next")]  # its curated list was cleared
    # ... chatledger's did not.
    assert led.full == [user("hello"), model("hi"), user("next"), model("ok")]
    assert led.contents[1] == [user("hello"), model("hi"), user("next")]


# =========================================================================== resuming


def test_resumed_chat_continues_like_genai(diff: Differential) -> None:
    """A chatledger chat reopened in a fresh client (from the SQLite file) after a
    completed turn, a failure and an abandoned stream sends what google-genai's
    uninterrupted chat sends."""

    def run(library: str) -> Run:
        gate = threading.Event()
        replies = [
            text_response("A"),
            http_error(500, "INTERNAL", "x"),
            sse(text_chunk("B"), text_chunk("b", "STOP"), gates={1: gate}),
            text_response("C"),
        ]

        def script(chat: Any, t: Any) -> Any:
            chat.send_message("a")
            capture(lambda: chat.send_message("b"))
            for _chunk in chat.send_message_stream("b"):
                break
            gate.set()
            if library == "genai":
                text = chat.send_message("c").text
                return [text, dump_contents(chat.get_history())]
            resumed = diff.resume(chat)
            text = resumed.send_message("c").text
            history = dump_contents(resumed.get_history())
            # The original chat catches up with what the other client appended.
            assert chat.refresh() and chat.version == resumed.version
            assert dump_contents(chat.get_history()) == history
            return [text, history]

        return (diff.run_genai if library == "genai" else diff.run_ledger)(replies, script)

    g, led = run("genai"), run("chatledger")

    assert g.observed == led.observed
    assert led.observed == ["C", [user("a"), model("A"), user("c"), model("C")]]
    assert led.bodies == g.bodies
    assert led.contents[3] == [user("a"), model("A"), user("c")]


# =========================================================================== async twins


async def test_async_plain_turns(adiff: Differential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        return [(await chat.send_message(text)).text for text in ("Hello", "More")]

    g, led = await adiff.arun(
        [text_response("Hi"), text_response("Sure")],
        script,
        config={"system_instruction": "Be kind.", "temperature": 0.3},
    )

    assert g.observed == led.observed == ["Hi", "Sure"]
    assert_same(g, led)
    assert led.bodies[1] == {
        "contents": [user("Hello"), model("Hi"), user("More")],
        "systemInstruction": user("Be kind."),
        "generationConfig": {"temperature": 0.3},
    }
    assert led.events == ["conversation_started", *TURN_EVENTS * 2]


async def test_async_stream(adiff: Differential) -> None:
    chunks = [text_chunk("Hel"), text_chunk("lo", "STOP")]

    async def script(chat: Any, t: Any) -> Any:
        texts = [chunk.text async for chunk in await chat.send_message_stream("Hi")]
        return [texts, (await chat.send_message("Again")).text]

    g, led = await adiff.arun([sse(*chunks), text_response("ok")], script)

    assert g.observed == led.observed == [["Hel", "lo"], "ok"]
    assert led.bodies[0] == g.bodies[0]
    # SEMANTICS §3.2, as in the sync chat.
    assert g.contents[1] == [user("Hi"), model("Hel"), model("lo"), user("Again")]
    assert led.contents[1] == [user("Hi"), model("Hello"), user("Again")]
    assert led.full == [user("Hi"), model("Hello"), user("Again"), model("ok")]
    assert led.context == led.full


async def test_async_stream_without_finish_reason(adiff: Differential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        texts = [chunk.text async for chunk in await chat.send_message_stream("Hi")]
        return [texts, (await chat.send_message("Again")).text]

    g, led = await adiff.arun(
        [sse(text_chunk("Hel"), text_chunk("lo")), text_response("ok")], script
    )

    assert g.observed == led.observed == [["Hel", "lo"], "ok"]
    assert led.bodies == g.bodies
    assert led.contents[1] == [user("Again")]
    assert g.full == [user("Hi"), model("Hel"), model("lo"), user("Again"), model("ok")]
    assert led.full == [user("Hi"), model("Hello"), user("Again"), model("ok")]
    assert led.context == g.context == [user("Again"), model("ok")]


@pytest.mark.parametrize(("code", "status", "class_name"), HTTP_ERRORS)
async def test_async_http_error(
    adiff: Differential, code: int, status: str, class_name: str
) -> None:
    async def script(chat: Any, t: Any) -> Any:
        await chat.send_message("hello")
        before = dump_contents(chat.get_history())
        try:
            await chat.send_message("flaky")
            error: Any = None
        except Exception as exc:
            error = exc
        unchanged = dump_contents(chat.get_history()) == before
        return [error, unchanged, (await chat.send_message("flaky")).text]

    replies = [text_response("hi"), http_error(code, status, "try again"), text_response("ok")]
    g, led = await adiff.arun(replies, script)
    check_failed_then_retried(g, led, code, status, class_name)


async def test_async_mid_stream_error(adiff: Differential) -> None:
    error_event = {"error": {"code": 500, "message": "stream broke", "status": "INTERNAL"}}

    async def script(chat: Any, t: Any) -> Any:
        received: list[str | None] = []
        try:
            async for chunk in await chat.send_message_stream("tell me"):
                received.append(chunk.text)
            error: Any = None
        except Exception as exc:
            error = exc
        history = dump_contents(chat.get_history())
        return [error, received, history, (await chat.send_message("again")).text]

    g, led = await adiff.arun([sse(text_chunk("Hel"), error_event), text_response("ok")], script)

    assert isinstance(g.observed[0], genai_errors.ServerError)
    assert isinstance(led.observed[0], chatledger.ServerError)
    assert error_signature(led.observed[0]) == error_signature(g.observed[0])
    assert g.observed[1:] == led.observed[1:] == [["Hel"], [], "ok"]
    assert_same(g, led)
    assert led.events == ["conversation_started", *FAILED_TURN_EVENTS, *TURN_EVENTS]


async def test_async_abandoned_stream(adiff: Differential) -> None:
    async def run(library: str) -> Run:
        gate = threading.Event()
        replies = [
            sse(text_chunk("Hel"), text_chunk("lo", "STOP"), gates={1: gate}),
            text_response("ok"),
        ]

        async def script(chat: Any, t: Any) -> Any:
            stream = await chat.send_message_stream("tell me")
            received = []
            async for chunk in stream:
                received.append(chunk.text)
                break
            await stream.aclose()
            gate.set()
            empty = chat.get_history() == []
            return [received, empty, (await chat.send_message("again")).text]

        runner = adiff.arun_genai if library == "genai" else adiff.arun_ledger
        return await runner(replies, script)

    g = await run("genai")
    led = await run("chatledger")

    assert g.observed == led.observed == [["Hel"], True, "ok"]
    assert_same(g, led)
    assert led.full == [user("again"), model("ok")]
    assert led.events == ["conversation_started", *FAILED_TURN_EVENTS, *TURN_EVENTS]
    failed = led.event_data("model_call_failed")
    assert [(f.error.kind, f.partial) for f in failed] == [
        ("abandoned", {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]})
    ]


@pytest.mark.parametrize("message", BAD_MESSAGES)
async def test_async_bad_message_types(adiff: Differential, message: Any) -> None:
    async def script(chat: Any, t: Any) -> Any:
        names = []
        with pytest.raises(ValueError) as raised:
            await chat.send_message(message)
        names.append(type(raised.value).__name__)
        with pytest.raises(ValueError) as raised:
            await chat.send_message_stream(message)  # both check before returning the stream
        names.append(type(raised.value).__name__)
        return [names, chat.get_history() == []]

    g, led = await adiff.arun([], script)

    assert g.observed == [["ValueError", "ValueError"], True]
    assert led.observed == [["InvalidInputError", "InvalidInputError"], True]
    assert g.requests == led.requests == []
    assert led.events == ["conversation_started"]
