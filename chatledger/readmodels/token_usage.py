"""An example read model: tokens per model, kept by a :class:`ProjectionRunner`.

:class:`TokenUsageByModel` keeps a ``token_usage_by_model`` table: per model, the calls
answered and their prompt, candidate and total tokens, from ``model_responded`` events'
``usageMetadata``::

    store = chatledger.open_store("postgresql://app@db/chats")
    runner = ProjectionRunner(store, TokenUsageByModel())
    runner.run(stop=stop_event)        # or runner.run_once() from a cron job
    TokenUsageByModel.totals(store)    # {"gemini-2.5-flash": ModelTokens(...), ...}

The read model itself stays a fold: :func:`usage_deltas` turns events into per-model
increments without I/O; ``handle`` only loads what it needs and writes the sums.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from ..events.envelope import RecordedEvent
from ..events.kinds import ConfigChanged, ConversationStarted, ModelCallStarted, ModelResponded
from ..events.store import EventStore
from .runner import ReadModel, Transaction

__all__ = ["ModelTokens", "TokenUsageByModel", "usage_deltas"]


class ModelTokens(msgspec.Struct, frozen=True):
    """One model's totals: calls answered and the tokens their usageMetadata reported."""

    calls: int = 0
    prompt_tokens: int = 0
    candidate_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: ModelTokens) -> ModelTokens:
        return ModelTokens(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.candidate_tokens + other.candidate_tokens,
            self.total_tokens + other.total_tokens,
        )


def _count(usage: Any, name: str) -> int:
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_deltas(
    events: Iterable[RecordedEvent], models: dict[str, str]
) -> tuple[dict[str, ModelTokens], dict[str, str]]:
    """Fold events into per-model increments. No I/O.

    A response counts for its ``modelVersion``, else for the model its conversation last
    called (``model_call_started``), else the conversation's model. ``models`` maps
    conversation ids to that model and is updated in place; returns the increments and
    the conversations whose model changed.
    """
    deltas: dict[str, ModelTokens] = {}
    changed: dict[str, str] = {}
    for event in events:
        data = event.data
        model: str | None = None
        if isinstance(data, (ConversationStarted, ModelCallStarted, ConfigChanged)):
            model = data.model or None
        elif isinstance(data, ModelResponded):
            usage = data.response.get("usageMetadata")
            version = data.response.get("modelVersion")
            name = (
                version
                if isinstance(version, str) and version
                else models.get(event.conversation_id, "unknown")
            )
            delta = ModelTokens(
                1,
                _count(usage, "promptTokenCount"),
                _count(usage, "candidatesTokenCount"),
                _count(usage, "totalTokenCount"),
            )
            deltas[name] = deltas.get(name, ModelTokens()) + delta
        if model:
            models[event.conversation_id] = model
            changed[event.conversation_id] = model
    return deltas, changed


class TokenUsageByModel(ReadModel):
    """Per model: calls answered and prompt, candidate and total tokens.

    Tables: ``token_usage_by_model`` (model, calls, prompt_tokens, candidate_tokens,
    total_tokens) and ``token_usage_models`` (each conversation's current model).
    """

    name = "token_usage_by_model"

    def setup(self, tx: Transaction) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS token_usage_by_model (model TEXT PRIMARY KEY, "
            "calls BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL, "
            "candidate_tokens BIGINT NOT NULL, total_tokens BIGINT NOT NULL)"
        )
        tx.execute(
            "CREATE TABLE IF NOT EXISTS token_usage_models "
            "(conversation_id TEXT PRIMARY KEY, model TEXT NOT NULL)"
        )

    def reset(self, tx: Transaction) -> None:
        tx.execute("DELETE FROM token_usage_by_model")
        tx.execute("DELETE FROM token_usage_models")

    def handle(self, tx: Transaction, events: list[RecordedEvent]) -> None:
        ids = sorted({e.conversation_id for e in events if isinstance(e.data, ModelResponded)})
        models: dict[str, str] = {}
        if ids:
            marks = ", ".join("?" for _ in ids)
            rows = tx.execute(
                f"SELECT conversation_id, model FROM token_usage_models WHERE conversation_id IN ({marks})",
                ids,
            ).fetchall()
            models = {str(row[0]): str(row[1]) for row in rows}
        deltas, changed = usage_deltas(events, models)
        for model, delta in sorted(deltas.items()):
            tx.execute(
                "INSERT INTO token_usage_by_model (model, calls, prompt_tokens, candidate_tokens, "
                "total_tokens) VALUES (?, ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET "
                "calls = token_usage_by_model.calls + excluded.calls, "
                "prompt_tokens = token_usage_by_model.prompt_tokens + excluded.prompt_tokens, "
                "candidate_tokens = token_usage_by_model.candidate_tokens + excluded.candidate_tokens, "
                "total_tokens = token_usage_by_model.total_tokens + excluded.total_tokens",
                (
                    model,
                    delta.calls,
                    delta.prompt_tokens,
                    delta.candidate_tokens,
                    delta.total_tokens,
                ),
            )
        for conversation_id, model in sorted(changed.items()):
            tx.execute(
                "INSERT INTO token_usage_models (conversation_id, model) VALUES (?, ?) "
                "ON CONFLICT (conversation_id) DO UPDATE SET model = excluded.model",
                (conversation_id, model),
            )

    @staticmethod
    def totals(store: EventStore) -> dict[str, ModelTokens]:
        """The table as it is now: model -> totals."""

        def work(connection: Any) -> dict[str, ModelTokens]:
            rows = (
                Transaction(connection)
                .execute(
                    "SELECT model, calls, prompt_tokens, candidate_tokens, total_tokens "
                    "FROM token_usage_by_model ORDER BY model"
                )
                .fetchall()
            )
            return {
                str(r[0]): ModelTokens(int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows
            }

        return store.run_in_transaction(work)
