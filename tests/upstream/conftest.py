"""Fixtures of the upstream ports: a client on a real SQLite file with a scripted model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import chatledger
from chatledger.client.transports import ScriptedTransport


@pytest.fixture
def scripted() -> ScriptedTransport:
    """The model: replies are queued by each test; ``.requests`` holds what was sent."""
    return ScriptedTransport()


@pytest.fixture
def ledger(scripted: ScriptedTransport, tmp_path: Path) -> Iterator[chatledger.Client]:
    with chatledger.Client(store=str(tmp_path / "upstream.db"), transport=scripted) as client:
        yield client
