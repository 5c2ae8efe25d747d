"""``chatledger serve`` as a user runs it: options, refusals, and a real process whose
logs, database and answers never hold a token or the API key."""

from __future__ import annotations

from pathlib import Path

import httpx
from click.testing import CliRunner

import chatledger
from chatledger.cli import cli
from tests.conftest import API_KEY
from tests.support.gemini_server import GeminiServer, text_response

from .conftest import ALICE_TOKEN, BOB_TOKEN, bearer
from .support import csrf_of, serve_subprocess, sse_events

WRONG_TOKEN = "wrong-token-7e1d0c3b9a8f6e5d"


def test_serve_is_a_command_with_its_options() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--token", "--token-file", "--read-only", "--actor"):
        assert option in result.output


def test_serve_refuses_to_bind_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--db", str(tmp_path / "x.db"), "serve", "--host", "0.0.0.0", "--port", "0"]
    )
    assert result.exit_code == 1
    assert "refusing to serve on 0.0.0.0 without an access token" in result.output
    assert not (tmp_path / "x.db").exists()  # nothing was opened


def test_serve_refuses_weak_tokens_and_actor_with_tokens(tmp_path: Path) -> None:
    weak = CliRunner().invoke(cli, ["serve", "--token", "alice=hunter2", "--port", "0"])
    assert weak.exit_code == 1 and "16 to 512 characters" in weak.output
    assert "hunter2" not in weak.output
    mixed = CliRunner().invoke(
        cli, ["serve", "--token", f"alice={ALICE_TOKEN}", "--actor", "bob", "--port", "0"]
    )
    assert mixed.exit_code == 2 and "--actor names the actor without tokens" in mixed.output
    missing = CliRunner().invoke(cli, ["serve", "--token-file", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "cannot read the token file" in missing.output


def test_a_served_process_never_writes_a_token_or_the_key(
    tmp_path: Path, gemini_server: GeminiServer
) -> None:
    db = tmp_path / "served.db"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice={ALICE_TOKEN}\nbob={BOB_TOKEN}\n")
    # The model server echoes the key and a token back in an error: they must be masked.
    gemini_server.reply_text("hello alice")
    gemini_server.reply_sse(
        [text_response("str", finish_reason=None), text_response("eam", finish_reason="STOP")]
    )
    gemini_server.reply_error(400, "INVALID_ARGUMENT", f"bad key {API_KEY} for {ALICE_TOKEN}")
    with serve_subprocess(
        [
            "--db",
            str(db),
            "serve",
            "--token-file",
            str(tokens),
            "--base-url",
            gemini_server.base_url,
            "--log-level",
            "debug",
            "--model",
            "gemini-2.5-flash",
        ],
        env={"GEMINI_API_KEY": API_KEY},
    ) as served:
        http = httpx.Client(base_url=served.base_url, timeout=30)
        assert http.get("/api/health").status_code == 401  # it names the store
        health = http.get("/api/health", headers=bearer(ALICE_TOKEN))
        assert health.json()["authentication"] == "bearer" and health.json()["read_only"] is False
        assert "server" not in health.headers
        created = http.post("/api/conversations", json={}, headers=bearer(ALICE_TOKEN))
        assert created.status_code == 201, created.text
        cid = created.json()["conversation_id"]
        assert created.json()["model"] == "gemini-2.5-flash"
        sent = http.post(
            f"/api/conversations/{cid}/messages",
            json={"message": "hello"},
            headers=bearer(BOB_TOKEN),
        )
        assert sent.json()["text"] == "hello alice"
        with http.stream(
            "POST",
            f"/api/conversations/{cid}/messages",
            json={"message": "stream", "stream": True},
            headers=bearer(ALICE_TOKEN),
        ) as response:
            kinds = [kind for kind, _, _ in sse_events(response.iter_lines())]
        assert kinds == ["chunk", "chunk", "done"]
        failed = http.post(
            f"/api/conversations/{cid}/messages",
            json={"message": "fail"},
            headers=bearer(ALICE_TOKEN),
        )
        assert failed.status_code == 502
        assert API_KEY not in failed.text and ALICE_TOKEN not in failed.text
        assert http.get("/api/conversations", headers=bearer(WRONG_TOKEN)).status_code == 401
        # A client that puts its token in the URL: refused, and masked in the access log.
        assert http.get(f"/api/conversations?token={BOB_TOKEN}").status_code == 401
        login = http.get("/login")
        signed_in = http.post(
            "/login",
            data={"csrf": csrf_of(login.text), "token": ALICE_TOKEN, "next": "/"},
            headers={"Origin": served.base_url},
        )
        assert signed_in.status_code == 303
        assert http.get(f"/c/{cid}").status_code == 200
        http.close()
        output = served.text()
    assert "GET /api/health" in output  # the access log is on
    assert "token=***" in output
    with chatledger.Client(store=str(db)) as reader:
        actors = [event.actor for event in reader.store.read(cid)]
        exported = "\n".join(chatledger.export_conversation(reader.store, cid))
    assert actors[:5] == ["alice", "bob", "bob", "bob", "alice"]
    stored = db.read_bytes() + b"".join(path.read_bytes() for path in tmp_path.glob("served.db-*"))
    for secret in (ALICE_TOKEN, BOB_TOKEN, WRONG_TOKEN, API_KEY):
        assert secret not in output, secret
        assert secret.encode() not in stored, secret
        assert secret not in exported, secret


def test_read_only_and_actor_options(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    with chatledger.Client(store=str(db), actor="writer") as writer:
        writer.chats.create(model="local")
    with serve_subprocess(["--db", str(db), "serve", "--read-only", "--actor", "ops"]) as served:
        health = httpx.get(served.base_url + "/api/health").json()
        assert health["read_only"] is True and health["authentication"].startswith("none")
        refused = httpx.post(served.base_url + "/api/conversations", json={"model": "local"})
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "ReadOnly"
        listing = httpx.get(served.base_url + "/api/conversations").json()
        assert len(listing["conversations"]) == 1
