"""Stores for the proofs tests: memory, a real SQLite file, and real PostgreSQL (a scratch
database, a schema of its own per test; the tests fail, never skip, without a server)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatledger.events import EventStore, MemoryStore, SQLiteStore
from chatledger.events.postgres import PostgresStore
from tests.support.postgres import scratch_database

StoreFactory = Callable[[], EventStore]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with scratch_database("chatledger_proofs") as url:
        yield url


def _postgres(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], EventStore]]:
    """Opens the same log again on each call (the memory store: the same object)."""
    opened: list[EventStore] = []
    kind: str = request.param
    if kind == "memory":
        memory = MemoryStore()

        def factory() -> EventStore:
            return memory

    elif kind == "sqlite":
        path = tmp_path / "log.db"

        def factory() -> EventStore:
            store = SQLiteStore(path)
            opened.append(store)
            return store

    else:
        url = _postgres(request)
        schema = f"proofs_{uuid.uuid4().hex[:12]}"

        def factory() -> EventStore:
            store = PostgresStore(url, schema=schema, pool_min=0, pool_max=2)
            opened.append(store)
            return store

    yield factory
    for store in opened:
        store.close()
