"""Merging the chunks of a streamed reply into one response (SEMANTICS §3.2).

A streamed reply is one model turn: adjacent plain text parts (only ``text``, and the
same ``thought`` flag) are concatenated; every other part is kept, in order, with its
``thoughtSignature`` and any field this library does not know. Candidate and response
fields (``finishReason``, ``usageMetadata``, ...) take the last value a chunk sent.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StreamMerger"]

_PLAIN_KEYS = frozenset({"text", "thought"})


def _is_plain_text(part: Any) -> bool:
    return (
        isinstance(part, dict) and isinstance(part.get("text"), str) and part.keys() <= _PLAIN_KEYS
    )


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
        for part in content.get("parts") or []:
            last: Any = self.parts[-1] if self.parts else None
            if (
                _is_plain_text(part)
                and _is_plain_text(last)
                and last.get("thought") == part.get("thought")
            ):
                self.parts[-1] = {**last, "text": last["text"] + part["text"]}
            else:
                self.parts.append(part)

    def merged(self) -> dict[str, Any]:
        candidate = dict(self.fields)
        if self.saw_content:
            # As google-genai: no role is added where the server sent none.
            candidate["content"] = {"parts": list(self.parts), **self.content_fields}
        return candidate

    def text(self) -> str:
        return "".join(
            part["text"]
            for part in self.parts
            if isinstance(part, dict)
            and isinstance(part.get("text"), str)
            and not part.get("thought")
        )


class StreamMerger:
    """Accumulates wire chunks; ``merged()`` is the response the turn records."""

    def __init__(self) -> None:
        self.chunks = 0
        self._fields: dict[str, Any] = {}
        self._candidates: dict[int, _CandidateMerger] = {}

    def add(self, chunk: dict[str, Any]) -> None:
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
        response = dict(self._fields)
        if self._candidates:
            response["candidates"] = [
                self._candidates[key].merged() for key in sorted(self._candidates)
            ]
        return response

    def partial_text(self) -> str:
        """The visible text received so far (first candidate)."""
        if not self._candidates:
            return ""
        return self._candidates[min(self._candidates)].text()
