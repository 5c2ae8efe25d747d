"""A chat left open while another process erases its conversation (docs/erasure.md,
"What an open chat keeps"): its next catch-up drops what it held and folds the log again,
so neither its requests, nor the snapshots it writes, nor the read models bring the erased
content back. On a real SQLite file and a real PostgreSQL database, the erasure run by the
``chatledger`` command in another process, the model a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.client import _fold, verify_log
from chatledger.events import EventStore, NewEvent
from chatledger.events.erasing import erase
from chatledger.events.kinds import ContentErased
from tests.cli_support import cli_process, process_env, stream_reply
from tests.conftest import API_KEY
from tests.erasure.test_erasure import Backend, _postgres_files, _sqlite_files
from tests.support.gemini_server import GeminiServer
from tests.support.postgres import scratch_database

SECRETS = ["user-SECRET-4471", "reply-SECRET-5582", "user-SECRET-6693", "reply-SECRET-7704"]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "log.db"
        yield Backend("sqlite", str(path), _sqlite_files(path))
    else:
        with scratch_database("chatledger_open_chat") as url:
            yield Backend("postgres", url, _postgres_files(url))


@pytest.fixture(autouse=True)
def _snapshots_early(monkeypatch: pytest.MonkeyPatch) -> None:
    # A snapshot every few events, so the sends after the erasure write one.
    monkeypatch.setattr(_fold, "SNAPSHOT_EVERY", 3)


def _client(backend: Backend, server: GeminiServer, **extra: Any) -> chatledger.Client:
    return chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": server.base_url, "api_version": "v1beta"},
        store=backend.url,
        actor="app",
        **extra,
    )


def _erase_in_another_process(backend: Backend, conversation_id: str) -> None:
    args = ["--db", backend.url, "erase", conversation_id, "--reason", "user asked"]
    done = cli_process(
        *args, *(["--vacuum"] if backend.kind == "postgres" else []), env=process_env()
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _sent_contents(server: GeminiServer) -> str:
    body = server.requests[-1].body
    assert isinstance(body, dict)
    return json.dumps(body["contents"])


def _assert_gone_everywhere(backend: Backend, server: GeminiServer, cid: str) -> None:
    """No secret in the raw files, `show` (another process), a fresh client's history,
    or the snapshot; and the snapshot the stale chat wrote is one a resume would use."""
    for secret in SECRETS:
        assert not backend.holds(secret), f"{secret} is back in the {backend.kind} files"
    shown = cli_process("--db", backend.url, "show", cid, env=process_env())
    assert shown.returncode == 0, shown.stderr
    assert "later-3" in shown.stdout and "[erased]" in shown.stdout
    assert not any(secret in shown.stdout for secret in SECRETS)
    with _client(backend, server) as fresh:
        history = json.dumps(
            [c.model_dump(mode="json") for c in fresh.chats.get(cid).get_history()]
        )
        assert "[erased]" in history and "later-3" in history
        assert not any(secret in history for secret in SECRETS)
        store = fresh.store
        snapshot = store.load_snapshot(cid, _fold.SNAPSHOT_NAME)
        assert snapshot is not None  # the sends after the erasure wrote one
        assert snapshot.version > next(
            e.version for e in store.read(cid) if isinstance(e.data, ContentErased)
        )
        assert not any(secret.encode() in snapshot.state for secret in SECRETS)
        report = verify_log(store)
        assert report.ok, report.problems
        assert report.snapshots_checked == 1


@pytest.mark.parametrize("mode", ["send", "stream"])
def test_an_open_chat_does_not_bring_erased_content_back(
    backend: Backend, gemini_server: GeminiServer, mode: str
) -> None:
    with _client(backend, gemini_server) as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        for user, reply in ((SECRETS[0], SECRETS[1]), (SECRETS[2], SECRETS[3])):
            gemini_server.reply_text(reply)
            chat.send_message(user)
        assert client.store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME) is not None
        assert all(backend.holds(secret) for secret in SECRETS)  # the control

        _erase_in_another_process(backend, chat.id)
        assert not any(backend.holds(secret) for secret in SECRETS)
        if mode == "send":  # refresh() reads the log as a send does
            chat.refresh()
            held = json.dumps([c.model_dump(mode="json") for c in chat.get_history()])
            assert "[erased]" in held and not any(secret in held for secret in SECRETS)

        for index in range(4):  # past the snapshot threshold
            if mode == "stream":
                stream_reply(gemini_server, "later-", str(index))
                text = "".join(chunk.text or "" for chunk in chat.send_message_stream("next"))
            else:
                gemini_server.reply_text(f"later-{index}")
                text = chat.send_message("next").text or ""
            assert text == f"later-{index}"
            sent = _sent_contents(gemini_server)
            # The request carries placeholders, as a fresh process's would.
            assert "[erased]" in sent
            assert not any(secret in sent for secret in SECRETS), sent
        stale = json.dumps([c.model_dump(mode="json") for c in chat.get_history()])
        assert not any(secret in stale for secret in SECRETS)
    _assert_gone_everywhere(backend, gemini_server, chat.id)


def test_an_open_async_chat_does_not_bring_erased_content_back(
    backend: Backend, gemini_server: GeminiServer
) -> None:
    async def scenario() -> str:
        with _client(backend, gemini_server) as client:
            chat = client.aio.chats.create(model="gemini-2.5-flash")
            for user, reply in ((SECRETS[0], SECRETS[1]), (SECRETS[2], SECRETS[3])):
                gemini_server.reply_text(reply)
                await chat.send_message(user)
            assert all(backend.holds(secret) for secret in SECRETS)
            await asyncio.to_thread(_erase_in_another_process, backend, chat.id)
            for index in range(4):
                gemini_server.reply_text(f"later-{index}")
                assert (await chat.send_message("next")).text == f"later-{index}"
                sent = _sent_contents(gemini_server)
                assert "[erased]" in sent
                assert not any(secret in sent for secret in SECRETS), sent
            await client.aio.aclose()
            return chat.id

    cid = asyncio.run(scenario())
    _assert_gone_everywhere(backend, gemini_server, cid)


def test_a_chat_waits_for_an_erasure_under_way_and_never_sends_its_content(
    backend: Backend, gemini_server: GeminiServer
) -> None:
    """The erasure appends content_erased, then replaces the content in a second
    transaction: a chat that reads the first without the second sends nothing until the
    second is done, and writes no snapshot meanwhile."""
    with _client(backend, gemini_server, busy_timeout=0.5) as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        for user, reply in ((SECRETS[0], SECRETS[1]), (SECRETS[2], SECRETS[3])):
            gemini_server.reply_text(reply)
            chat.send_message(user)
        store: EventStore = client.store
        # Another process's chat, open since before the erasure, with the content.
        other = _client(backend, gemini_server, busy_timeout=30)
        waiting = other.chats.get(chat.id)
        assert SECRETS[0] in json.dumps([c.model_dump(mode="json") for c in waiting.get_history()])
        head = store.stream_info(chat.id)
        assert head is not None
        # The erasure's first step alone (as chatledger.events.erasing does it).
        step_one = NewEvent(
            data=ContentErased(reason="under way", up_to_version=head.version, count=4),
            metadata={"actor": "dpo"},
        )
        store._append(chat.id, [store._encode(step_one)], head.version)
        requests = len(gemini_server.requests)
        gemini_server.reply_text("must not be asked")
        with pytest.raises(_fold.ErasurePending, match="erase"):
            chat.send_message("next")
        assert len(gemini_server.requests) == requests  # nothing was sent
        gemini_server.clear()
        before = store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME)
        assert before is not None  # written before the erasure began
        # A chat opened in between holds the content (docs/erasure.md says so); the
        # snapshot its send would write is not written from a fold that read it.
        with _client(backend, gemini_server) as between:
            opened = between.chats.get(chat.id)
            gemini_server.reply_text("in between")
            opened.send_message("next")
        after = store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME)
        assert after is not None and after.version == before.version

        # The second step runs while the other chat waits for it: it then sends
        # placeholders only.
        with other:
            gemini_server.reply_text("after")
            outcome: list[str] = []
            sender = threading.Thread(
                target=lambda: outcome.append(waiting.send_message("next").text or "")
            )
            sender.start()
            time.sleep(0.3)
            assert outcome == [] and sender.is_alive()  # waiting for the erasure
            erase(
                store,
                reason="finish",
                actor="dpo",
                conversation_id=chat.id,
                vacuum=backend.kind == "postgres",
            )
            sender.join(30)
            assert outcome == ["after"]
            sent = _sent_contents(gemini_server)
            assert "[erased]" in sent and not any(secret in sent for secret in SECRETS)
    for secret in SECRETS:
        assert not backend.holds(secret), secret


def test_a_snapshot_is_written_from_the_log_not_from_an_open_chats_memory(
    backend: Backend, gemini_server: GeminiServer
) -> None:
    """A fork whose parent's events are erased for retention (``older_than``) gets no
    ``content_erased`` event of its own when its own events are newer: an open chat of
    it still holds the parent's content in memory. The snapshots and read-model rows it
    writes come from the log, which holds placeholders."""
    with _client(backend, gemini_server) as client:
        parent = client.chats.create(model="gemini-2.5-flash")
        for user, reply in ((SECRETS[0], SECRETS[1]), (SECRETS[2], SECRETS[3])):
            gemini_server.reply_text(reply)
            parent.send_message(user)
        store: EventStore = client.store
        last = store.read(parent.id)[-1]
        fork = parent.fork()
        fork_started = store.read(fork.id)[0]
        assert last.recorded_at < fork_started.recorded_at
        # The cutoff is the fork's first event: the parent's events are older, the
        # fork's are not.
        report = erase(
            store,
            reason="retention",
            actor="dpo",
            older_than="1s",
            now=fork_started.recorded_at_datetime + _dt.timedelta(seconds=1),
            vacuum=backend.kind == "postgres",
        )
        assert report.conversations == [parent.id]  # not the fork: its events are newer
        assert not any(backend.holds(secret) for secret in SECRETS)

        for index in range(4):
            gemini_server.reply_text(f"later-{index}")
            fork.send_message("next")
        snapshot = store.load_snapshot(fork.id, _fold.SNAPSHOT_NAME)
        assert snapshot is not None  # written after the erasure, by the open fork chat
        assert not any(secret.encode() in snapshot.state for secret in SECRETS)
        for secret in SECRETS:
            assert not backend.holds(secret), f"{secret} is back in the {backend.kind} files"
        with _client(backend, gemini_server) as fresh:
            history = json.dumps(
                [c.model_dump(mode="json") for c in fresh.chats.get(fork.id).get_history()]
            )
            assert "[erased]" in history and "later-3" in history
            assert not any(secret in history for secret in SECRETS)
            report_ok = verify_log(fresh.store)
            assert report_ok.ok, report_ok.problems


def test_a_snapshot_saved_as_an_erasure_begins_is_deleted_again(
    backend: Backend, gemini_server: GeminiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold a snapshot is made from read the content; the whole erasure runs before
    the snapshot is saved: the writer sees the ``content_erased`` event after its version
    and deletes the snapshot it saved."""
    monkeypatch.setattr(_fold, "SNAPSHOT_EVERY", 1000)
    with _client(backend, gemini_server) as client, _client(backend, gemini_server) as dpo:
        chat = client.chats.create(model="gemini-2.5-flash")
        for user, reply in ((SECRETS[0], SECRETS[1]), (SECRETS[2], SECRETS[3])):
            gemini_server.reply_text(reply)
            chat.send_message(user)
        store: EventStore = client.store
        assert store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME) is None
        saved: list[bytes] = []
        real_save = store.save_snapshot

        def erase_then_save(snapshot: Any) -> None:
            erase(dpo.store, reason="meanwhile", actor="dpo", conversation_id=chat.id)
            saved.append(snapshot.state)
            real_save(snapshot)

        monkeypatch.setattr(store, "save_snapshot", erase_then_save)
        monkeypatch.setattr(_fold, "SNAPSHOT_EVERY", 3)
        gemini_server.reply_text("later-0")
        chat.send_message("next")
        # The snapshot was made before the erasure (the control), and is gone.
        assert len(saved) == 1 and SECRETS[0].encode() in saved[0]
        assert store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME) is None
        monkeypatch.setattr(store, "save_snapshot", real_save)
        # The next send reads the content_erased event: placeholders from then on.
        gemini_server.reply_text("later-1")
        chat.send_message("next")
        sent = _sent_contents(gemini_server)
        assert "[erased]" in sent and not any(secret in sent for secret in SECRETS)
        snapshot = store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME)
        assert snapshot is not None
        assert not any(secret.encode() in snapshot.state for secret in SECRETS)
        assert verify_log(store).ok
