"""Each integration's example runs as written (offline), and none of the frameworks is
imported unless its integration is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FRAMEWORKS = ("agents", "openai", "langchain_core", "langsmith", "datasette", "opentelemetry")


def run(*args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "CHATLEDGER_DB"}}
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def imported_after(statement: str) -> list[str]:
    code = (
        f"import sys, json\n{statement}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r}))))"
    )
    return list(json.loads(run("-c", code, cwd=EXAMPLES)))


def test_importing_chatledger_imports_no_framework() -> None:
    assert imported_after("import chatledger, chatledger.cli") == []
    assert imported_after("import chatledger.integrations") == []


@pytest.mark.parametrize(
    ("module", "needs"),
    [
        ("chatledger.integrations.agents", {"agents", "openai"}),
        ("chatledger.integrations.langchain", {"langchain_core"}),
        ("chatledger.integrations.datasette", set()),
    ],
)
def test_each_integration_imports_only_its_framework(module: str, needs: set[str]) -> None:
    found = set(imported_after(f"import {module}"))
    assert needs <= found
    others = {"agents", "langchain_core", "datasette"} - needs
    assert not found & others, found


def test_the_agents_example_runs(tmp_path: Path) -> None:
    out = run(str(EXAMPLES / "agents_session.py"), "--db", "agents.db", cwd=tmp_path)
    assert "I was sent 3 items; the first said 'My name is Ada.'." in out
    assert "the session holds 4 items" in out
    assert "session_item_popped" in out
    assert "before the pop the session held 4 items" in out
    assert "verify: ok" in out
    again = run(str(EXAMPLES / "agents_session.py"), "--db", "agents.db", cwd=tmp_path)
    assert "session_cleared" in again and "verify: ok" in again  # it runs again on its log


def test_the_langchain_example_runs(tmp_path: Path) -> None:
    out = run(str(EXAMPLES / "langchain_history.py"), "--db", "lc.db", cwd=tmp_path)
    assert "> Capital of France?\nParis.\n> And of Italy?\nRome." in out
    assert "the history holds 4 messages" in out
    assert "['Capital of France?', 'Paris.', 'And of Peru?', 'Lima.']" in out
    assert "after clear(): 0 messages" in out
    assert "verify: ok" in out


def test_the_datasette_example_runs(tmp_path: Path) -> None:
    out = run(str(EXAMPLES / "datasette_views.py"), "--db", "log.db", cwd=tmp_path)
    assert "'A ledger is a book of accounts.'" in out
    assert "support-42   openai-agents  'Where is my parcel?'" in out
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert set(metadata["databases"]["log"]["tables"]) >= {"chat_conversations", "chat_messages"}


def test_the_metadata_command_describes_every_column(tmp_path: Path) -> None:
    from chatledger.events.views import VIEW_COLUMNS

    out = run("-m", "chatledger.integrations.datasette", "my-log.db", cwd=tmp_path)
    tables = json.loads(out)["databases"]["my-log"]["tables"]
    for view, columns in VIEW_COLUMNS.items():
        assert list(tables[view]["columns"]) == list(columns)
        assert all(tables[view]["columns"].values())
