"""Conversation ids as people type them: any unique prefix."""

from __future__ import annotations

from ..errors import InvalidInputError, NotFoundError
from ..events.envelope import validate_conversation_id
from ..events.store import EventStore

__all__ = ["resolve_conversation_id"]


def resolve_conversation_id(store: EventStore, prefix: str) -> str:
    """The one conversation whose id is ``prefix`` or starts with it."""
    if not prefix.strip():
        raise InvalidInputError(
            "the conversation id must not be empty; list ids with `chatledger ls`"
        )
    # A shell passes bytes that are not UTF-8 as lone surrogates: refuse them (and control
    # characters) here, with the rule, rather than in the database driver.
    validate_conversation_id(prefix)
    if store.stream_info(prefix) is not None:
        return prefix
    matches = sorted(
        info.conversation_id
        for info in store.conversations()
        if info.conversation_id.startswith(prefix)
    )
    if not matches:
        raise NotFoundError(
            f"no conversation id starts with {prefix!r} in {store.location}; "
            "list them with `chatledger ls`"
        )
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise InvalidInputError(
            f"{prefix!r} is ambiguous: it starts {len(matches)} conversation ids ({shown}); "
            "give more of the id"
        )
    return matches[0]
