"""Differential tests against google-genai 3.3.0 on one loopback server: automatic
continuation (docs/chat-api.md#continuation).

Both clients talk to the same :class:`GeminiServer` with identical scripted hops; the
request bodies (contents, config and ``continuationToken`` of every hop), what the caller
sees (text, finish reasons, usage) and the histories are compared. A streamed reply is
one model turn in chatledger (docs/differences.md#stream-one-turn): for streams the
histories are compared after merging google-genai's chunk contents.
"""

from __future__ import annotations

import base64
from typing import Any

from tests.support.differential import (
    Differential,
    adiff,
    assert_same,
    diff,
    json_reply,
    sse,
)

FIXTURES = (adiff, diff)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def hop(
    text: str, reason: str | None = None, token: bytes | None = None, **extra: Any
) -> dict[str, Any]:
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


HOPS = [
    json_reply(hop("One. ", "CONTINUATION", b"tok-1", usageMetadata=usage(5, 10))),
    json_reply(hop("Two. ", "CONTINUATION", b"tok-2", usageMetadata=usage(15, 10))),
    json_reply(hop("Three.", "STOP", usageMetadata=usage(25, 4))),
]


def seen(response: Any) -> dict[str, Any]:
    """What a caller reads of a response, in one form for both libraries."""
    candidate = response.candidates[0] if response.candidates else None
    metadata = response.usage_metadata
    return {
        "text": response.text,
        "finish_reason": str(getattr(candidate.finish_reason, "value", None))
        if candidate
        else None,
        "token": candidate.continuation_token if candidate else None,
        "prompt_tokens": metadata.prompt_token_count if metadata else None,
        "initial_prompt_tokens": metadata.initial_prompt_token_count if metadata else None,
        "total_tokens": metadata.total_token_count if metadata else None,
    }


def test_send_message_follows_every_hop_as_google_genai(diff: Differential) -> None:
    def script(chat: Any, t: Any) -> Any:
        first = seen(chat.send_message("Write a long story", config={"temperature": 0.3}))
        return [first, chat.send_message("Thanks").text]

    replies = [*HOPS, json_reply(hop("You're welcome.", "STOP"))]
    g, led = diff.run(replies, script)

    assert g.observed == led.observed
    assert led.observed[0] == {
        "text": "One. Two. Three.",
        "finish_reason": "STOP",
        "token": None,
        "prompt_tokens": 45,
        "initial_prompt_tokens": 5,
        "total_tokens": 69,
    }
    assert_same(g, led)  # every hop's body (token included), and the merged history
    assert [body.get("continuationToken") for body in led.bodies] == [
        None,
        b64(b"tok-1"),
        b64(b"tok-2"),
        None,
    ]
    assert led.full[1]["parts"] == [{"text": "One. "}, {"text": "Two. "}, {"text": "Three."}]
    assert led.events.count("model_call_started") == 4


def test_automatic_continuation_false_as_google_genai(diff: Differential) -> None:
    def script(chat: Any, t: Any) -> Any:
        config = t.GenerateContentConfig(automatic_continuation=False)
        return seen(chat.send_message("Write a long story", config=config))

    g, led = diff.run(HOPS[:1], script)
    assert g.observed == led.observed
    assert led.observed["finish_reason"] == "CONTINUATION"
    assert led.observed["token"] == b"tok-1"
    assert_same(g, led)


def test_stream_follows_every_hop_as_google_genai(diff: Differential) -> None:
    def script(chat: Any, t: Any) -> Any:
        return [seen(chunk) for chunk in chat.send_message_stream("Write a long story")]

    replies = [
        sse(
            hop("A1 ", usageMetadata=usage(5, 1)),
            hop("A2 ", "CONTINUATION", b"s-1", usageMetadata=usage(5, 2)),
        ),
        sse(hop("B1", "STOP", usageMetadata=usage(9, 3))),
    ]
    g, led = diff.run(replies, script)

    assert g.observed == led.observed
    assert [chunk["finish_reason"] for chunk in led.observed] == ["None", "None", "STOP"]
    assert led.observed[-1]["prompt_tokens"] == 14
    assert led.bodies == g.bodies
    assert [body.get("continuationToken") for body in led.bodies] == [None, b64(b"s-1")]
    # google-genai keeps each chunk as a content; chatledger one merged model turn.
    genai_text = "".join(p["text"] for c in g.full[1:] for p in c["parts"])
    assert "".join(p["text"] for p in led.full[1]["parts"]) == genai_text == "A1 A2 B1"


def test_stream_resumes_from_a_checkpoint_after_an_early_end(diff: Differential) -> None:
    """A hop that ends without a finish reason after a checkpoint token is resumed."""

    def script(chat: Any, t: Any) -> Any:
        return [chunk.text for chunk in chat.send_message_stream("Write a long story")]

    replies = [sse(hop("Intro. "), hop("Ckpt. ", token=b"ckpt")), sse(hop("Done.", "STOP"))]
    g, led = diff.run(replies, script)
    assert g.observed == led.observed == ["Intro. ", "Ckpt. ", "Done."]
    assert led.bodies == g.bodies
    assert led.bodies[1]["continuationToken"] == b64(b"ckpt")


def test_function_calling_after_a_continued_answer_as_google_genai(diff: Differential) -> None:
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"Sunny in {city}"

    call = {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
    replies = [
        json_reply(hop("Thinking. ", "CONTINUATION", b"afc-1")),
        json_reply({"candidates": [{"content": {"role": "model", "parts": [call]}}]}),
        json_reply(hop("It is sunny.", "STOP")),
    ]

    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("Weather in Oslo?").text

    g, led = diff.run(replies, script, config={"tools": [get_weather]})
    assert g.observed == led.observed == "It is sunny."
    assert_same(g, led)
    assert [body.get("continuationToken") for body in led.bodies] == [None, b64(b"afc-1"), None]


async def test_async_send_and_stream_as_google_genai(adiff: Differential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        unary = seen(await chat.send_message("Write a long story"))
        stream = await chat.send_message_stream("And another")
        return [unary, [seen(chunk) async for chunk in stream]]

    replies = [
        *HOPS,
        sse(hop("X ", "CONTINUATION", b"as-1")),
        sse(hop("Y", "STOP")),
    ]
    g, led = await adiff.arun(replies, script)
    assert g.observed == led.observed
    assert led.bodies == g.bodies
    assert led.bodies[-1]["continuationToken"] == b64(b"as-1")


def test_stream_hops_without_progress_are_retried_three_times(diff: Differential) -> None:
    """Hops that bring neither content nor a new token are retried from the same token
    three times, then the stream ends: the same requests as google-genai."""
    empty = {"usageMetadata": usage(1, 0)}

    def script(chat: Any, t: Any) -> Any:
        return [chunk.text for chunk in chat.send_message_stream("Write a long story")]

    replies = [sse(hop("Start. ", "CONTINUATION", b"stuck")), *[sse(empty) for _ in range(4)]]
    g, led = diff.run(replies, script)
    assert g.observed == led.observed
    assert led.bodies == g.bodies
    assert [body.get("continuationToken") for body in led.bodies] == [None, *[b64(b"stuck")] * 4]
    # The answer never finished: recorded, but not a valid turn (not in the context).
    assert led.context == g.context == []
