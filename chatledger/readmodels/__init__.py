"""Read models: tables derived from the log, kept beside it in the store's database.

Unlike :mod:`chatledger.projections` (pure folds, no I/O), this package reads the log
and writes tables. A :class:`ProjectionRunner` feeds a :class:`ReadModel` every event
exactly once, committing the read model's position with its rows::

    from chatledger.readmodels import ProjectionRunner, TokenUsageByModel

    runner = ProjectionRunner(store, TokenUsageByModel())
    runner.run(stop=stop_event)        # or runner.run_once() from a cron job
    TokenUsageByModel.totals(store)    # tokens per model

It may import :mod:`chatledger.events` and :mod:`chatledger.projections`; neither imports
it. See ``docs/stores.md``.
"""

from __future__ import annotations

from .runner import POSITIONS_TABLE, ProjectionRunner, ReadModel, Transaction, qmark_to_format
from .token_usage import ModelTokens, TokenUsageByModel, usage_deltas

__all__ = [
    "POSITIONS_TABLE",
    "ModelTokens",
    "ProjectionRunner",
    "ReadModel",
    "TokenUsageByModel",
    "Transaction",
    "qmark_to_format",
    "usage_deltas",
]
