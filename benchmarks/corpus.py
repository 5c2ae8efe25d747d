"""The conversation every benchmark writes: fixed-size messages, in each library's own shape.

Every library stores the same turns: a user message of ``USER_CHARS`` characters and a
model reply of ``MODEL_CHARS`` characters (English-like words, distinct per turn), which is
a typical chat exchange (about 75 and 300 tokens). chatledger and the loopback server use
the Gemini wire form; the peers get the same texts in the shape their own code stores.
"""

from __future__ import annotations

import json
import random
from typing import Any

__all__ = [
    "MODEL",
    "MODEL_CHARS",
    "STREAM_CHUNKS",
    "USER_CHARS",
    "model_content",
    "model_response",
    "model_text",
    "raw_json_bytes",
    "stream_chunks",
    "user_content",
    "user_text",
]

MODEL = "gemini-2.5-flash"
USER_CHARS = 300
MODEL_CHARS = 1200
STREAM_CHUNKS = 3

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "from",
    "at",
    "or",
    "an",
    "have",
    "not",
    "which",
    "but",
    "all",
    "they",
    "one",
    "were",
    "there",
    "can",
    "their",
    "has",
    "more",
    "also",
    "been",
    "if",
    "when",
    "will",
    "would",
    "into",
    "some",
    "other",
    "than",
    "its",
    "only",
    "time",
    "new",
    "these",
    "two",
    "may",
    "first",
    "then",
    "any",
    "like",
    "such",
    "what",
    "about",
    "out",
    "most",
    "over",
    "after",
    "where",
    "our",
    "many",
    "system",
    "data",
    "could",
    "through",
    "those",
    "both",
    "each",
    "use",
    "way",
    "between",
    "used",
    "because",
    "how",
    "well",
    "while",
    "under",
    "three",
    "should",
    "must",
    "very",
    "same",
    "another",
    "work",
    "ledger",
    "event",
    "stream",
    "version",
    "model",
    "reply",
    "message",
    "context",
    "history",
    "turn",
    "store",
    "commit",
    "replay",
    "audit",
    "branch",
    "snapshot",
    "durable",
    "append",
    "order",
    "write",
    "read",
    "request",
    "response",
]


def _pool(count: int, chars: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words: list[str] = []
        length = 0
        while length < chars + 40:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        texts.append(" ".join(words).capitalize())
    return texts


_USER_POOL = _pool(64, USER_CHARS, seed=1)
_MODEL_POOL = _pool(64, MODEL_CHARS, seed=2)


def _exact(prefix: str, body: str, chars: int) -> str:
    return (prefix + body)[:chars]


def user_text(turn: int) -> str:
    """The user message of ``turn`` (exactly USER_CHARS characters, distinct per turn)."""
    return _exact(f"[{turn}] ", _USER_POOL[turn % len(_USER_POOL)], USER_CHARS)


def model_text(turn: int) -> str:
    """The model reply of ``turn`` (exactly MODEL_CHARS characters, distinct per turn)."""
    return _exact(f"[{turn}] ", _MODEL_POOL[turn % len(_MODEL_POOL)], MODEL_CHARS)


def user_content(turn: int) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": user_text(turn)}]}


def model_content(turn: int) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": model_text(turn)}]}


def _usage(turn: int) -> dict[str, int]:
    prompt = 20 + turn * 375
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": 300,
        "totalTokenCount": prompt + 300,
    }


def model_response(turn: int) -> dict[str, Any]:
    """The generateContent response a Gemini model sends for ``turn``, as Google sends it."""
    return {
        "candidates": [{"content": model_content(turn), "finishReason": "STOP", "index": 0}],
        "usageMetadata": _usage(turn),
        "modelVersion": MODEL,
        "responseId": f"bench-{turn:08d}",
    }


def stream_chunks(turn: int) -> list[dict[str, Any]]:
    """The same reply as ``STREAM_CHUNKS`` SSE chunks (text split evenly; the last one
    carries the finish reason and usage)."""
    text = model_text(turn)
    size = -(-len(text) // STREAM_CHUNKS)
    chunks = []
    for index in range(STREAM_CHUNKS):
        candidate: dict[str, Any] = {
            "content": {
                "role": "model",
                "parts": [{"text": text[index * size : (index + 1) * size]}],
            },
            "index": 0,
        }
        chunk: dict[str, Any] = {
            "candidates": [candidate],
            "modelVersion": MODEL,
            "responseId": f"bench-{turn:08d}",
        }
        if index == STREAM_CHUNKS - 1:
            candidate["finishReason"] = "STOP"
            chunk["usageMetadata"] = _usage(turn)
        chunks.append(chunk)
    return chunks


def raw_json_bytes(turns: int) -> int:
    """Bytes of the conversation's contents as compact JSON (the wire contents of ``turns``
    turns: what any store must at least keep)."""
    contents = []
    for turn in range(turns):
        contents.append(user_content(turn))
        contents.append(model_content(turn))
    return len(json.dumps(contents, separators=(",", ":"), ensure_ascii=False).encode())
