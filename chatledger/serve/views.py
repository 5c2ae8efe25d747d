"""What the pages and the API compute from the log: turns, event lines, the fork tree
drawn as an SVG, and two branches side by side. Pure functions over events and
contents (no I/O), so they can be tested on their own."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..client import BranchNode
from ..events.envelope import RecordedEvent
from ..events.kinds import (
    KINDS,
    ConfigChanged,
    ConversationStarted,
    FunctionCalled,
    FunctionResponded,
    HistoryReplaced,
    ModelCallFailed,
    ModelCallStarted,
    ModelResponded,
    SessionCleared,
    SessionItemPopped,
    SessionItemsAdded,
    TurnAbandoned,
    TurnRewound,
    UnknownEvent,
    UserMessageAdded,
)
from .catalog import content_text

__all__ = [
    "EVENT_TYPES",
    "TreeDrawing",
    "TurnRow",
    "common_prefix",
    "draw_tree",
    "summarize_event",
    "turn_rows",
]

#: Every event kind, in the order the kinds are defined (the timeline filters by them).
EVENT_TYPES = tuple(KINDS)

SUMMARY_WIDTH = 120


def _shorten(text: str, width: int = SUMMARY_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _compact(value: Any, width: int = SUMMARY_WIDTH) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    return _shorten(text, width)


def _response_text(response: Any) -> str:
    if not isinstance(response, dict):
        return ""
    candidates = response.get("candidates")
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        return ""
    content = candidates[0].get("content")
    text = content_text(content)
    if text:
        return json.dumps(_shorten(text, 80), ensure_ascii=False)
    parts = content.get("parts") if isinstance(content, dict) else None
    calls = [
        str(part["functionCall"].get("name"))
        for part in parts or []
        if isinstance(part, dict) and isinstance(part.get("functionCall"), dict)
    ]
    return "calls " + ", ".join(calls) if calls else "(no text)"


def _tokens(response: Any) -> int | None:
    usage = response.get("usageMetadata") if isinstance(response, dict) else None
    total = usage.get("totalTokenCount") if isinstance(usage, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else None


def summarize_event(event: RecordedEvent) -> str:
    """One line saying what an event records (plain text: the page escapes it)."""
    try:
        return _summarize(event)
    except (AttributeError, TypeError, KeyError, IndexError, ValueError):
        return _compact(event.to_export()["data"])


def _summarize(event: RecordedEvent) -> str:
    data = event.data
    if isinstance(data, ConversationStarted):
        text = f"model {data.model}"
        if data.parent is not None:
            text += f", forked from {data.parent.conversation_id[:8]} v{data.parent.version}"
        if data.history:
            text += f", {len(data.history)} contents of history"
        system = (data.config or {}).get("systemInstruction")
        if system:
            words = content_text(system) if isinstance(system, dict) else str(system)
            text += f", system {json.dumps(_shorten(words, 60), ensure_ascii=False)}"
        return text
    if isinstance(data, UserMessageAdded):
        text = content_text(data.content)
        said = json.dumps(_shorten(text, 100), ensure_ascii=False) if text else "(no text)"
        return f"turn {data.turn}: {said}"
    if isinstance(data, ModelCallStarted):
        streamed = ", streamed" if data.streamed else ""
        return (
            f"turn {data.turn}: {data.model}, attempt {data.attempt}{streamed}, "
            f"{data.contents_count} contents"
        )
    if isinstance(data, ModelResponded):
        tokens = _tokens(data.response)
        extra = f", {tokens} tokens" if tokens is not None else ""
        return (
            f"turn {data.turn}: {_response_text(data.response)} ({data.latency_ms:.0f} ms{extra})"
        )
    if isinstance(data, ModelCallFailed):
        error = data.error
        code = " ".join(str(x) for x in (error.code, error.status) if x is not None)
        return f"turn {data.turn}: {error.kind}{' ' + code if code else ''}: {_shorten(error.message, 100)}"
    if isinstance(data, FunctionCalled):
        return f"turn {data.turn}: {data.name}({_compact(data.args, 80)})"
    if isinstance(data, FunctionResponded):
        outcome = f"error {_shorten(data.error, 80)}" if data.error else _compact(data.response, 80)
        return f"turn {data.turn}: {data.name} → {outcome} ({data.duration_ms:.0f} ms)"
    if isinstance(data, TurnRewound):
        return f"turn {data.turn} taken back"
    if isinstance(data, TurnAbandoned):
        return f"turn {data.turn} abandoned: {_shorten(data.reason, 100)}"
    if isinstance(data, ConfigChanged):
        changes = []
        if data.model is not None:
            changes.append(f"model {data.model}")
        if data.config is not None:
            changes.append(f"config {_compact(data.config, 80)}")
        return ", ".join(changes) or "config cleared"
    if isinstance(data, HistoryReplaced):
        return f"history set to {len(data.history)} contents"
    if isinstance(data, SessionItemsAdded):
        return f"{len(data.items)} session item{'s' if len(data.items) != 1 else ''} added"
    if isinstance(data, SessionItemPopped):
        return f"session item v{data.item_version}[{data.item_index}] popped"
    if isinstance(data, SessionCleared):
        return f"session cleared ({data.count} items)"
    if isinstance(data, UnknownEvent):
        return _compact(data.data)
    return _compact(msgspec.to_builtins(data))


@dataclass
class TurnRow:
    """One turn of a conversation as its events tell it."""

    turn: int
    actor: str
    started_at: str
    first_version: int
    last_version: int
    models: list[str] = field(default_factory=list)
    attempts: int = 0
    latency_ms: float = 0.0
    tokens: int | None = None
    function_calls: int = 0
    failures: list[str] = field(default_factory=list)
    #: completed, failed, rewound, abandoned or open (still running, or its writer died).
    outcome: str = "open"
    text: str = ""


def turn_rows(events: Iterable[RecordedEvent]) -> list[TurnRow]:
    """The turns of one conversation's own events, oldest first: who sent each, to which
    models, how many attempts, how long the model took, tokens, function calls and
    failures. A new turn begins at each ``user_message_added``."""
    rows: list[TurnRow] = []
    current: TurnRow | None = None
    for event in events:
        data = event.data
        if isinstance(data, UserMessageAdded):
            current = TurnRow(
                turn=data.turn,
                actor=event.actor or "",
                started_at=event.recorded_at,
                first_version=event.version,
                last_version=event.version,
                text=_shorten(content_text(data.content), 80),
            )
            rows.append(current)
            continue
        if isinstance(data, TurnRewound):
            for row in reversed(rows):
                if row.turn == data.turn and row.outcome == "completed":
                    row.outcome = "rewound"
                    break
            continue
        turn = getattr(data, "turn", None)
        if current is None or turn != current.turn:
            continue
        current.last_version = event.version
        if isinstance(data, ModelCallStarted):
            current.attempts += 1
            if data.model not in current.models:
                current.models.append(data.model)
        elif isinstance(data, ModelResponded):
            current.latency_ms += data.latency_ms
            tokens = _tokens(data.response)
            if tokens is not None:
                current.tokens = (current.tokens or 0) + tokens
            if data.ends_turn:
                current.outcome = "completed"
        elif isinstance(data, ModelCallFailed):
            current.latency_ms += data.latency_ms
            error = data.error
            code = " ".join(str(x) for x in (error.code, error.status) if x is not None)
            current.failures.append(
                f"attempt {data.attempt}: {error.kind}{' ' + code if code else ''}: "
                f"{_shorten(error.message, 160)}"
            )
            if data.ends_turn:
                current.outcome = "failed"
        elif isinstance(data, FunctionCalled):
            current.function_calls += 1
        elif isinstance(data, TurnAbandoned):
            current.outcome = "abandoned"
            current.failures.append(f"abandoned: {_shorten(data.reason, 160)}")
    return rows


# --------------------------------------------------------------------------- the tree

ROW_HEIGHT = 40
INDENT = 26
MARGIN = 16
MAX_TREE_NODES = 500


@dataclass
class TreeNode:
    conversation_id: str
    x: int
    y: int
    label: str
    detail: str
    current: bool
    #: The path from the parent's dot to this one (empty for the root).
    path: str


@dataclass
class TreeDrawing:
    """The fork tree laid out for an SVG: one row per conversation, indented by depth."""

    nodes: list[TreeNode]
    width: int
    height: int
    #: Conversations left out (a tree larger than MAX_TREE_NODES).
    omitted: int = 0


def draw_tree(root: BranchNode, current: str, *, limit: int = MAX_TREE_NODES) -> TreeDrawing:
    """Lay out ``root``'s tree: depth-first rows, elbow lines from each parent."""
    nodes: list[TreeNode] = []
    stack: list[TreeNode] = []  # the last node seen at each depth
    total = 0
    longest = 0
    for depth, branch in root.walk():
        total += 1
        if len(nodes) >= limit:
            continue
        summary = branch.summary
        x = MARGIN + depth * INDENT
        y = MARGIN + len(nodes) * ROW_HEIGHT
        del stack[depth:]
        path = ""
        if depth and stack:
            parent = stack[depth - 1]
            path = f"M{parent.x},{parent.y + 6} V{y} H{x - 6}"
        forked = f" at v{summary.parent_version}" if summary.parent_id else ""
        label = f"{summary.conversation_id[:8]}{forked} · {summary.turns} turns · {summary.model}"
        detail = branch.divergence
        node = TreeNode(
            conversation_id=summary.conversation_id,
            x=x,
            y=y,
            label=_shorten(label, 80),
            detail=_shorten(detail, 80),
            current=summary.conversation_id == current,
            path=path,
        )
        nodes.append(node)
        stack.append(node)
        longest = max(longest, x + 14 + 7 * max(len(node.label), len(node.detail)))
    return TreeDrawing(
        nodes=nodes,
        width=max(longest + MARGIN, 320),
        height=MARGIN * 2 + max(len(nodes) - 1, 0) * ROW_HEIGHT + 20,
        omitted=total - len(nodes),
    )


def common_prefix(left: Sequence[Any], right: Sequence[Any]) -> int:
    """How many leading items two histories share (wire contents compared as values)."""
    common = 0
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        common += 1
    return common
