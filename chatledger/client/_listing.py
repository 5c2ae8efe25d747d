"""Listing conversations and their trees of forks, read from a store."""

from __future__ import annotations

from typing import Any

from ..errors import IntegrityError, InvalidInputError, NotFoundError
from ..events.envelope import validate_conversation_id
from ..events.kinds import UserMessageAdded
from ..events.store import EventStore, StreamInfo
from ..readmodels.conversations import first_words, list_summaries
from ._fold import FoldCache, fold_events
from ._summaries import BranchNode, ChatSummary

__all__ = ["conversation_tree", "list_conversations", "summarize_stream"]


_first_words = first_words


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
        title=_title(history.full),
    )


def _title(contents: list[dict[str, Any]]) -> str:
    for content in contents:
        if content.get("role") == "user":
            words = first_words(content)
            if words:
                return words
    return ""


def list_conversations(
    store: EventStore, limit: int | None = None, parent_id: str | None = None
) -> list[ChatSummary]:
    """Conversations, most recently updated first; with ``parent_id``, its forks.

    Read from the summaries read model (docs/stores.md, "Read models"), without folding;
    a conversation whose summary is not at its stream's head, or a store without read
    models, is summarised from the log."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InvalidInputError("limit must be a positive integer or None")
    if parent_id is not None:
        validate_conversation_id(parent_id)
    found = list_summaries(store, limit, parent_id)
    if found is None:
        infos = store.conversations(limit=limit, parent_id=parent_id)
        return [summarize_stream(store, info) for info in infos]
    rows, stale = found
    summaries: list[ChatSummary] = []
    for row in rows:
        if row.conversation_id in stale:
            info = store.stream_info(row.conversation_id)
            if info is not None:
                summaries.append(summarize_stream(store, info))
            continue
        summaries.append(
            ChatSummary(
                conversation_id=row.conversation_id,
                model=row.model,
                turns=row.turns,
                version=row.version,
                created_at=row.created_at,
                updated_at=row.updated_at,
                parent_id=row.parent_id,
                parent_version=row.parent_version,
                title=row.title,
            )
        )
    return summaries


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
