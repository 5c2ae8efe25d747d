"""Projections: deterministic folds of events into the states a chat reads. No I/O."""

from __future__ import annotations

from . import history, usage
from .history import (
    HistoryState,
    content_is_valid,
    curate_contents,
    extract_context,
    response_is_valid,
    sendable,
)
from .usage import UsageState

__all__ = [
    "HistoryState",
    "UsageState",
    "content_is_valid",
    "curate_contents",
    "extract_context",
    "history",
    "response_is_valid",
    "sendable",
    "usage",
]
