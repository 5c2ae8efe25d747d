"""The turns-and-usage projection: how much a conversation has cost, by model.

Counts completed, failed and rewound turns, model calls, function calls, and sums the
token counts each response's ``usageMetadata`` reports. Deterministic, no I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..events.envelope import RecordedEvent
from ..events.kinds import (
    ConversationStarted,
    FunctionCalled,
    ModelCallFailed,
    ModelCallStarted,
    ModelResponded,
    TurnAbandoned,
    TurnRewound,
)

__all__ = ["TOKEN_FIELDS", "ModelUsage", "UsageState", "apply", "fold"]

TOKEN_FIELDS = (
    "promptTokenCount",
    "candidatesTokenCount",
    "totalTokenCount",
    "cachedContentTokenCount",
    "thoughtsTokenCount",
    "toolUsePromptTokenCount",
)


class ModelUsage(msgspec.Struct):
    """Token totals of one model, keyed by the wire names of ``usageMetadata``."""

    calls: int = 0
    tokens: dict[str, int] = {}


class UsageState(msgspec.Struct):
    version: int = 0
    created_at: str = ""
    updated_at: str = ""
    model: str = ""
    turns_completed: int = 0
    turns_failed: int = 0
    turns_rewound: int = 0
    model_calls: int = 0
    function_calls: int = 0
    by_model: dict[str, ModelUsage] = {}

    @property
    def turns(self) -> int:
        """Turns that are in the history now."""
        return self.turns_completed - self.turns_rewound

    def total(self, field: str = "totalTokenCount") -> int:
        return sum(usage.tokens.get(field, 0) for usage in self.by_model.values())


def apply(state: UsageState, event: RecordedEvent) -> UsageState:
    data = event.data
    state.version = event.version
    state.updated_at = event.recorded_at
    if isinstance(data, ConversationStarted):
        state.model = data.model
        if not state.created_at or data.parent is None:
            state.created_at = event.recorded_at
    elif isinstance(data, ModelCallStarted):
        state.model_calls += 1
        state.by_model.setdefault(data.model, ModelUsage()).calls += 1
    elif isinstance(data, ModelResponded):
        usage: Any = data.response.get("usageMetadata")
        model = str(data.response.get("modelVersion") or state.model)
        if isinstance(usage, dict):
            totals = state.by_model.setdefault(model, ModelUsage()).tokens
            for name in TOKEN_FIELDS:
                value = usage.get(name)
                if isinstance(value, int) and not isinstance(value, bool):
                    totals[name] = totals.get(name, 0) + value
        if data.ends_turn:
            state.turns_completed += 1
    elif isinstance(data, ModelCallFailed):
        if data.ends_turn:
            state.turns_failed += 1
    elif isinstance(data, TurnAbandoned):
        state.turns_failed += 1
    elif isinstance(data, TurnRewound):
        state.turns_rewound += 1
    elif isinstance(data, FunctionCalled):
        state.function_calls += 1
    return state


def fold(events: list[RecordedEvent], state: UsageState | None = None) -> UsageState:
    state = state if state is not None else UsageState()
    for event in events:
        apply(state, event)
    return state
