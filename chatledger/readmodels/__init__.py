"""Read models: tables derived from the log, kept beside it in the store's database.

Unlike :mod:`chatledger.projections` (pure folds, no I/O), this package reads the log
and writes tables. A :class:`ProjectionRunner` feeds a :class:`ReadModel` every event
exactly once, committing the read model's position with its rows::

    from chatledger.readmodels import ProjectionRunner, TokenUsageByModel

    runner = ProjectionRunner(store, TokenUsageByModel())
    runner.run(stop=stop_event)        # or runner.run_once() from a cron job
    TokenUsageByModel.totals(store)    # tokens per model

The conversation read models (:mod:`.conversations`: summaries and contents) are kept
differently: in the transaction of every append, through
:data:`chatledger.events.store.INLINE_READ_MODELS`, which importing this package fills.

It may import :mod:`chatledger.events` and :mod:`chatledger.projections`; neither imports
it. See ``docs/stores.md``.
"""

from __future__ import annotations

from .conversations import (
    CONVERSATIONS,
    ConversationReadModels,
    check_read_models,
    list_summaries,
    load_state,
    rebuild,
    rebuild_conversation,
)
from .runner import POSITIONS_TABLE, ProjectionRunner, ReadModel, Transaction, qmark_to_format
from .token_usage import ModelTokens, TokenUsageByModel, usage_deltas

__all__ = [
    "CONVERSATIONS",
    "POSITIONS_TABLE",
    "ConversationReadModels",
    "ModelTokens",
    "ProjectionRunner",
    "ReadModel",
    "TokenUsageByModel",
    "Transaction",
    "check_read_models",
    "list_summaries",
    "load_state",
    "qmark_to_format",
    "rebuild",
    "rebuild_conversation",
    "usage_deltas",
]
