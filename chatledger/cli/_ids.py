"""Conversation ids as people type them and read them.

An id may be typed as any prefix that names one conversation; an exact id always wins
(a conversation whose whole id is the prefix of another's is still reachable). Ids are
shown shortened to :data:`SHORT_ID` characters, lengthened, as git lengthens abbreviated
hashes, wherever the short form would name another conversation too.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import InvalidInputError, NotFoundError, mask_url_password
from ..events.envelope import validate_conversation_id
from ..events.store import EventStore

__all__ = ["SHORT_ID", "resolve_conversation_id", "short_ids"]

#: The shortest form of an id the CLI shows.
SHORT_ID = 8


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
            f"no conversation id starts with {prefix!r} in {mask_url_password(store.location)}; "
            "list them with `chatledger ls`"
        )
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise InvalidInputError(
            f"{prefix!r} is ambiguous: it starts {len(matches)} conversation ids ({shown}); "
            "give more of the id"
        )
    return matches[0]


def short_ids(all_ids: Iterable[str], minimum: int = SHORT_ID) -> dict[str, str]:
    """The shortest prefix of each id (at least ``minimum`` characters) that
    :func:`resolve_conversation_id` resolves back to it, given every id in the store."""
    ordered = sorted(set(all_ids))

    def common(a: str, b: str) -> int:
        length = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            length += 1
        return length

    shown: dict[str, str] = {}
    for index, conversation_id in enumerate(ordered):
        # The ids sharing the longest prefix with this one are its neighbours in order.
        shared = max(
            common(conversation_id, ordered[index - 1]) if index else 0,
            common(conversation_id, ordered[index + 1]) if index + 1 < len(ordered) else 0,
        )
        length = max(minimum, shared + 1)
        # Past its end (it is a prefix of another id): the whole id, which wins as exact.
        shown[conversation_id] = conversation_id[:length]
    return shown
