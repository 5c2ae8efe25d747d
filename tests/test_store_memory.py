"""The in-memory store passes the store contract."""

from __future__ import annotations

from pathlib import Path

from chatledger.events import EventStore, MemoryStore
from tests.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    def make_store(self, tmp_path: Path) -> EventStore:
        return MemoryStore()
