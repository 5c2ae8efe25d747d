"""Automatic continuation in the log: every hop is its own model call (with its token),
the history gets one merged model turn, replay serves each hop, ``verify`` covers the
hops, and a server that never stops asking to continue is cut off.

(Google's own continuation tests are ported in tests/upstream/; the request bodies are
compared with google-genai 3.3.0's in tests/test_differential_continuation.py.)
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any, TypeVar

import pytest

import chatledger
from chatledger import types
from chatledger.client import ReplayTransport, recorded_calls, replay_conversation
from chatledger.client._conversation import MAX_CONTINUATION_HOPS
from chatledger.client.transports import ScriptedTransport
from chatledger.errors import InvalidResponseError, ServerError
from chatledger.events.envelope import RecordedEvent
from chatledger.events.kinds import ModelCallFailed, ModelCallStarted, ModelResponded
from chatledger.projections.continuation import merge_hops
from chatledger.types import MAX_CONTINUATION_TOKEN_BYTES

T = TypeVar("T")


def data_of(events: list[RecordedEvent], kind: type[T]) -> list[T]:
    """The data of the events of one kind, typed."""
    return [event.data for event in events if isinstance(event.data, kind)]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def hop(text: str, reason: str | None, token: bytes | None = None, **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if reason:
        candidate["finishReason"] = reason
    if token:
        candidate["continuationToken"] = b64(token)
    return {"candidates": [candidate], **extra}


def usage(prompt: int, candidates: int) -> dict[str, int]:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates,
    }


def three_hops(scripted: ScriptedTransport) -> None:
    scripted.enqueue(hop("One. ", "CONTINUATION", b"t1", usageMetadata=usage(5, 10)))
    scripted.enqueue(hop("Two. ", "CONTINUATION", b"t2", usageMetadata=usage(15, 10)))
    scripted.enqueue(hop("Three.", "STOP", usageMetadata=usage(25, 4)))


@pytest.fixture
def scripted() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
def client(scripted: ScriptedTransport, tmp_path: Path) -> chatledger.Client:
    return chatledger.Client(store=str(tmp_path / "log.db"), transport=scripted)


def test_every_hop_is_a_model_call_with_its_token_in_the_log(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    chat = client.chats.create(model="gemini-2.5-pro", config={"temperature": 0.1})
    three_hops(scripted)
    response = chat.send_message("Write a long story")

    assert response.text == "One. Two. Three."
    assert response.candidates is not None
    assert response.candidates[0].continuation_token is None
    assert response.usage_metadata is not None
    assert response.usage_metadata.prompt_token_count == 45
    assert response.initial_prompt_token_count == 5

    events = chat.events()
    started = data_of(events, ModelCallStarted)
    responded = data_of(events, ModelResponded)
    assert [s.continuation_token for s in started] == [None, b64(b"t1"), b64(b"t2")]
    assert [(r.continued, r.ends_turn) for r in responded] == [
        (True, False),
        (True, False),
        (False, True),
    ]
    # Each hop's response is recorded as the server sent it, not merged.
    assert [r.response["candidates"][0]["content"]["parts"][0]["text"] for r in responded] == [
        "One. ",
        "Two. ",
        "Three.",
    ]
    # The same contents every hop, the token at the top of the request, config kept.
    first = scripted.requests[0]
    for request, token in zip(scripted.requests, [None, b"t1", b"t2"], strict=True):
        assert request.contents == first.contents
        assert request.config.get("continuationToken") == (b64(token) if token else None)
        assert request.config["generationConfig"] == {"temperature": 0.1}
        assert "automaticContinuation" not in request.config["generationConfig"]
    # One merged model turn, its parts kept apart as google-genai keeps them.
    history = chat.get_history()
    assert [c.role for c in history] == ["user", "model"]
    assert [p.text for p in history[1].parts or []] == ["One. ", "Two. ", "Three."]
    assert chat.last is not None and chat.last.text == "One. Two. Three."
    assert chat.usage.model_calls == 3
    assert chat.verify().ok


def test_the_history_folds_from_the_log_alone(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    chat = client.chats.create(model="gemini-2.5-pro")
    three_hops(scripted)
    chat.send_message("Write a long story")
    scripted.enqueue("Short.")
    chat.send_message("And a short one")
    again = client.chats.get(chat.id)
    assert again.get_history() == chat.get_history()
    assert [p.text for p in again.get_history()[1].parts or []] == ["One. ", "Two. ", "Three."]
    # The next message sends the merged turn, without any token.
    assert "continuationToken" not in scripted.requests[-1].config
    assert scripted.requests[-1].contents[1]["parts"] == [
        {"text": "One. "},
        {"text": "Two. "},
        {"text": "Three."},
    ]


def test_automatic_continuation_false_returns_the_first_hop(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    chat = client.chats.create(
        model="gemini-2.5-pro", config=types.GenerateContentConfig(automatic_continuation=False)
    )
    scripted.enqueue(hop("One. ", "CONTINUATION", b"t1"))
    response = chat.send_message("Write a long story")
    assert len(scripted.requests) == 1
    assert response.candidates is not None
    assert response.candidates[0].continuation_token == b"t1"
    assert response.candidates[0].finish_reason == types.FinishReason.CONTINUATION
    # Resuming by hand: the token given in the config is sent as google-genai sends it.
    scripted.enqueue(hop("Two.", "STOP"))
    chat.send_message("go on", config=types.GenerateContentConfig(continuation_token=b"t1"))
    assert scripted.requests[-1].config["continuationToken"] == b64(b"t1")


def test_replay_serves_each_hop_and_finds_no_difference(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    chat = client.chats.create(model="gemini-2.5-pro")
    three_hops(scripted)
    chat.send_message("Write a long story")
    scripted.enqueue(chunks=[hop("A", None, b"s1"), hop("B", "CONTINUATION")])
    scripted.enqueue(chunks=[hop("C", "STOP")])
    assert "".join(c.text or "" for c in chat.send_message_stream("Stream one")) == "ABC"

    calls = recorded_calls(client.store, chat.id)
    assert len(calls) == 5
    assert [c.config.get("continuationToken") for c in calls] == [
        None,
        b64(b"t1"),
        b64(b"t2"),
        None,
        b64(b"s1"),
    ]
    assert all(call.digest_matches for call in calls)
    report = replay_conversation(client.store, chat.id)
    assert report.ok, report
    assert report.replayed == 5

    # The same code, offline, gets the recorded answers hop by hop.
    with chatledger.Client(
        store=":memory:", transport=ReplayTransport.from_log(client.store, chat.id)
    ) as offline:
        replayed = offline.chats.create(model="gemini-2.5-pro")
        assert replayed.send_message("Write a long story").text == "One. Two. Three."
        assert "".join(c.text or "" for c in replayed.send_message_stream("Stream one")) == "ABC"


def test_stream_hops_clear_the_intermediate_finish_reason_and_sum_usage(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    chat = client.chats.create(model="gemini-2.5-pro")
    scripted.enqueue(chunks=[hop("A", "CONTINUATION", b"s1", usageMetadata=usage(5, 1))])
    scripted.enqueue(chunks=[hop("B", "STOP", usageMetadata=usage(6, 1))])
    chunks = list(chat.send_message_stream("Go"))
    assert [c.candidates[0].finish_reason if c.candidates else None for c in chunks] == [
        None,
        types.FinishReason.STOP,
    ]
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.prompt_token_count == 11
    assert chunks[-1].usage_metadata.initial_prompt_token_count == 5
    # The log keeps each hop as it came (its CONTINUATION finish reason included).
    responded = data_of(chat.events(), ModelResponded)
    assert responded[0].response["candidates"][0]["finishReason"] == "CONTINUATION"
    assert [p.text for p in chat.get_history()[1].parts or []] == ["A", "B"]


def test_a_broken_hop_after_a_checkpoint_is_resumed_and_recorded(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    chat = client.chats.create(model="gemini-2.5-pro")
    error = ServerError(503, {"error": {"code": 503, "message": "gone", "status": "UNAVAILABLE"}})
    scripted.enqueue(chunks=[hop("Intro. ", None, b"ckpt")], error=error)
    scripted.enqueue(chunks=[hop("Rest.", "STOP")])
    assert "".join(c.text or "" for c in chat.send_message_stream("Go")) == "Intro. Rest."
    failed = data_of(chat.events(), ModelCallFailed)
    assert len(failed) == 1
    assert failed[0].continued and not failed[0].ends_turn
    assert failed[0].error.code == 503
    assert failed[0].partial is not None
    assert [p.text for p in chat.get_history()[1].parts or []] == ["Intro. ", "Rest."]
    assert replay_conversation(client.store, chat.id).ok


def test_a_turn_broken_between_hops_leaves_no_history(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    chat = client.chats.create(model="gemini-2.5-pro")
    scripted.enqueue(hop("One. ", "CONTINUATION", b"t1"))
    scripted.enqueue(
        error=ServerError(500, {"error": {"code": 500, "message": "x", "status": "INTERNAL"}})
    )
    with pytest.raises(ServerError):
        chat.send_message("Write a long story")
    assert chat.get_history() == []
    # The conversation goes on; the half answer is not sent.
    scripted.enqueue("Fine.")
    chat.send_message("Something else")
    assert [c["parts"][0]["text"] for c in scripted.requests[-1].contents] == ["Something else"]


async def test_async_send_and_stream_continue(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    chat = client.aio.chats.create(model="gemini-2.5-pro")
    three_hops(scripted)
    response = await chat.send_message("Write a long story")
    assert response.text == "One. Two. Three."
    scripted.enqueue(chunks=[hop("A", "CONTINUATION", b"s1")])
    scripted.enqueue(chunks=[hop("B", "STOP")])
    stream = await chat.send_message_stream("Stream")
    assert [c.text async for c in stream] == ["A", "B"]
    assert [s.continuation_token for s in recorded_calls_tokens(client, chat.id)] == [
        None,
        b64(b"t1"),
        b64(b"t2"),
        None,
        b64(b"s1"),
    ]


def recorded_calls_tokens(client: chatledger.Client, conversation_id: str) -> list[Any]:
    return data_of(client.store.read(conversation_id), ModelCallStarted)


def test_afc_runs_the_functions_of_the_merged_answer(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    def get_weather(city: str) -> str:
        """Weather of a city."""
        return f"Sunny in {city}"

    chat = client.chats.create(model="gemini-2.5-pro", config={"tools": [get_weather]})
    scripted.enqueue(hop("Thinking. ", "CONTINUATION", b"t1"))
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
    scripted.enqueue({"candidates": [{"content": {"role": "model", "parts": [call]}}]})
    scripted.enqueue("It is sunny.")
    assert chat.send_message("Weather in Oslo?").text == "It is sunny."
    last = scripted.requests[-1]
    assert "continuationToken" not in last.config
    assert last.contents[1]["parts"] == [{"text": "Thinking. "}, call]
    assert last.contents[2]["parts"][0]["functionResponse"]["name"] == "get_weather"
    assert replay_conversation(client.store, chat.id).ok


def test_a_server_that_never_stops_continuing_is_cut_off(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    chat = client.chats.create(model="gemini-2.5-pro")
    for index in range(MAX_CONTINUATION_HOPS + 1):
        scripted.enqueue(hop(f"{index} ", "CONTINUATION", f"t{index}".encode()))
    with pytest.raises(InvalidResponseError, match="continue its answer more than"):
        chat.send_message("Never ending")
    assert len(scripted.requests) == MAX_CONTINUATION_HOPS + 1
    assert chat.get_history() == []
    assert chat.events()[-1].type == "model_call_failed"


def test_verify_catches_a_changed_hop_token(
    client: chatledger.Client, scripted: ScriptedTransport, tmp_path: Path
) -> None:
    chat = client.chats.create(model="gemini-2.5-pro")
    three_hops(scripted)
    chat.send_message("Write a long story")
    path = str(tmp_path / "log.db")
    client.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        changed = conn.execute(
            "UPDATE events SET data = replace(data, ?, ?) WHERE conversation_id = ?",
            (b64(b"t1"), b64(b"forged"), chat.id),
        ).rowcount
        conn.execute(
            "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
            "BEGIN SELECT RAISE(ABORT, 'chatledger events are immutable'); END"
        )
        conn.commit()
    assert changed >= 1
    with chatledger.Client(store=path, transport=ScriptedTransport()) as reopened:
        assert not reopened.store.verify(chat.id).ok


def test_merge_hops_follows_google_genai_rules() -> None:
    first = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "a"}]},
                "finishReason": "CONTINUATION",
                "continuationToken": "dA==",
                "safetyRatings": [{"category": "C1", "probability": "LOW"}],
                "groundingMetadata": {
                    "groundingChunks": [{"web": {"uri": "u1"}}],
                    "groundingSupports": [{"groundingChunkIndices": [0], "segment": {}}],
                },
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 3,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 3}],
        },
        "modelVersion": "v1",
    }
    second = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "b"}]},
                "finishReason": "STOP",
                "safetyRatings": [{"category": "C1", "probability": "HIGH"}],
                "groundingMetadata": {
                    "groundingChunks": [{"web": {"uri": "u2"}}],
                    "groundingSupports": [
                        {"groundingChunkIndices": [0], "segment": {"partIndex": 0}}
                    ],
                },
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 4,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4}],
        },
        "modelVersion": "v2",
    }
    merged = merge_hops([first, second])
    candidate = merged["candidates"][0]
    assert candidate["content"]["parts"] == [{"text": "a"}, {"text": "b"}]
    assert candidate["finishReason"] == "STOP"
    assert "continuationToken" not in candidate
    assert candidate["safetyRatings"] == [{"category": "C1", "probability": "HIGH"}]
    assert candidate["groundingMetadata"]["groundingSupports"][1] == {
        "groundingChunkIndices": [1],
        "segment": {"partIndex": 1},
    }
    assert merged["usageMetadata"] == {
        "promptTokenCount": 7,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 7}],
    }
    assert merged["modelVersion"] == "v2"
    assert merge_hops([first]) is first


def test_a_runaway_partial_reply_is_cut_to_the_reply_bound(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """A stream that breaks after a huge partial reply records at most
    ``max_response_bytes`` of it (the bound of a whole reply), and says so."""
    scripted.max_response_bytes = 4096  # type: ignore[attr-defined]
    chat = client.chats.create(model="gemini-2.5-pro")
    huge: list[str | dict[str, Any]] = [hop('"quoted" ' * 200, None) for _ in range(20)]
    error = ServerError(500, {"error": {"code": 500, "message": "x", "status": "INTERNAL"}})
    scripted.enqueue(chunks=huge, error=error)
    with pytest.raises(ServerError):
        for _ in chat.send_message_stream("Go on forever"):
            pass
    failed = data_of(chat.events(), ModelCallFailed)[0]
    assert failed.partial is not None
    assert len(json.dumps(failed.partial, separators=(",", ":"))) <= 4096
    assert failed.partial["chatledgerTruncated"]["limit"] == 4096
    assert failed.partial["chatledgerTruncated"]["bytes"] > 4096 * 10
    text = failed.partial["candidates"][0]["content"]["parts"][0]["text"]
    assert text and ('"quoted" ' * 200 * 20).startswith(text)
    # A small partial is kept whole.
    scripted.enqueue(chunks=[hop("small", None)], error=error)
    with pytest.raises(ServerError):
        for _ in chat.send_message_stream("Again"):
            pass
    failed = data_of(chat.events(), ModelCallFailed)[-1]
    assert failed.partial == hop("small", None)
    assert chat.verify().ok


def test_the_hop_bound_counts_each_model_call_of_a_turn_apart(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    def get_weather(city: str) -> str:
        """Weather of a city."""
        return f"Sunny in {city}"

    chat = client.chats.create(model="gemini-2.5-pro", config={"tools": [get_weather]})
    long = MAX_CONTINUATION_HOPS - 1  # hops after the first: at the bound, not past it
    for index in range(long):
        scripted.enqueue(hop(f"{index} ", "CONTINUATION", f"a{index}".encode()))
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
    scripted.enqueue({"candidates": [{"content": {"role": "model", "parts": [call]}}]})
    for index in range(long):
        scripted.enqueue(hop(f"{index} ", "CONTINUATION", f"b{index}".encode()))
    scripted.enqueue(hop("Sunny.", "STOP"))
    response = chat.send_message("Weather in Oslo?")
    assert response.text is not None and response.text.endswith("Sunny.")
    assert len(scripted.requests) == 2 * MAX_CONTINUATION_HOPS
    assert chat.verify().ok


def test_a_huge_continuation_token_is_refused_and_never_sent_back(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    chat = client.chats.create(model="gemini-2.5-pro")
    huge = b"x" * (MAX_CONTINUATION_TOKEN_BYTES + 1)
    scripted.enqueue(hop("One. ", "CONTINUATION", huge))
    with pytest.raises(InvalidResponseError, match="continuation_token is"):
        chat.send_message("Write a long story")
    assert len(scripted.requests) == 1
    # In a stream, the chunk is refused; as after any error, the stream resumes from the
    # last good checkpoint, never with the huge token.
    scripted.enqueue(chunks=[hop("A", None, b"ok"), hop("B", "CONTINUATION", huge)])
    scripted.enqueue(chunks=[hop("C", "STOP")])
    assert [c.text for c in chat.send_message_stream("Stream it")] == ["A", "C"]
    assert [r.config.get("continuationToken") for r in scripted.requests[1:]] == [None, b64(b"ok")]
    failed = data_of(chat.events(), ModelCallFailed)
    assert len(failed) == 2 and failed[1].continued
    assert "continuation_token is" in failed[1].error.message
    # A token at the bound is followed.
    scripted.enqueue(hop("One. ", "CONTINUATION", b"y" * MAX_CONTINUATION_TOKEN_BYTES))
    scripted.enqueue(hop("Two.", "STOP"))
    assert chat.send_message("Again").text == "One. Two."
