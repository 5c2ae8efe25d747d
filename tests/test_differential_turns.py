"""Differential tests against google-genai 3.3.0 on one loopback server: plain and multi-part turns, responses without content, model turns with several parts
or function calls, histories given at creation, per-message config, bad messages,
unknown response fields, get_history returning a copy, and resuming from the log.

Every scenario runs through google-genai's chat and through chatledger's chat, against
the same :class:`GeminiServer` with identical scripted replies, and compares the request
bodies, the full histories, and google-genai's curated history with chatledger's context
(docs/chat-api.md). Each chatledger run is also reopened by a fresh client from the same
SQLite file, and must rebuild to identical histories (``Differential._finish``). Where
chatledger deliberately differs, a test shows the difference precisely and names it
(docs/differences.md). Fixtures and normal forms: ``tests/support/differential.py``.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from google.genai import types as genai_types

import chatledger
import chatledger.types
from tests.support.differential import (
    BAD_MESSAGES,
    CALL,
    TURN_EVENTS,
    WEATHER_TOOL,
    Differential,
    Run,
    adiff,
    assert_same,
    base64_fields,
    capture,
    diff,
    dump_contents,
    http_error,
    model,
    sse,
    text_chunk,
    user,
)
from tests.support.gemini_server import text_response

# The shared fixtures, used by name in the tests' arguments.
FIXTURES = (adiff, diff)


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
    """``"content": {}`` (present but empty). Listed in docs/differences.md#google-genai-smaller: google-genai
    records a role-less ``Content()``, chatledger records ``Content(role="model",
    parts=[])`` as docs/chat-api.md#histories says for a response with no candidate content. google-genai's
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


def test_model_turn_with_text_and_function_call(diff: Differential) -> None:
    """A declared (not Python) function: the call comes back to the caller, who answers it
    with a function response Part. Also docs/differences.md#curated: chatledger's curated history is the
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
    """docs/chat-api.md#context, extra rule of the context: a model function call not followed by its
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
    """docs/chat-api.md#surface: a Part holding a function call becomes a model turn and is sent as
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
    with pytest.raises(chatledger.InvalidInputError, match=message):
        diff.create_ledger(history=history)
    assert diff.ledger.chats.list() == []  # nothing was recorded
    assert diff.server.requests == []


# =========================================================================== per-message config


def test_per_message_config_is_merged(diff: Differential) -> None:
    """docs/differences.md#merged-config: google-genai REPLACES the chat's config with a per-message config,
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
    """docs/chat-api.md#surface: a part's unknown field is kept in chatledger's history and sent back
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
    """Consequence of docs/chat-api.md#surface: google-genai reads a part whose only field it does
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


# =========================================================================== get_history is a copy


def test_get_history_returns_a_copy(diff: Differential) -> None:
    """docs/differences.md#history-copy: google-genai returns its live list (mutating it changes the chat and
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


# =========================================================================== content classes


def classes(contents: list[Any]) -> list[str]:
    return [type(content).__name__ for content in contents]


def test_history_content_classes_are_google_genais(diff: Differential) -> None:
    """pydantic equality compares classes: a sent message is a ``UserContent`` (a
    function call Part sent as a message, a ``ModelContent``), a model reply a
    ``Content``, as in google-genai; a history given as dicts is ``Content``."""
    call = {"name": "get_time", "args": {}}

    def script(chat: Any, t: Any) -> Any:
        chat.send_message("a string")
        chat.send_message(t.Part.from_text(text="a Part"))
        chat.send_message(["a list", t.Part.from_text(text="of parts")])
        for _chunk in chat.send_message_stream("a stream"):
            pass
        # google-genai's curated history is chatledger's context (docs/differences.md#curated).
        curated = classes(getattr(chat, "get_context", lambda: chat.get_history(curated=True))())
        # Sent last: nothing answers the call (docs/differences.md#unanswered-calls).
        chat.send_message(t.Part(function_call=t.FunctionCall(**call)))
        return [curated, classes(chat.get_history())]

    replies = [
        *(text_response(f"r{i}") for i in range(3)),
        sse(text_chunk("streamed", "STOP")),  # one chunk: docs/differences.md#stream-one-turn
        text_response("r4"),
    ]
    g, led = diff.run(replies, script, history=[user("given"), model("history")])

    assert g.observed == led.observed
    assert led.observed == [
        ["Content", "Content", *["UserContent", "Content"] * 4],
        ["Content", "Content", *["UserContent", "Content"] * 4, "ModelContent", "Content"],
    ]
    assert g.full == led.full


def test_history_given_as_user_content_objects_comes_back_as_content(
    diff: Differential,
) -> None:
    """docs/differences.md#content-classes: google-genai keeps the objects of a given
    history as they were; the log records wire contents, so chatledger's are
    ``Content``. The contents are equal field by field."""

    def script(chat: Any, t: Any) -> Any:
        return classes(chat.get_history())

    def history(t: Any) -> list[Any]:
        return [t.UserContent(parts=[t.Part(text="given")]), t.ModelContent(parts="history")]

    g = diff.run_genai([], script, history=history(genai_types))
    led = diff.run_ledger([], script, history=history(chatledger.types))
    assert g.observed == ["UserContent", "ModelContent"]
    assert led.observed == ["Content", "Content"]
    assert g.full == led.full


def test_a_reply_without_a_role_keeps_none(diff: Differential) -> None:
    """A model content the server sent without a role is recorded as sent, plain or
    streamed: ``Content(role=None)``, as google-genai records it."""
    reply = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}]}

    def script(chat: Any, t: Any) -> Any:
        chat.send_message("plain")
        for _chunk in chat.send_message_stream("streamed"):
            pass
        return [content.role for content in chat.get_history()]

    g, led = diff.run([reply, sse(reply)], script)
    assert g.observed == led.observed == ["user", None, "user", None]
    assert_same(g, led)
