"""Reading optional fields in tests: each helper fails the test clearly when the value is
absent, and gives mypy the narrowed type (no ``type: ignore`` at the call sites)."""

from __future__ import annotations

from chatledger import types
from chatledger.events import EventStore


def part_of(content: types.Content | None, index: int = 0) -> types.Part:
    """Part ``index`` of ``content``; fails the test if the content has no parts."""
    assert content is not None and content.parts is not None, f"no parts in {content!r}"
    return content.parts[index]


def text_of(content: types.Content | None, index: int = 0) -> str | None:
    """The text of part ``index`` of ``content`` (None for a part that is not text)."""
    return part_of(content, index).text


def stream_version(store: EventStore, conversation_id: str) -> int:
    """The conversation's current version; fails the test if the store does not know it."""
    info = store.stream_info(conversation_id)
    assert info is not None, f"no stream {conversation_id!r}"
    return info.version
