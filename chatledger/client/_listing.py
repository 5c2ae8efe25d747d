"""Listing conversations and their trees of forks, read from a store."""

from __future__ import annotations

from typing import Any

from ..errors import IntegrityError, NotFoundError
from ..events.envelope import validate_conversation_id
from ..events.kinds import UserMessageAdded
from ..events.store import EventStore, StreamInfo
from ._fold import FoldCache, fold_events
from ._summaries import BranchNode, ChatSummary

__all__ = ["conversation_tree", "list_conversations", "summarize_stream"]


def _first_words(content: dict[str, Any], words: int = 8) -> str:
    text = " ".join(
        part["text"]
        for part in content.get("parts") or []
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ).split()
    return " ".join(text[:words]) + (" ..." if len(text) > words else "")


def summarize_stream(
    store: EventStore, info: StreamInfo, cache: FoldCache | None = None
) -> ChatSummary:
    """The summary of one conversation (its model and turns come from a fold)."""
    history, _usage, _ = fold_events(store, info.conversation_id, cache=cache)
    return ChatSummary(
        conversation_id=info.conversation_id,
        model=history.model,
        turns=len(history.turns),
        version=info.version,
        created_at=info.created_at,
        updated_at=info.updated_at,
        parent_id=info.parent_id,
        parent_version=info.parent_version,
    )


def list_conversations(
    store: EventStore, limit: int | None = None, parent_id: str | None = None
) -> list[ChatSummary]:
    """Conversations, most recently updated first; with ``parent_id``, its forks."""
    infos = store.conversations(limit=limit, parent_id=parent_id)
    return [summarize_stream(store, info) for info in infos]


def conversation_tree(store: EventStore, conversation_id: str) -> BranchNode:
    """The tree of forks that ``conversation_id`` belongs to, from its root."""
    validate_conversation_id(conversation_id)
    info = store.stream_info(conversation_id)
    if info is None:
        raise NotFoundError(f"no conversation {conversation_id!r} in {store.location}")
    seen = {info.conversation_id}
    while info.parent_id is not None:  # up to the root
        parent = store.stream_info(info.parent_id)
        if parent is None:
            raise IntegrityError(
                f"{info.conversation_id} was forked from {info.parent_id} "
                f"v{info.parent_version}, which is not in {store.location}; run verify"
            )
        if parent.conversation_id in seen:
            raise IntegrityError(
                f"conversation {parent.conversation_id} is its own ancestor; run verify"
            )
        seen.add(parent.conversation_id)
        info = parent

    cache: FoldCache = {}  # each fork's fold starts from its parent's

    def node(stream: StreamInfo) -> BranchNode:
        first = next(
            (
                e.data
                for e in store.read(stream.conversation_id)
                if isinstance(e.data, UserMessageAdded)
            ),
            None,
        )
        return BranchNode(
            summary=summarize_stream(store, stream, cache),
            divergence=_first_words(first.content) if first is not None else "",
        )

    # Without recursion: a chain of forks may be thousands deep.
    root = node(info)
    placed = {root.conversation_id}
    pending = [root]
    while pending:
        branch = pending.pop()
        for child in reversed(store.conversations(parent_id=branch.conversation_id)):
            if child.conversation_id in placed:
                continue
            placed.add(child.conversation_id)
            branch.children.append(node(child))
        pending.extend(branch.children)
    return root
