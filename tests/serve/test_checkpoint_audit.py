"""The audit page and /api/verify check the log against signed checkpoints
(``chatledger serve --checkpoint FILE --verifier-key KEY``), as ``chatledger verify
--checkpoint`` does: an honest log extends them, a rewritten one does not."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

import chatledger
from chatledger.cli import cli
from chatledger.client.transports import ScriptedTransport
from chatledger.errors import IntegrityError, InvalidInputError
from chatledger.proofs.note import Signer, write_private_key
from chatledger.proofs.tree import StoreTree
from chatledger.serve.audit import CheckpointFile
from chatledger.serve.command import build_settings
from chatledger.serve.settings import ServeSettings

from .support import serve_in_thread

ORIGIN = "chatledger.test/serve"


def converse(client: chatledger.Client, scripted: ScriptedTransport, turns: int) -> str:
    chat = client.chats.create(model="gemini-2.5-flash")
    for turn in range(turns):
        scripted.enqueue(f"reply {turn}")
        chat.send_message(f"message {turn}")
    return chat.id


def sign(client: chatledger.Client, signer: Signer, path: Path) -> int:
    """Append a signed checkpoint of the log to ``path``; return its size."""
    checkpoint, note = StoreTree(client.store).checkpoint(signer)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(note)
    return checkpoint.size


def cut_after_first_turn(db: Path, conversation_id: str) -> None:
    """What a writer of the database can do: drop every turn after the first and fix the
    head row, with the triggers put back exactly as they were."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        triggers = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
        ).fetchall()
        conn.execute("BEGIN IMMEDIATE")
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute(
            "DELETE FROM events WHERE conversation_id = ? AND version > 4", (conversation_id,)
        )
        last = conn.execute(
            "SELECT version, hash, recorded_at FROM events WHERE conversation_id = ? "
            "ORDER BY version DESC LIMIT 1",
            (conversation_id,),
        ).fetchone()
        conn.execute(
            "UPDATE streams SET version = ?, head_hash = ?, updated_at = ? "
            "WHERE conversation_id = ?",
            (*last, conversation_id),
        )
        for _, sql in triggers:
            conn.execute(sql)
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_the_audit_proves_the_log_extends_every_checkpoint_and_catches_a_rewrite(
    client: chatledger.Client, scripted: ScriptedTransport, db_path: Path, tmp_path: Path
) -> None:
    signer = Signer.generate(ORIGIN)
    heads = tmp_path / "heads.txt"
    cid = converse(client, scripted, 2)
    first = sign(client, signer, heads)
    converse(client, scripted, 1)
    newest = sign(client, signer, heads)
    assert newest > first
    scripted.enqueue("after the checkpoints")
    client.chats.get(cid).send_message("one more")  # the log may grow past them

    settings = ServeSettings(checkpoints=CheckpointFile(heads, signer.verifier.verifier_key))
    with serve_in_thread(client, settings) as served:
        honest = served.http.get("/api/verify").json()
        assert honest["ok"] is True, honest["problems"]
        checkpoint = honest["checkpoint"]
        assert checkpoint["extends"] is True
        assert checkpoint["checkpoints_checked"] == 2
        assert checkpoint["size"] == newest and checkpoint["origin"] == ORIGIN
        assert checkpoint["log_size"] == newest + 3  # one more turn: three events
        page = served.http.get("/audit", params={"run": "true"})
        served.state.audit.wait(30)
        page = served.http.get("/audit")
        assert "The log extends the 2 signed checkpoints" in page.text

        # Drop the first conversation's second turn (both checkpoints cover it) and after.
        cut_after_first_turn(db_path, cid)
        rewritten = served.http.get("/api/verify").json()
        assert rewritten["ok"] is False
        assert rewritten["checkpoint"]["extends"] is False
        assert rewritten["checkpoint"]["checkpoints_not_extended"] == 2
        reasons = [
            p["reason"] for p in rewritten["problems"] if p["conversation_id"] == "(checkpoint)"
        ]
        assert len(reasons) == 2 and all("checkpoint" in reason for reason in reasons), reasons
        served.http.get("/audit", params={"run": "true"})
        served.state.audit.wait(30)
        assert "does <strong>not</strong> extend" in served.http.get("/audit").text


def test_without_checkpoints_the_result_says_none_were_checked(
    client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    converse(client, scripted, 1)
    with serve_in_thread(client) as served:
        assert served.http.get("/api/verify").json()["checkpoint"] is None
        served.http.get("/audit", params={"run": "true"})
        served.state.audit.wait(30)
        assert "--checkpoint FILE --verifier-key KEY" in served.http.get("/audit").text


def test_bad_checkpoint_options_are_refused_when_the_server_starts(
    tmp_path: Path, client: chatledger.Client, scripted: ScriptedTransport
) -> None:
    signer = Signer.generate(ORIGIN)
    heads = tmp_path / "heads.txt"
    converse(client, scripted, 1)
    sign(client, signer, heads)
    other = Signer.generate(ORIGIN).verifier.verifier_key
    with pytest.raises(IntegrityError, match="no trusted key signed"):
        CheckpointFile(heads, other)
    with pytest.raises(InvalidInputError, match=r"no checkpoint file|cannot read"):
        CheckpointFile(tmp_path / "missing.txt", signer.verifier.verifier_key)
    private = tmp_path / "signer.key"

    write_private_key(str(private), signer)
    secret = private.read_text(encoding="utf-8").strip()
    with pytest.raises(InvalidInputError, match="signing key, not a verifier key") as caught:
        CheckpointFile(heads, secret)
    assert secret not in str(caught.value)
    settings = build_settings(
        host="127.0.0.1", checkpoint_file=str(heads), verifier_key=signer.verifier.verifier_key
    )
    assert settings.checkpoints is not None

    result = CliRunner().invoke(
        cli, ["--db", str(tmp_path / "x.db"), "serve", "--checkpoint", str(heads)], env={}
    )
    assert result.exit_code == 2 and "--verifier-key" in result.output
    result = CliRunner().invoke(
        cli, ["--db", str(tmp_path / "x.db"), "serve", "--verifier-key", other]
    )
    assert result.exit_code == 2 and "--verifier-key goes with --checkpoint" in result.output
