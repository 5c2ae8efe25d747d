"""Differential tests against google-genai 3.3.0 on one loopback server: structured
output (docs/chat-api.md#parsed).

For each kind of schema (a pydantic class, ``list[Model]``, an ``Enum``, a JSON-schema
dict, ``response_json_schema``) both clients send the same request body (the schema
converted as google-genai converts it) and read the same ``response.parsed``, for
``send_message`` and for each streamed chunk, sync and async.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import pydantic
import pytest

import chatledger
from chatledger.client._schema import schema_to_wire
from chatledger.errors import InvalidInputError
from tests.support.differential import (
    Differential,
    adiff,
    assert_same,
    diff,
    json_reply,
    sse,
)
from tests.support.gemini_server import text_response

FIXTURES = (adiff, diff)


class Sub(pydantic.BaseModel):
    name: str
    score: float | None = None


class Story(pydantic.BaseModel):
    """A story."""

    title: str
    pages: int
    tags: list[str]
    hero: Sub
    sidekick: Sub | None = None


class Fruit(enum.Enum):
    APPLE = "apple"
    BANANA = "banana"


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


STORY = {"title": "Odyssey", "pages": 42, "tags": ["sea"], "hero": {"name": "Odysseus"}}
PARSED = {"model": "Story", **Story.model_validate(STORY).model_dump()}
DICT_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "pages": {"type": "integer"}},
    "required": ["title"],
}


def plain(value: Any) -> Any:
    """``parsed`` in one comparable form: pydantic objects dumped, enums by value."""
    if isinstance(value, pydantic.BaseModel):
        return {"model": type(value).__name__, **value.model_dump()}
    if isinstance(value, enum.Enum):
        return {"enum": type(value).__name__, "value": value.value}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


CASES: list[tuple[str, dict[str, Any], str, Any]] = [
    ("model", {"response_schema": Story}, json.dumps(STORY), PARSED),
    (
        "list",
        {"response_schema": list[Story]},
        json.dumps([STORY, STORY]),
        [PARSED] * 2,
    ),
    ("enum", {"response_schema": Fruit}, '"banana"', {"enum": "Fruit", "value": "banana"}),
    ("int-enum", {"response_schema": Level}, '"2"', None),  # as google-genai: not parsed
    ("dict", {"response_schema": DICT_SCHEMA}, '{"title": "T", "pages": 3}', None),
    ("json-schema", {"response_json_schema": DICT_SCHEMA}, '{"title": "T"}', None),
    ("int-list", {"response_schema": list[int]}, "[1, 2, 3]", [1, 2, 3]),
    ("not-json", {"response_schema": Story}, "not json at all", None),
]


@pytest.mark.parametrize(("name", "schema", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_send_message_parsed_as_google_genai(
    diff: Differential, name: str, schema: dict[str, Any], text: str, expected: Any
) -> None:
    def script(chat: Any, t: Any) -> Any:
        config = {"response_mime_type": "application/json", **schema}
        response = chat.send_message("Give me JSON", config=config)
        return plain(response.parsed)

    g, led = diff.run([text_response(text)], script)
    assert led.observed == g.observed
    if expected is not None:
        assert led.observed == expected
    elif name in ("dict", "json-schema"):
        assert led.observed == json.loads(text)
    assert_same(g, led)  # the request bodies: the schema sent as google-genai sends it


def test_chat_level_schema_parsed_as_google_genai(diff: Differential) -> None:
    def script(chat: Any, t: Any) -> Any:
        return [plain(chat.send_message(m).parsed) for m in ("one", "two")]

    config = {"response_mime_type": "application/json", "response_schema": Story}
    replies = [text_response(json.dumps(STORY)), text_response('{"title": 1}')]
    g, led = diff.run(replies, script, config=config)
    assert led.observed == g.observed == [PARSED, None]
    assert_same(g, led)


def test_stream_chunks_parsed_as_google_genai(diff: Differential) -> None:
    """google-genai reads ``parsed`` from each chunk's own text: a chunk that holds a
    whole JSON value is parsed, a piece of one is not. chatledger's ``chat.last`` (the
    merged reply) is parsed whole."""
    half = json.dumps(STORY)[:10]
    rest = json.dumps(STORY)[10:]

    def script(chat: Any, t: Any) -> Any:
        config = {"response_mime_type": "application/json", "response_schema": Story}
        first = [plain(c.parsed) for c in chat.send_message_stream("a", config=config)]
        second = [plain(c.parsed) for c in chat.send_message_stream("b", config=config)]
        return [first, second]

    replies = [
        sse(text_response(half, finish_reason=None), text_response(rest)),
        sse(text_response(json.dumps(STORY))),
    ]
    g, led = diff.run(replies, script)
    assert led.observed == g.observed == [[None, None], [PARSED]]
    assert led.bodies[0] == g.bodies[0]
    # The second request differs only by the history: google-genai sends the two chunks
    # of the first reply as two contents (docs/differences.md#stream-one-turn).
    assert led.bodies[1]["generationConfig"] == g.bodies[1]["generationConfig"]
    assert len(g.contents[1]) == len(led.contents[1]) + 1


def test_last_is_the_whole_streamed_reply_parsed(diff: Differential) -> None:
    text = json.dumps(STORY)
    config = {"response_mime_type": "application/json", "response_schema": Story}
    chat = diff.create_ledger(config=config)
    diff.enqueue([sse(text_response(text[:10], finish_reason=None), text_response(text[10:]))])
    assert [c.parsed for c in chat.send_message_stream("a")] == [None, None]
    assert chat.last is not None
    assert chat.last.parsed == Story.model_validate(STORY)
    # Reopened from the log alone: the recorded schema is a JSON schema, read as JSON.
    resumed_last = diff.resume(chat).last
    assert resumed_last is not None
    assert resumed_last.parsed == STORY


async def test_async_parsed_as_google_genai(adiff: Differential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        config = {"response_mime_type": "application/json", "response_schema": list[Story]}
        unary = await chat.send_message("a", config=config)
        stream = await chat.send_message_stream("b", config=config)
        return [plain(unary.parsed), [plain(c.parsed) async for c in stream]]

    replies = [text_response(json.dumps([STORY])), sse(text_response(json.dumps([STORY])))]
    g, led = await adiff.arun(replies, script)
    assert led.observed == g.observed == [[PARSED], [[PARSED]]]
    assert led.bodies == g.bodies


def test_continued_json_answer_is_parsed_whole(diff: Differential) -> None:
    def hop(text: str, reason: str, token: str | None = None) -> Any:
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": [{"text": text}]},
            "finishReason": reason,
        }
        if token:
            candidate["continuationToken"] = token
        return json_reply({"candidates": [candidate]})

    text = json.dumps(STORY)

    def script(chat: Any, t: Any) -> Any:
        config = {"response_mime_type": "application/json", "response_schema": Story}
        return plain(chat.send_message("a", config=config).parsed)

    g, led = diff.run([hop(text[:12], "CONTINUATION", "dG9r"), hop(text[12:], "STOP")], script)
    assert led.observed == g.observed == PARSED
    assert_same(g, led)


def test_an_unsupported_schema_key_is_refused_before_anything_is_recorded(
    diff: Differential,
) -> None:
    chat: chatledger.Chat = diff.create_ledger()
    with pytest.raises(InvalidInputError, match="exclusiveMinimum"):
        chat.send_message(
            "x",
            config={"response_schema": {"type": "integer", "exclusiveMinimum": 3}},
        )
    assert [e.type for e in chat.events()] == ["conversation_started"]
    assert schema_to_wire({"type": "string"}) == {"type": "STRING"}


def test_a_pydantic_class_as_response_json_schema_is_sent_as_its_json_schema(
    diff: Differential,
) -> None:
    """google-genai cannot send a class given as ``response_json_schema`` (TypeError,
    before any request); chatledger sends its ``model_json_schema()`` and parses with it
    (docs/differences.md#google-genai-smaller)."""
    config = {"response_mime_type": "application/json", "response_json_schema": Story}
    genai_chat = diff.create_genai()
    with pytest.raises(TypeError, match="not JSON serializable"):
        genai_chat.send_message("x", config=config)
    assert diff.server.requests == []

    chat = diff.create_ledger()
    diff.enqueue([text_response(json.dumps(STORY))])
    assert chat.send_message("x", config=config).parsed == Story.model_validate(STORY)
    sent = diff.server.requests[-1].body["generationConfig"]["responseJsonSchema"]
    assert sent == Story.model_json_schema()
