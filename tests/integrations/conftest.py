"""Fixtures for the integrations: where a log lives (a SQLite file, a PostgreSQL database)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import scratch_database


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A scratch PostgreSQL database for the module (the test fails if the server is down)."""
    with scratch_database("chatledger_integrations") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a new, empty log lives: a SQLite file, or a schema of its own in the module's
    PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "chatledger.db")
    url: str = request.getfixturevalue("postgres_url")
    return f"{url}?schema=t_{uuid.uuid4().hex[:12]}"
