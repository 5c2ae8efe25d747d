"""Hostile input: huge values (a 10 MB inline part) and deep nesting (129 to 100,000
levels) from callers, function results and model answers."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger import legacy
from chatledger.errors import InvalidInputError, InvalidResponseError
from chatledger.events import SQLiteStore
from chatledger.events.audit import export_conversation, import_lines
from chatledger.events.envelope import MAX_NESTING
from chatledger.types import FunctionCall, Part
from tests.faults import ledger
from tests.faults.hostile.support import (
    AREA,
    MODEL,
    Tally,
    clear_replies,
    log_state,
    outcome,
    reopen,
    stdlib_verifies,
)
from tests.support.gemini_server import GeminiServer, text_response
from tests.support.narrow import part_of, text_of

# --------------------------------------------------------------------------- (a) huge and deep


def test_a_10_mb_inline_part_round_trips_exactly(
    hostile: chatledger.Client, gemini_server: GeminiServer, tmp_path: Path
) -> None:
    tally = Tally()
    payload = random.Random(8).randbytes(10 * 1024 * 1024)
    chat = hostile.chats.create(model=MODEL)
    gemini_server.reply_echo()
    chat.send_message(
        [Part.from_bytes(data=payload, mime_type="application/octet-stream"), "what is this?"]
    )
    tally.inputs += 1
    sent = gemini_server.requests[-1].body["contents"][-1]["parts"][0]["inlineData"]["data"]
    tally.check(base64.urlsafe_b64decode(sent) == payload, "the server did not get the exact bytes")
    for source in (chat, reopen(hostile, chat.id)):
        blob = part_of(source.get_history()[0]).inline_data
        tally.check(
            blob is not None and blob.data == payload, "the history does not hold the exact bytes"
        )
    tally.check(hostile.store.verify(chat.id).ok, "the log does not verify")
    # Through an export file and an import into another store.
    lines = list(export_conversation(hostile.store, chat.id))
    with SQLiteStore(tmp_path / "copy.db") as copy:
        import_lines(copy, lines)
        tally.check(copy.verify().ok, "the imported copy does not verify")
        tally.check(
            [e.hash for e in copy.read(chat.id)] == [e.hash for e in chat.events()],
            "the import changed events",
        )
    # And a 10 MB text message.
    text = "ü" * (5 * 1024 * 1024)
    gemini_server.reply_echo()
    chat.send_message(text)
    tally.inputs += 1
    tally.check(text_of(reopen(hostile, chat.id).get_history()[-2]) == text, "a 10 MB text changed")
    tally.record("send_message/10 MB inline part and text")


def nested(depth: int, leaf: Any = 1) -> Any:
    """``{"a": {"a": ... leaf}}``, ``depth`` objects deep (built without recursion)."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_schema(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"type": "STRING"}
    for _ in range(depth):
        value = {"type": "ARRAY", "items": value}
    return value


DEPTHS = [MAX_NESTING + 1, 1_000, 10_000, 100_000]


def deep_inputs(
    depth: int, session: legacy.ChatSession
) -> list[tuple[str, Callable[[chatledger.Client, chatledger.Chat], Any]]]:
    deep = nested(depth)
    return [
        (
            "message function_call args",
            lambda c, chat: chat.send_message(
                Part(function_call=FunctionCall(name="f", args=deep))
            ),
        ),
        (
            "message list",
            lambda c, chat: chat.send_message(
                ["hi", Part(function_call=FunctionCall(name="f", args=deep))]
            ),
        ),
        (
            "stream message",
            lambda c, chat: list(
                chat.send_message_stream(Part(function_call=FunctionCall(name="f", args=deep)))
            ),
        ),
        (
            "history",
            lambda c, chat: c.chats.create(
                model=MODEL,
                history=[
                    {"role": "user", "parts": [{"functionCall": {"name": "f", "args": deep}}]}
                ],
            ),
        ),
        (
            "history list",
            lambda c, chat: c.chats.create(
                model=MODEL, history=[{"role": "user", "parts": [{"text": "x"}]}, nested(depth, [])]
            ),
        ),
        (
            "config response_schema",
            lambda c, chat: c.chats.create(model=MODEL, config={"response_schema": deep}),
        ),
        (
            "config tool schema",
            lambda c, chat: c.chats.create(
                model=MODEL,
                config={
                    "tools": [
                        {
                            "function_declarations": [
                                {"name": "f", "parameters": nested_schema(depth)}
                            ]
                        }
                    ]
                },
            ),
        ),
        (
            "per-message config",
            lambda c, chat: chat.send_message("hi", config={"response_json_schema": deep}),
        ),
        (
            "legacy content",
            lambda c, chat: session.send_message(
                {"role": "user", "parts": [{"function_call": {"name": "f", "args": deep}}]}
            ),
        ),
    ]


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_nesting_is_a_clear_error_and_writes_nothing(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path, depth: int
) -> None:
    tally = Tally()
    chat = hostile.chats.create(model=MODEL)
    session = legacy.GenerativeModel(MODEL, client=hostile).start_chat()
    for what, action in deep_inputs(depth, session):
        tally.inputs += 1
        clear_replies(gemini_server)
        gemini_server.reply_echo()
        before, requests = log_state(hostile.store, db_path), len(gemini_server.requests)
        _, error = outcome(lambda action=action: action(hostile, chat))  # type: ignore[misc]
        tally.refused(error, before, log_state(hostile.store, db_path), f"{what} at depth {depth}")
        tally.check(
            isinstance(error, InvalidInputError) and "nested" in str(error),
            f"{what}: {error!r:.300}",
        )
        tally.check(len(gemini_server.requests) == requests, f"{what}: reached the server")
    tally.record(f"deep nesting/{depth} levels")


def test_nesting_within_the_limit_round_trips(
    hostile: chatledger.Client, gemini_server: GeminiServer, tmp_path: Path
) -> None:
    depth = MAX_NESTING - 10
    args = nested(depth - 6, "leaf")  # the part and the content wrap args 6 levels deep
    # A schema nested as deep as allowed (each level an array of the next: a Gemini
    # schema has only its own keys, as google-genai's).
    schema = nested_schema(depth - 2)
    chat = hostile.chats.create(model=MODEL, config={"response_schema": schema})
    gemini_server.reply_echo()
    chat.send_message(Part(function_call=FunctionCall(name="f", args=args)))
    assert reopen(hostile, chat.id).get_history()[0].parts[0].function_call.args == args  # type: ignore[index,union-attr]
    with SQLiteStore(tmp_path / "copy.db") as copy:
        import_lines(copy, list(export_conversation(hostile.store, chat.id)))
        assert copy.verify().ok
    ledger.record(AREA, f"nesting/{depth} levels accepted", inputs=1)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 10_000])
def test_deeply_nested_model_answers_are_clear_errors(
    hostile: chatledger.Client, gemini_server: GeminiServer, depth: int
) -> None:
    """A server answering with (or erroring with) JSON nested deeper than the limit: a
    clear error, the failure recorded, the log verifies and the history is unchanged."""
    tally = Tally()
    chat = hostile.chats.create(model=MODEL)
    call = {"functionCall": {"name": "f", "args": nested(depth)}}
    raw = (
        json.dumps(text_response(parts=[call]))
        if depth < 900
        else (
            '{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":'
            + '{"a":' * depth
            + "1"
            + "}" * depth
            + "}}]}}]}"
        )
    )
    cases: list[tuple[str, Callable[[], Any], type[Exception]]] = [
        (
            "answer",
            lambda: (
                gemini_server.reply_raw(raw.encode(), content_type="application/json"),
                chat.send_message("hi"),
            ),
            InvalidResponseError,
        ),
        (
            "stream",
            lambda: (gemini_server.reply_sse([raw]), list(chat.send_message_stream("hi"))),
            InvalidResponseError,
        ),
        (
            "error body",
            lambda: (
                gemini_server.reply_raw(raw.encode(), status=400, content_type="application/json"),
                chat.send_message("hi"),
            ),
            chatledger.ClientError,
        ),
    ]
    for what, action, expected in cases:
        tally.inputs += 1
        clear_replies(gemini_server)
        _, error = outcome(action)
        tally.check(isinstance(error, expected), f"{what}: {error!r:.300}")
        tally.check(hostile.store.verify(chat.id).ok, f"{what}: the log does not verify")
        tally.check(
            chat.get_history() == [] and reopen(hostile, chat.id).get_history() == [],
            f"{what}: history changed",
        )
        tally.check(
            chat.events()[-1].type == "model_call_failed", f"{what}: the failure is not recorded"
        )
    tally.record(f"deep server answers/{depth} levels")


def make_tool(result: Any) -> Callable[[int], Any]:
    def tool(x: int) -> Any:
        """A tool."""
        if isinstance(result, Exception):
            raise result
        return result

    return tool


def test_hostile_function_results_are_recorded_safely(
    hostile: chatledger.Client, gemini_server: GeminiServer
) -> None:
    """A Python tool returning what JSON cannot hold (NaN, a lone surrogate, 10,000 levels,
    a set, an object) or raising with a lone surrogate in its message: the call and its
    response are recorded (as text where the value is not JSON) and the turn completes."""
    results: list[Any] = [
        float("nan"),
        "\ud800",
        nested(10_000),
        nested(MAX_NESTING + 5),
        {1, 2},
        object(),
        b"\xff",
        {"k": float("inf")},
    ]
    tally = Tally()
    for result in [*results, ValueError("bad \udcff input")]:
        tally.inputs += 1

        chat = hostile.chats.create(model=MODEL, config={"tools": [make_tool(result)]})
        clear_replies(gemini_server)
        gemini_server.reply_json(
            text_response(parts=[{"functionCall": {"name": "tool", "args": {"x": 1}}}])
        )
        gemini_server.reply_text("done")
        _, error = outcome(lambda chat=chat: chat.send_message("call it"))  # type: ignore[misc]
        tally.check(error is None, f"{type(result).__name__}: {error!r:.300}")
        tally.check(hostile.store.verify(chat.id).ok, "the log does not verify")
        tally.check(
            stdlib_verifies(hostile.store, chat.id),
            "the export does not verify with the standard library",
        )
        responded = [e for e in chat.events() if e.type == "function_responded"]
        tally.check(len(responded) == 1, "the function response is not recorded")
        tally.check(
            len(reopen(hostile, chat.id).get_history()) == 4, "the turn is not in the history"
        )
    tally.record("automatic function calling/unstorable results")
