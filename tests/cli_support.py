"""What the CLI tests share: running the CLI in process (click's runner) or as a real
process, and checking its output, its errors and the log it leaves."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

import chatledger
from chatledger.cli import cli
from chatledger.events import SQLiteStore
from tests.support.gemini_server import GeminiServer, text_response

API_KEY = "test-cli-key-NEVER-PRINT-7d3e1f0a"


def run(
    runner: CliRunner,
    db: Path | None,
    *args: str,
    input: str | bytes | None = None,
) -> Result:
    """Invoke the CLI in-process; unexpected exceptions propagate (they are bugs)."""
    argv = ["--db", str(db), *args] if db is not None else list(args)
    return runner.invoke(cli, argv, input=input, catch_exceptions=False)


def cli_process(
    *args: str | bytes, env: dict[str, str], stdin: str | bytes = ""
) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process (``python -m chatledger.cli``), as a shell runs it;
    its output decoded as UTF-8 (bytes that are not kept as surrogates)."""
    done = subprocess.run(
        [sys.executable, "-m", "chatledger.cli", *args],
        # Never the test runner's own stdin, which may stay open.
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        env=env,
        timeout=120,
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "surrogateescape"),
        done.stderr.decode("utf-8", "surrogateescape"),
    )


def stream_reply(server: GeminiServer, *pieces: str) -> None:
    """Script one streamed reply whose text arrives in ``pieces``."""
    chunks = [text_response(piece, finish_reason=None) for piece in pieces[:-1]]
    chunks.append(text_response(pieces[-1], usage={"totalTokenCount": 12}))
    server.reply_sse(chunks)


def conversation_id_of(result: Result | subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("conversation: ")]
    assert len(lines) == 1, result.stderr
    return lines[0].removeprefix("conversation: ").strip()


def one_shot(runner: CliRunner, db: Path, server: GeminiServer, message: str, *args: str) -> Result:
    result = run(runner, db, "chat", "--base-url", server.base_url, *args, message)
    assert result.exit_code == 0, result.output
    return result


def events_of(db: Path, conversation_id: str) -> list[chatledger.RecordedEvent]:
    with SQLiteStore(db) as store:
        return store.read(conversation_id)


def conversations_in(db: Path) -> list[str]:
    with SQLiteStore(db) as store:
        return [info.conversation_id for info in store.conversations()]


def assert_expected_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: "), result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


def assert_key_nowhere(db: Path, *outputs: str, key: str = API_KEY) -> None:
    for output in outputs:
        assert key not in output
    # The -wal file too, in case a connection left one behind.
    for path in db.parent.glob(db.name + "*"):
        assert key.encode() not in path.read_bytes(), path


def file_state(db: Path) -> str:
    """The bytes of a SQLite file and its WAL (or that there are none)."""
    digest = hashlib.sha256()
    for suffix in ("", "-wal"):
        path = Path(str(db) + suffix)
        digest.update(path.read_bytes() if path.exists() else b"<none>")
    return digest.hexdigest()


def process_env(**extra: str) -> dict[str, str]:
    """This process's environment, without a log chosen by the developer's shell."""
    env = {k: v for k, v in os.environ.items() if k != "CHATLEDGER_DB"}
    return {**env, **extra}
