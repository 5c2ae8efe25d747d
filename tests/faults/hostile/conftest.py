"""Fixtures of the hostile-input tests: one loopback server per module, and a client on
a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import chatledger
from chatledger.events import SQLiteStore
from tests.conftest import API_KEY
from tests.faults.hostile.support import clear_replies
from tests.support.gemini_server import GeminiServer


@pytest.fixture(scope="module")
def module_server() -> Iterator[GeminiServer]:
    """One loopback server for the module (stopping one takes half a second)."""
    with GeminiServer() as server:
        yield server


@pytest.fixture
def gemini_server(module_server: GeminiServer) -> GeminiServer:
    clear_replies(module_server)
    return module_server


@pytest.fixture
def hostile(gemini_server: GeminiServer, db_path: Path) -> Iterator[chatledger.Client]:
    with chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": gemini_server.base_url},
        store=SQLiteStore(db_path),
        actor="tester",
    ) as client:
        try:
            yield client
        finally:
            client.store.close()
