"""What happened, and where it is kept: event kinds, the envelope, and the log stores."""

from __future__ import annotations

import os
from typing import Any

from ..errors import InvalidInputError
from .envelope import NewEvent, RecordedEvent, canonical_json, event_hash
from .kinds import (
    KINDS,
    ConfigChanged,
    ContentErased,
    ConversationStarted,
    ErrorInfo,
    EventData,
    FunctionCalled,
    FunctionResponded,
    HistoryReplaced,
    ModelCallFailed,
    ModelCallStarted,
    ModelResponded,
    ParentRef,
    SessionCleared,
    SessionItemPopped,
    SessionItemsAdded,
    TurnAbandoned,
    TurnRewound,
    UnknownEvent,
    UserMessageAdded,
)
from .memory import MemoryStore
from .sqlite import SQLiteStore
from .store import EventStore, Problem, Snapshot, StreamInfo, VerificationReport

__all__ = [
    "KINDS",
    "ConfigChanged",
    "ContentErased",
    "ConversationStarted",
    "ErrorInfo",
    "EventData",
    "EventStore",
    "FunctionCalled",
    "FunctionResponded",
    "HistoryReplaced",
    "MemoryStore",
    "ModelCallFailed",
    "ModelCallStarted",
    "ModelResponded",
    "NewEvent",
    "ParentRef",
    "Problem",
    "RecordedEvent",
    "SQLiteStore",
    "SessionCleared",
    "SessionItemPopped",
    "SessionItemsAdded",
    "Snapshot",
    "StreamInfo",
    "TurnAbandoned",
    "TurnRewound",
    "UnknownEvent",
    "UserMessageAdded",
    "VerificationReport",
    "canonical_json",
    "event_hash",
    "open_store",
]


def open_store(store: Any = None, **options: Any) -> EventStore:
    """Open a store from a store object, a file path, ``":memory:"`` or a URL.

    URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
    ``postgresql://user@host/db``. ``None`` means ``CHATLEDGER_DB`` if set, else memory.
    ``options`` go to the store: :class:`SQLiteStore` takes ``busy_timeout``,
    ``synchronous`` and ``create_in_existing``; ``PostgresStore`` takes ``schema``,
    ``pool_min``, ``pool_max``, ``connect_timeout`` and ``create_in_existing`` (a log
    inside a database that holds another application's tables is created only when
    asked for; see ``docs/stores.md``).
    """
    if isinstance(store, EventStore):
        return store
    if store is None:
        store = os.environ.get("CHATLEDGER_DB") or ":memory:"
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str):
        raise InvalidInputError(
            f"store must be an EventStore, a path or a URL, got {type(store).__name__}"
        )
    if store in (":memory:", "memory:", "memory://"):
        return MemoryStore()
    if store.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        try:
            from .postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise InvalidInputError(
                "a PostgreSQL store needs the 'postgres' extra: pip install 'chatledger[postgres]'"
            ) from exc
        postgres_store: EventStore = PostgresStore(store, **options)
        return postgres_store
    if store.startswith("sqlite://"):
        path = store[len("sqlite://") :]
        if path.startswith("/"):
            path = path[1:]
        return SQLiteStore(path or ":memory:", **options)
    if "://" in store:
        raise InvalidInputError(
            f"unknown store URL scheme in {store.split('://')[0]!r}: use a file path, "
            "sqlite:///path, postgresql://... or :memory:"
        )
    return SQLiteStore(os.path.expanduser(store), **options)
