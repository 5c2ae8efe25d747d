"""What listings return: one conversation's summary, and a tree of forks.

A leaf module (it imports nothing else of chatledger), so that the chats, the client and
the CLI can all name these types without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

__all__ = ["BranchNode", "ChatSummary"]


class ChatSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``chats.list()``."""

    conversation_id: str
    model: str
    turns: int
    version: int
    created_at: str
    updated_at: str
    parent_id: str | None = None
    parent_version: int | None = None
    #: The first words of the conversation's first user message ("" before there is one).
    title: str = ""


class BranchNode(msgspec.Struct, kw_only=True):
    """One conversation in a tree of forks (``chats.tree``)."""

    summary: ChatSummary
    #: The first words of the first message this branch added (where it diverges).
    divergence: str
    children: list[BranchNode] = msgspec.field(default_factory=list)

    @property
    def conversation_id(self) -> str:
        return self.summary.conversation_id

    def walk(self, depth: int = 0) -> Iterator[tuple[int, BranchNode]]:
        """Every node, depth first, with its depth (the root is 0)."""
        # Iterative: a chain of forks may be deeper than Python's recursion limit.
        stack: list[tuple[int, BranchNode]] = [(depth, self)]
        while stack:
            level, node = stack.pop()
            yield level, node
            stack.extend((level + 1, child) for child in reversed(node.children))
