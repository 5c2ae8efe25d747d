"""Fixtures for the serve tests: a real SQLite file, a client with the scripted
transport, and the server running on a loopback port in a thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import chatledger
from chatledger.client.transports import ScriptedTransport
from chatledger.serve.settings import ServeSettings, TokenTable

from .support import Served, serve_in_thread

ALICE_TOKEN = "alice-token-4b1f9e7d2c8a6035"
BOB_TOKEN = "bob-token-9d3e1c7a5f2b8046-xyz"


@pytest.fixture
def scripted() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
def client(db_path: Path, scripted: ScriptedTransport) -> Iterator[chatledger.Client]:
    with chatledger.Client(store=str(db_path), transport=scripted, actor="tester") as client:
        yield client


@pytest.fixture
def served(client: chatledger.Client) -> Iterator[Served]:
    """The server without tokens (loopback): every request acts as "tester"."""
    with serve_in_thread(client) as served:
        yield served


@pytest.fixture
def token_settings() -> ServeSettings:
    return ServeSettings(tokens=TokenTable([("alice", ALICE_TOKEN), ("bob", BOB_TOKEN)]))


@pytest.fixture
def token_served(client: chatledger.Client, token_settings: ServeSettings) -> Iterator[Served]:
    """The server with tokens for alice and bob."""
    with serve_in_thread(client, token_settings) as served:
        yield served


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
