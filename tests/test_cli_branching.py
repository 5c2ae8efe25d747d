"""The CLI's branching, replay and audit commands: fork, tree, diff, replay, export,
import, on real SQLite files, with model replies from the loopback Gemini server."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from chatledger.cli import cli
from tests.support.gemini_server import GeminiServer

API_KEY = "test-cli-key-NEVER-PRINT-7d3e1f0a"
VERIFIER = Path(__file__).resolve().parents[1] / "examples" / "verify_export.py"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    return CliRunner()


def run(runner: CliRunner, db: Path, *args: str) -> Result:
    return runner.invoke(cli, ["--db", str(db), *args], catch_exceptions=False)


def say(
    runner: CliRunner, db: Path, server: GeminiServer, message: str, reply: str, *extra: str
) -> str:
    server.reply_text(reply)
    result = run(runner, db, "chat", "--no-stream", "--base-url", server.base_url, *extra, message)
    assert result.exit_code == 0, result.stderr
    return next(
        line.split(": ", 1)[1]
        for line in result.stderr.splitlines()
        if line.startswith("conversation: ")
    )


@pytest.fixture
def conversation(runner: CliRunner, db_path: Path, gemini_server: GeminiServer) -> str:
    conversation_id = say(
        runner, db_path, gemini_server, "Plan a trip to Rome", "Visit the Colosseum."
    )
    say(
        runner,
        db_path,
        gemini_server,
        "What about food?",
        "Try carbonara.",
        "--id",
        conversation_id,
    )
    return conversation_id


def test_fork_tree_and_diff(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, conversation: str
) -> None:
    forked = run(runner, db_path, "fork", conversation[:8], "--turn", "1")
    assert forked.exit_code == 0, forked.stderr
    fork_id = forked.stdout.strip()
    assert "at version 4" in forked.stderr
    say(
        runner,
        db_path,
        gemini_server,
        "What about museums?",
        "The Vatican Museums.",
        "--id",
        fork_id,
    )

    tree = run(runner, db_path, "tree", fork_id[:8])
    lines = tree.stdout.splitlines()
    assert lines[0].startswith(conversation[:8]) and "2 turns" in lines[0]
    assert lines[1].startswith("└─ " + fork_id[:8] + " at v4")
    assert '"What about museums?"' in lines[1] and lines[1].endswith("*")

    diff = run(runner, db_path, "diff", conversation, fork_id)
    assert diff.exit_code == 0
    assert "share their first 2 contents" in diff.stdout
    rows = [line for line in diff.stdout.splitlines() if " | " in line][1:]
    assert (
        "What about food?" in rows[0].split(" | ")[0]
        and "What about museums?" in rows[0].split(" | ")[1]
    )
    assert "carbonara" in rows[1].split(" | ")[0] and "Vatican" in rows[1].split(" | ")[1]

    same = run(runner, db_path, "diff", conversation, conversation)
    assert "identical" in same.stdout


def test_fork_rejects_a_bad_point(runner: CliRunner, db_path: Path, conversation: str) -> None:
    result = runner.invoke(cli, ["--db", str(db_path), "fork", conversation, "--at", "999"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: at=999 is not a version")


def test_replay_offline_then_detects_a_tampered_request(
    runner: CliRunner, db_path: Path, conversation: str
) -> None:
    ok = run(runner, db_path, "replay", conversation)
    assert ok.exit_code == 0, ok.stdout
    assert "Replayed 2 of 2 model calls" in ok.stdout and "No differences" in ok.stdout
    # Someone rewrites what the user said (and re-hashes nothing): the recorded digest of
    # the request no longer matches what the log rebuilds, and replay says which call.
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        data = json.loads(
            conn.execute(
                "SELECT data FROM events WHERE conversation_id = ? AND version = 2", (conversation,)
            ).fetchone()[0]
        )
        data["content"]["parts"][0]["text"] = "Plan a trip to Oslo"
        conn.execute(
            "UPDATE events SET data = ? WHERE conversation_id = ? AND version = 2",
            (json.dumps(data), conversation),
        )
    bad = runner.invoke(cli, ["--db", str(db_path), "replay", conversation])
    assert bad.exit_code == 1
    assert "Problem: model call 1 does not rebuild to the contents digest it recorded" in bad.stdout


def test_replay_with_another_model_reruns_as_a_fork(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, conversation: str
) -> None:
    gemini_server.reply_text("Rome: see the Pantheon.")
    gemini_server.reply_text("Eat supplì.")
    result = run(
        runner,
        db_path,
        "replay",
        conversation,
        "--model",
        "gemini-other",
        "--base-url",
        gemini_server.base_url,
    )
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if " | " in line]
    assert "Colosseum" in rows[2].split(" | ")[0] and "Pantheon" in rows[2].split(" | ")[1]
    assert [request.model for request in gemini_server.requests[-2:]] == [
        "gemini-other",
        "gemini-other",
    ]
    rerun_id = result.stdout.splitlines()[0]
    assert run(runner, db_path, "tree", conversation).stdout.count("└─") == 1
    assert rerun_id[:8] in run(runner, db_path, "tree", conversation).stdout


def test_export_verify_and_import(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, conversation: str, tmp_path: Path
) -> None:
    fork_id = run(runner, db_path, "fork", conversation, "--turn", "1").stdout.strip()
    say(runner, db_path, gemini_server, "Another branch", "Sure.", "--id", fork_id)
    export_path = tmp_path / "export.jsonl"
    exported = run(runner, db_path, "export", conversation, "--forks", "-o", str(export_path))
    assert exported.exit_code == 0 and "exported 11 events" in exported.stderr
    checked = subprocess.run(
        [sys.executable, "-I", str(VERIFIER), str(export_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0 and "2 conversations, 11 events, 0 problems" in checked.stdout
    stdout_export = run(runner, db_path, "export", conversation)
    assert len(stdout_export.stdout.splitlines()) == 7

    copy = tmp_path / "copy.db"
    imported = run(runner, copy, "import", str(export_path))
    assert imported.exit_code == 0
    assert "Imported 11 events of 2 conversations" in imported.stdout
    assert run(runner, copy, "verify").exit_code == 0
    again = run(runner, copy, "import", str(export_path))
    assert "Imported 0 events" in again.stdout and again.stdout.count("Already present") == 2

    lines = export_path.read_text().splitlines()
    tampered = json.loads(lines[3])
    tampered["metadata"]["actor"] = "mallory"
    lines[3] = json.dumps(tampered)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    refused = runner.invoke(cli, ["--db", str(tmp_path / "fresh.db"), "import", str(bad)])
    assert refused.exit_code == 1
    assert "Error: log verification failed" in refused.stderr and "hash mismatch" in refused.stderr
    assert "Imported" not in refused.stdout
