"""Merging the chunks of a streamed reply into one response (docs/chat-api.md#streaming).

A streamed reply is one model turn: adjacent plain text parts (only ``text``, and the
same ``thought`` flag) are concatenated; every other part is kept, in order, with its
``thoughtSignature`` and any field this library does not know. Candidate and response
fields (``finishReason``, ``usageMetadata``, ...) take the last value a chunk sent.

The merged response is what the log records, so registered secrets are masked in it
(:func:`chatledger.errors.mask_echoed_secrets`): a model that repeats a key while
streaming splits it over several chunks, where no single chunk holds it whole.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import mask_echoed_secrets

__all__ = ["StreamMerger"]

_PLAIN_KEYS = frozenset({"text", "thought"})


def _is_plain_text(part: Any) -> bool:
    return (
        isinstance(part, dict) and isinstance(part.get("text"), str) and part.keys() <= _PLAIN_KEYS
    )


class _TextRun:
    """Adjacent plain text parts with the same ``thought`` flag: their texts are kept as a
    list and joined once, when the merged reply is asked for (joining as each chunk came
    would copy the whole reply again for every chunk)."""

    __slots__ = ("first", "pieces")

    def __init__(self, first: dict[str, Any]) -> None:
        self.first = first
        self.pieces: list[str] = [first["text"]]

    def joins(self, part: Any) -> bool:
        return _is_plain_text(part) and part.get("thought") == self.first.get("thought")

    def part(self) -> dict[str, Any]:
        if len(self.pieces) == 1:
            return self.first
        return {**self.first, "text": "".join(self.pieces)}


class _CandidateMerger:
    __slots__ = ("content_fields", "fields", "parts", "saw_content")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.content_fields: dict[str, Any] = {}
        self.parts: list[Any] = []
        self.saw_content = False

    def add(self, candidate: dict[str, Any]) -> None:
        for key, value in candidate.items():
            if key != "content":
                self.fields[key] = value
        content = candidate.get("content")
        if not isinstance(content, dict):
            return
        self.saw_content = True
        for key, value in content.items():
            if key != "parts":
                self.content_fields[key] = value
        parts = self.parts
        for part in content.get("parts") or []:
            last = parts[-1] if parts else None
            if isinstance(last, _TextRun) and last.joins(part):
                last.pieces.append(part["text"])
            elif _is_plain_text(part):
                parts.append(_TextRun(part))
            else:
                parts.append(part)

    def _parts(self) -> list[Any]:
        return [part.part() if isinstance(part, _TextRun) else part for part in self.parts]

    def merged(self) -> dict[str, Any]:
        candidate = dict(self.fields)
        if self.saw_content:
            # As google-genai: no role is added where the server sent none.
            candidate["content"] = {"parts": self._parts(), **self.content_fields}
        return candidate

    def text(self) -> str:
        texts: list[str] = []
        for part in self.parts:
            if isinstance(part, _TextRun):
                if not part.first.get("thought"):
                    texts.extend(part.pieces)
            elif (
                isinstance(part, dict)
                and isinstance(part.get("text"), str)
                and not part.get("thought")
            ):
                texts.append(part["text"])
        return "".join(texts)


class StreamMerger:
    """Accumulates wire chunks; ``merged()`` is the response the turn records."""

    def __init__(self) -> None:
        self.chunks = 0
        #: When the first chunk came (``time.perf_counter()``): the span's time to first
        #: chunk (docs/integrations.md#opentelemetry).
        self.first_chunk_at: float | None = None
        self._fields: dict[str, Any] = {}
        self._candidates: dict[int, _CandidateMerger] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        if not self.chunks:
            self.first_chunk_at = time.perf_counter()
        self.chunks += 1
        for name, value in chunk.items():
            if name != "candidates":
                self._fields[name] = value
        candidates = chunk.get("candidates")
        if not isinstance(candidates, list):
            return
        for position, candidate in enumerate(candidates):
            if not isinstance(candidate, dict):
                continue
            index: Any = candidate.get("index", position)
            key: int = index if isinstance(index, int) else position
            self._candidates.setdefault(key, _CandidateMerger()).add(candidate)

    def merged(self) -> dict[str, Any]:
        """The response the chunks make together, registered secrets masked."""
        response = dict(self._fields)
        if self._candidates:
            response["candidates"] = [
                self._candidates[key].merged() for key in sorted(self._candidates)
            ]
        masked: dict[str, Any] = mask_echoed_secrets(response)
        return masked

    def partial_text(self) -> str:
        """The visible text received so far (first candidate)."""
        if not self._candidates:
            return ""
        return self._candidates[min(self._candidates)].text()
