"""The SQLite store, on a real file, passes the store contract."""

from __future__ import annotations

from pathlib import Path

from chatledger.events import EventStore, SQLiteStore
from tests.store_contract import StoreContract


class TestSQLiteStore(StoreContract):
    def make_store(self, tmp_path: Path) -> EventStore:
        return SQLiteStore(tmp_path / "contract.db")
