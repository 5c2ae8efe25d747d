"""Replay debugging: recorded conversations replay offline with no difference, and a
change to the system instruction, a tool or the code's message is reported at the right
turn and field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger import types
from chatledger.client import ReplayTransport, recorded_calls, replay_conversation
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.errors import ReplayMismatchError, ServerError
from chatledger.types import FunctionDeclaration, Tool


def lookup(city: str) -> str:
    """Look a city up."""
    return f"{city} is lovely"


def changed_lookup(city: str) -> str:
    """Look a city up, in more detail."""
    return f"{city} is lovely"


changed_lookup.__name__ = "lookup"

# Python functions only: google-genai (and chatledger, as it) turns automatic function
# calling off when declaration-only tools sit beside them.
CONFIG: dict[str, Any] = {
    "system_instruction": "You are a travel guide.",
    "temperature": 0.2,
    "tools": [lookup],
}
DECLARED = [
    Tool(
        function_declarations=[
            FunctionDeclaration(name="weather", description="The weather in a city.")
        ]
    )
]


def call(name: str, **args: Any) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": name, "args": args}}],
                },
                "finishReason": "STOP",
            }
        ]
    }


@pytest.fixture
def recorded(db_path: Path) -> Iterator[tuple[chatledger.Client, str]]:
    """A conversation with plain, streamed, failed, rewound and function-calling turns."""
    transport = ScriptedTransport()
    with chatledger.Client(store=str(db_path), transport=transport) as client:
        chat = client.chats.create(model="gemini-x", config=CONFIG)
        transport.enqueue("Paris is nice.")
        chat.send_message("Where should I go?")
        transport.enqueue(chunks=["Try ", "the Louvre."])
        list(chat.send_message_stream("What to see?"))
        transport.enqueue(
            error=ServerError(500, {"error": {"code": 500, "message": "x", "status": "INTERNAL"}})
        )
        with pytest.raises(ServerError):
            chat.send_message("And food?")
        transport.enqueue("Croissants.")
        chat.send_message("And food?")
        transport.enqueue("Forget it.")
        chat.send_message("Something wrong")
        chat.rewind()
        transport.enqueue(call("lookup", city="Lyon"))
        transport.enqueue("Lyon is lovely indeed.")
        chat.send_message("Tell me about Lyon", config={"temperature": 0.9})
        yield client, chat.id


def test_a_recorded_conversation_replays_with_no_difference(
    recorded: tuple[chatledger.Client, str],
) -> None:
    client, conversation_id = recorded
    report = replay_conversation(client.store, conversation_id)
    assert report.calls == 7
    assert report.replayed == report.calls
    assert report.differences == [] and report.digest_mismatches == []
    assert report.ok


def test_every_recorded_request_rebuilds_to_its_recorded_digest(
    recorded: tuple[chatledger.Client, str],
) -> None:
    client, conversation_id = recorded
    calls = recorded_calls(client.store, conversation_id)
    assert all(call.digest_matches for call in calls)
    assert [call.turn for call in calls] == [1, 2, 3, 4, 5, 6, 6]
    assert calls[2].error is not None and calls[2].error.code == 500
    assert calls[1].streamed and calls[1].response is not None


def _replay_client(client: chatledger.Client, conversation_id: str) -> chatledger.Client:
    return chatledger.Client(
        store=":memory:", transport=ReplayTransport.from_log(client.store, conversation_id)
    )


def _run(chat: chatledger.Chat, message: str = "Where should I go?") -> None:
    chat.send_message(message)
    list(chat.send_message_stream("What to see?"))


def test_the_same_code_replays_offline_and_gets_the_recorded_replies(
    recorded: tuple[chatledger.Client, str],
) -> None:
    client, conversation_id = recorded
    with _replay_client(client, conversation_id) as debug:
        chat = debug.chats.create(model="gemini-x", config=CONFIG)
        assert chat.send_message("Where should I go?").text == "Paris is nice."
        assert (
            "".join(c.text or "" for c in chat.send_message_stream("What to see?"))
            == "Try the Louvre."
        )
        with pytest.raises(ServerError, match="500 INTERNAL"):
            chat.send_message("And food?")  # the recorded failure, replayed


def test_a_changed_system_instruction_is_reported_at_turn_one(
    recorded: tuple[chatledger.Client, str],
) -> None:
    client, conversation_id = recorded
    with _replay_client(client, conversation_id) as debug:
        chat = debug.chats.create(
            model="gemini-x", config={**CONFIG, "system_instruction": "You are a pirate."}
        )
        with pytest.raises(ReplayMismatchError) as raised:
            _run(chat)
    difference = raised.value.difference
    assert (difference.turn, difference.call) == (1, 1)
    assert difference.field == "config.systemInstruction.parts[0].text"
    assert (difference.old, difference.new) == ("You are a travel guide.", "You are a pirate.")


def test_a_changed_tool_is_reported(recorded: tuple[chatledger.Client, str]) -> None:
    client, conversation_id = recorded
    with _replay_client(client, conversation_id) as debug:
        chat = debug.chats.create(model="gemini-x", config={**CONFIG, "tools": [changed_lookup]})
        with pytest.raises(ReplayMismatchError) as raised:
            _run(chat)
    difference = raised.value.difference
    assert difference.turn == 1
    assert difference.field == "config.tools[0].functionDeclarations[0].description"
    assert (difference.old, difference.new) == (
        "Look a city up.",
        "Look a city up, in more detail.",
    )


def test_declaration_only_tools_replay_too(db_path: Path) -> None:
    transport = ScriptedTransport().enqueue(call("weather", city="Rome")).enqueue("Sunny.")
    with chatledger.Client(store=str(db_path), transport=transport) as client:
        chat = client.chats.create(model="m", config={"tools": DECLARED})
        chat.send_message("Weather in Rome?")
        answer: list[types.PartUnionDict] = [
            types.Part.from_function_response(name="weather", response={"sky": "clear"})
        ]
        chat.send_message(answer)
        assert replay_conversation(client.store, chat.id).ok


def test_a_changed_message_is_reported_at_its_turn(recorded: tuple[chatledger.Client, str]) -> None:
    client, conversation_id = recorded
    with _replay_client(client, conversation_id) as debug:
        chat = debug.chats.create(model="gemini-x", config=CONFIG)
        chat.send_message("Where should I go?")
        with pytest.raises(ReplayMismatchError) as raised:
            list(chat.send_message_stream("What should I see?"))
    difference = raised.value.difference
    assert (difference.turn, difference.call) == (2, 2)
    assert difference.field == "contents[2].parts[0].text"
    assert (difference.old, difference.new) == ("What to see?", "What should I see?")


def test_non_strict_replay_collects_every_difference(
    recorded: tuple[chatledger.Client, str],
) -> None:
    client, conversation_id = recorded
    transport = ReplayTransport.from_log(client.store, conversation_id, strict=False)
    with chatledger.Client(store=":memory:", transport=transport) as debug:
        chat = debug.chats.create(model="gemini-y", config=CONFIG)
        _run(chat)
    assert [(d.turn, d.field) for d in transport.differences] == [(1, "model"), (2, "model")]
    assert transport.remaining == 5


def test_replay_of_a_fork_includes_the_parent_calls(
    recorded: tuple[chatledger.Client, str],
) -> None:
    client, conversation_id = recorded
    transport = ScriptedTransport().enqueue("A fork reply.")
    with chatledger.Client(store=client.store, transport=transport) as other:
        fork = other.chats.get(conversation_id, config=CONFIG).fork(turn=2)
        fork.send_message("Different question")
        report = replay_conversation(other.store, fork.id)
    assert report.ok
    assert report.calls == 3  # the parent's two turns, then the fork's own
