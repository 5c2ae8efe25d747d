"""Small helpers for the Gemini wire form that more than one transport's translation uses."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["json_text", "part_kind"]


def json_text(value: Any) -> str:
    """``value`` as compact JSON text."""
    return msgspec.json.encode(value).decode("utf-8")


def part_kind(part: Any) -> str:
    """What a part holds (its set fields, ``thoughtSignature`` aside), for a message."""
    if isinstance(part, dict):
        keys = [
            key for key, value in part.items() if value is not None and key != "thoughtSignature"
        ]
        return ", ".join(keys) or "empty part"
    return type(part).__name__
