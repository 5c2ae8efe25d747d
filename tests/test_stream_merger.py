"""Merging the chunks of a streamed reply into the one response the log records
(docs/chat-api.md, "Streaming"): text runs joined, other parts kept in order, the last
value of every other field, registered secrets masked, in time linear in the reply."""

from __future__ import annotations

from typing import Any

from chatledger.client._stream import StreamMerger
from chatledger.errors import register_secret


def chunk(*parts: dict[str, Any], index: int = 0, **fields: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": index}
    candidate.update(fields)
    return {"candidates": [candidate]}


def merge(*chunks: dict[str, Any]) -> StreamMerger:
    merger = StreamMerger()
    for item in chunks:
        merger.add(item)
    return merger


def test_adjacent_text_is_joined_and_other_parts_keep_their_place() -> None:
    signed = {"text": "signed", "thoughtSignature": "c2ln"}
    call = {"functionCall": {"name": "f", "args": {}}}
    merger = merge(
        chunk({"text": "Let me ", "thought": True}, {"text": "think.", "thought": True}),
        chunk({"text": "Hel"}, {"text": "lo"}),
        chunk(signed),
        chunk({"text": " and "}, call),
        chunk({"text": "bye"}, finishReason="STOP"),
        {"usageMetadata": {"totalTokenCount": 9}, "modelVersion": "m1"},
    )
    merged = merger.merged()
    assert merged["candidates"] == [
        {
            "index": 0,
            "finishReason": "STOP",
            "content": {
                "role": "model",
                "parts": [
                    {"text": "Let me think.", "thought": True},
                    {"text": "Hello"},
                    signed,
                    {"text": " and "},
                    call,
                    {"text": "bye"},
                ],
            },
        }
    ]
    assert merged["usageMetadata"] == {"totalTokenCount": 9} and merged["modelVersion"] == "m1"
    assert merger.partial_text() == "Hellosigned and bye"
    assert merger.chunks == 6


def test_candidates_are_merged_by_index() -> None:
    merged = merge(
        {
            "candidates": [
                chunk({"text": "a"})["candidates"][0],
                chunk({"text": "x"}, index=1)["candidates"][0],
            ]
        },
        chunk({"text": "b"}),
        chunk({"text": "y"}, index=1, finishReason="MAX_TOKENS"),
    ).merged()
    texts = [c["content"]["parts"][0]["text"] for c in merged["candidates"]]
    assert texts == ["ab", "xy"] and merged["candidates"][1]["finishReason"] == "MAX_TOKENS"


class _NoConcatenation(str):
    """A text piece that fails if it is concatenated with another."""

    def __add__(self, other: str) -> str:
        raise AssertionError("a text piece was concatenated: merging is quadratic")


def test_merging_never_copies_the_reply_for_each_chunk() -> None:
    """Joining each chunk's text to the text so far copied the whole reply again for
    every chunk: 14 s of CPU for a 1 MB reply in 50-byte chunks, and far worse for a
    server streaming tiny events up to the 64 MiB limit. Pieces are joined once."""
    pieces = [_NoConcatenation(f"piece {n} ") for n in range(5000)]
    merger = merge(*(chunk({"text": piece}) for piece in pieces))
    text = merger.merged()["candidates"][0]["content"]["parts"][0]["text"]
    assert text == "".join(pieces)
    assert merger.partial_text() == text


def test_a_secret_split_over_chunks_is_masked_in_the_merged_reply() -> None:
    secret = "merged-SECRET-7e6d5c4b"
    register_secret(secret)
    merged = merge(chunk({"text": f"it is {secret[:9]}"}), chunk({"text": f"{secret[9:]}!"}))
    assert merged.merged()["candidates"][0]["content"]["parts"] == [{"text": "it is ***!"}]
