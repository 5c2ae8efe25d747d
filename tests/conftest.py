"""Shared fixtures: the loopback model servers (Gemini, OpenAI-compatible, faulty), real
SQLite files, clients. A fixture more than one test module needs lives here, once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import chatledger
from tests.support.fault_server import FaultServer
from tests.support.gemini_server import GeminiServer
from tests.support.openai_server import OpenAIServer

API_KEY = "test-api-key-DO-NOT-LEAK-4f9a8b7c"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests decide their own store, key and base URL; the developer's shell must not leak in.
    for name in (
        "CHATLEDGER_DB",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_API_VERSION",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "CHATLEDGER_LOCAL_MODEL",
        # Vertex AI (docs/chat-api.md): the endpoint, its credentials and their files.
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_ENTERPRISE",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_VERTEX_BASE_URL",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def gemini_server() -> Iterator[GeminiServer]:
    with GeminiServer() as server:
        yield server


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A scripted OpenAI-protocol server; its ``base_url`` ends in ``/v1``."""
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A server that answers badly on purpose; a script that raised fails the test."""
    with FaultServer() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chatledger.db"


@pytest.fixture
def client(gemini_server: GeminiServer, db_path: Path) -> Iterator[chatledger.Client]:
    """A chatledger client on a real SQLite file, talking to the loopback server."""
    with chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": gemini_server.base_url, "api_version": "v1beta"},
        store=str(db_path),
        actor="tester",
    ) as client:
        yield client


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("CHATLEDGER_TEST", "1")
