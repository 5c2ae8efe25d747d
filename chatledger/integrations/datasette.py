"""Datasette metadata for a chatledger log: what the SQL views and their columns mean.

Every chatledger SQLite file has two views, ``chat_conversations`` and ``chat_messages``
(created by the store's migration ``007_views_for_sql_readers``; see
``chatledger/events/views.py`` and ``docs/integrations.md``), so ``datasette chatledger.db``
shows readable conversations as it is. This module adds their descriptions and a few
canned queries (``pip install 'chatledger[datasette]'``)::

    python -m chatledger.integrations.datasette chatledger.db > metadata.json
    datasette chatledger.db --metadata metadata.json

It needs nothing but the standard library; Datasette itself is only needed to serve.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..events.views import VIEW_COLUMNS

__all__ = ["COLUMN_DESCRIPTIONS", "VIEW_DESCRIPTIONS", "main", "metadata"]

VIEW_DESCRIPTIONS: dict[str, str] = {
    "chat_conversations": (
        "One row per conversation of the log: chats, and the sessions other frameworks "
        "keep in it (openai-agents, LangChain). A fork names its parent_id."
    ),
    "chat_messages": (
        "One row per message-like event, in log order: user messages, model responses, "
        "function calls and responses, failed model calls, initial history contents, and "
        "the items of framework sessions. Nothing is ever deleted from the log: a message "
        "later taken back (rewound, failed, replaced, popped, cleared) has current = 0."
    ),
}

COLUMN_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "chat_conversations": {
        "conversation_id": "The conversation's id (chatledger log ID, client.chats.get(ID)).",
        "kind": "chat, or the framework of a session: openai-agents, langchain.",
        "model": "The model it was started with, or the latest one a config change set.",
        "title": "The first 100 characters of its first message.",
        "user_messages": "User messages sent (failed and rewound ones included).",
        "total_tokens": "Tokens of every model response (usageMetadata.totalTokenCount).",
        "events": "Events in its log (its version).",
        "actor": "Who started it.",
        "created_at": "When its first event was recorded (UTC).",
        "updated_at": "When its last event was recorded (UTC).",
        "parent_id": "For a fork: the conversation it branched from.",
        "parent_version": "For a fork: the version of the parent it branched after.",
    },
    "chat_messages": {
        "conversation_id": "The conversation it belongs to.",
        "version": "The version of its event in the conversation's log.",
        "item_index": "Its place in its event, for events holding several (history, items).",
        "position": "The event's place in the whole log (commit order).",
        "turn": "The turn it belongs to (chats only).",
        "role": "user or model for chats; a session item's role (or type).",
        "kind": (
            "message, history (an initial or replaced history content), function_call, "
            "function_response, error (a failed model call), item (a session item)."
        ),
        "text": "Its text parts joined (thoughts left out); for functions, the call or result.",
        "model": "The model asked (for a user message: the model its turn went to).",
        "model_version": "The model version the response names.",
        "prompt_tokens": "Prompt tokens of the response.",
        "output_tokens": "Tokens the model generated for the response (candidates).",
        "total_tokens": "Total tokens of the response.",
        "finish_reason": "Why the model stopped.",
        "latency_ms": "How long the model call (or function call) took, in milliseconds.",
        "current": (
            "1 unless a later event took it back: its turn rewound, abandoned or failed, "
            "the history replaced, the session item popped or the session cleared."
        ),
        "actor": "Who wrote the event.",
        "recorded_at": "When the event was recorded (UTC).",
        "event_type": "The type of the event it comes from.",
    },
}

_QUERIES: dict[str, dict[str, str]] = {
    "conversation": {
        "title": "A conversation, as it happened",
        "sql": (
            "select version, turn, role, kind, text, model, total_tokens, current, actor, "
            "recorded_at from chat_messages where conversation_id = :conversation_id "
            "order by version, item_index"
        ),
    },
    "tokens_by_model": {
        "title": "Tokens by model",
        "sql": (
            "select model, count(*) as responses, sum(prompt_tokens) as prompt_tokens, "
            "sum(output_tokens) as output_tokens, sum(total_tokens) as total_tokens "
            "from chat_messages where event_type = 'model_responded' group by model "
            "order by total_tokens desc"
        ),
    },
    "search": {
        "title": "Messages containing a text",
        "sql": (
            "select conversation_id, version, role, kind, text, recorded_at from chat_messages "
            "where text like '%' || :text || '%' order by position desc limit 200"
        ),
    },
}


def metadata(database: str = "chatledger") -> dict[str, Any]:
    """Datasette metadata describing the views of the log served as ``database`` (the
    name Datasette gives a file: its name without the extension)."""
    tables: dict[str, Any] = {}
    for view, columns in VIEW_COLUMNS.items():
        described = COLUMN_DESCRIPTIONS[view]
        tables[view] = {
            "description": VIEW_DESCRIPTIONS[view],
            "columns": {column: described[column] for column in columns},
        }
    tables["events"] = {
        "description": (
            "The log itself: every event, append-only and hash-chained (data and metadata "
            "as JSON). The views above are read from it."
        )
    }
    return {
        "title": "chatledger",
        "description": "An event-sourced, hash-chained conversation log.",
        "databases": {database: {"tables": tables, "queries": _QUERIES}},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m chatledger.integrations.datasette [DB]``: print the metadata as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m chatledger.integrations.datasette",
        description="Print Datasette metadata for a chatledger log (datasette DB -m FILE).",
    )
    parser.add_argument(
        "database",
        nargs="?",
        default="chatledger.db",
        help="the SQLite file Datasette will serve (default: chatledger.db)",
    )
    args = parser.parse_args(argv)
    json.dump(metadata(Path(args.database).stem), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
