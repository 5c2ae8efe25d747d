"""Erasure (docs/erasure.md) on a real SQLite file and a real PostgreSQL database: the
erased content is absent from the raw bytes of every file, every hash (and so verify,
exports and the standalone verifier) still holds, placeholders show wherever a history is
shown, and tampering with erased or live content is detected."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.client import _fold, verify_log
from chatledger.events import ContentErased, EventStore, SQLiteStore
from chatledger.proofs.merkle import MemoryTree, consistency_proof, inclusion_proof, leaf_hash
from tests.conftest import API_KEY
from tests.support.gemini_server import GeminiServer, text_response
from tests.support.postgres import connect, scratch_database

VERIFIER = Path(__file__).resolve().parents[2] / "examples" / "verify_export.py"

SECRETS = {
    "user": "my-diagnosis-is-LUPUS-7731",
    "reply": "reply-about-the-LUPUS-8842",
    "arg": "patient-record-ARG-9953",
    "result": "lab-result-RESULT-1064",
}
KEPT = "another-person-KEPT-2275"


def lookup(record: str) -> dict[str, Any]:
    """Look a record up."""
    return {"found": SECRETS["result"], "for": record}


class Backend:
    """A store under test, and the raw bytes of every file it keeps."""

    def __init__(self, kind: str, url: str, files: Callable[[], list[bytes]]) -> None:
        self.kind, self.url, self.files = kind, url, files

    def client(self, server: GeminiServer) -> chatledger.Client:
        return chatledger.Client(
            api_key=API_KEY,
            http_options={"base_url": server.base_url, "api_version": "v1beta"},
            store=self.url,
            actor="app",
        )

    def holds(self, text: str) -> bool:
        needle = text.encode()
        return any(needle in blob for blob in self.files())


def _sqlite_files(path: Path) -> Callable[[], list[bytes]]:
    def files() -> list[bytes]:
        return [p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file()]

    return files


def _postgres_files(url: str) -> Callable[[], list[bytes]]:
    """Every relation file of the database (tables, TOAST, indexes), read from the data
    directory after a CHECKPOINT has written the shared buffers out."""

    def files() -> list[bytes]:
        with connect(url) as conn:
            conn.execute("CHECKPOINT")
            row = conn.execute(
                "SELECT current_setting('data_directory'), oid FROM pg_database "
                "WHERE datname = current_database()"
            ).fetchone()
            assert row is not None
            folder = Path(str(row[0])) / "base" / str(row[1])
            # The log's own tables are among them (a sanity check of the path).
            events = conn.execute("SELECT pg_relation_filepath('events')").fetchone()
            assert events is not None
            assert (Path(str(row[0])) / str(events[0])).parent == folder
        return [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()]

    return files


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "log.db"
        yield Backend("sqlite", str(path), _sqlite_files(path))
    else:
        with scratch_database("chatledger_erasure") as url:
            yield Backend("postgres", url, _postgres_files(url))


@pytest.fixture(autouse=True)
def _snapshots_early(monkeypatch: pytest.MonkeyPatch) -> None:
    # Snapshots (which copy content) after a few events, so erasure must deal with them.
    monkeypatch.setattr(_fold, "SNAPSHOT_EVERY", 3)


def _converse(client: chatledger.Client, server: GeminiServer, **create: Any) -> chatledger.Chat:
    """A conversation holding every kind of content: a message, a function call with
    arguments and its result, and the model's reply."""
    server.reply_json(
        text_response(
            parts=[{"functionCall": {"name": "lookup", "args": {"record": SECRETS["arg"]}}}]
        )
    )
    server.reply_text(SECRETS["reply"])
    chat = client.chats.create(model="gemini-2.5-flash", config={"tools": [lookup]}, **create)
    chat.send_message(SECRETS["user"])
    return chat


def _other(client: chatledger.Client, server: GeminiServer, **create: Any) -> chatledger.Chat:
    server.reply_text("ok")
    chat = client.chats.create(model="gemini-2.5-flash", **create)
    chat.send_message(KEPT)
    return chat


def _texts(chat: chatledger.Chat) -> str:
    return json.dumps([c.model_dump(mode="json") for c in chat.get_history()])


def _view_texts(backend: Backend, cid: str) -> str:
    """The chat_messages view's rows of ``cid`` (docs/integrations.md), as one text."""
    query = "SELECT * FROM chat_messages WHERE conversation_id = {} ORDER BY version"
    if backend.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(backend.url)) as conn:
            rows = conn.execute(query.format("?"), (cid,)).fetchall()
    else:
        with connect(backend.url) as pg:
            rows = pg.execute(query.format("%s"), (cid,)).fetchall()
    return json.dumps([list(row) for row in rows], default=str)


def _export_verifies(store: EventStore, cid: str, tmp_path: Path) -> str:
    lines = list(chatledger.export_conversation(store, cid, include_forks=True))
    target = tmp_path / f"{cid}.jsonl"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-I", str(VERIFIER), str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert ", 0 problems" in done.stdout
    return target.read_text(encoding="utf-8")


def test_erasing_a_conversation_removes_its_content_from_every_file(
    backend: Backend, gemini_server: GeminiServer, tmp_path: Path
) -> None:
    with backend.client(gemini_server) as client:
        chat = _converse(client, gemini_server)
        fork = chat.fork()
        other = _other(client, gemini_server)
        store = client.store
        hashes = [e.hash for e in store.read(chat.id)]
        assert store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME) is not None
        if backend.kind == "postgres":
            # Planner statistics sample column values into pg_statistic: none of content.
            with connect(backend.url) as conn:
                conn.execute("ANALYZE")
        # The control: before erasure, every secret is in the files.
        for secret in SECRETS.values():
            assert backend.holds(secret), secret
        assert SECRETS["arg"] in _texts(chat)

        report = client.erase(
            chat.id, reason="GDPR art. 17 request #12", vacuum=backend.kind == "postgres"
        )

        assert report.conversations == [chat.id]
        assert report.events >= 5  # message, call digest(s), replies, call, result
        assert report.not_erasable == []
        for secret in SECRETS.values():
            assert not backend.holds(secret), f"{secret} is still in the {backend.kind} files"
        assert backend.holds(KEPT)  # the other person's conversation is untouched
        assert KEPT in _texts(client.chats.get(other.id))

        events = store.read(chat.id)
        # Every hash is as it was; the erasure is the one event after them.
        assert [e.hash for e in events[:-1]] == hashes
        last = events[-1]
        assert isinstance(last.data, ContentErased)
        assert last.data.reason == "GDPR art. 17 request #12"
        assert last.data.up_to_version == len(hashes)
        assert last.data.count == report.events == sum(e.erased for e in events)
        assert last.actor == "app"
        assert verify_log(store).ok
        assert store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME) is None

        # Placeholders wherever a history is shown, in this process and a resumed one.
        for shown in (client.chats.get(chat.id), client.chats.get(fork.id)):
            text = _texts(shown)
            assert "[erased]" in text
            assert '"$erased"' in text  # the function call's arguments and result
            assert not any(secret in text for secret in SECRETS.values())
        # The SQL views read the events: placeholders give no text, and no error.
        in_views = _view_texts(backend, chat.id)
        assert len(in_views) >= 4 and not any(secret in in_views for secret in SECRETS.values())
        # The export verifies on its own, fork included, and holds no secret.
        exported = _export_verifies(store, chat.id, tmp_path)
        assert not any(secret in exported for secret in SECRETS.values())
        # And imports into another log as it is.
        with SQLiteStore(tmp_path / "copy.db") as copy:
            imported = chatledger.import_lines(copy, exported.splitlines())
            assert set(imported.conversations) == {chat.id, fork.id}
            assert copy.verify().ok
            assert [e.hash for e in copy.read(chat.id)] == [e.hash for e in events]
            assert [e.erased for e in copy.read(chat.id)] == [e.erased for e in events]
        # The chat goes on after its erasure.
        gemini_server.reply_text("welcome back")
        chat = client.chats.get(chat.id)
        assert chat.send_message("again").text == "welcome back"
        assert verify_log(store).ok


def test_erasing_by_subject_takes_its_conversations_and_their_forks(
    backend: Backend, gemini_server: GeminiServer
) -> None:
    with backend.client(gemini_server) as client:
        first = _converse(client, gemini_server, subject="user-42")
        fork = first.fork()
        second = _other(client, gemini_server, subject="user-42")
        kept = _other(client, gemini_server, subject="user-7")
        first_event = client.store.read(first.id, to_version=1)[0]
        assert first_event.metadata["subject"] == "user-42"

        report = client.erase(subject="user-42", reason="account deleted")

        assert sorted(report.conversations) == sorted([first.id, second.id])
        if backend.kind == "postgres":
            # Without --vacuum the old row versions remain in the table's files: said.
            assert len(report.notes) == 1 and "--vacuum" in report.notes[0]
        else:
            assert report.notes == []
        assert KEPT not in _texts(client.chats.get(second.id))
        assert KEPT in _texts(client.chats.get(kept.id))
        assert SECRETS["user"] not in _texts(client.chats.get(fork.id))
        for cid in (first.id, second.id):
            erased = client.store.read(cid)[-1].data
            assert isinstance(erased, ContentErased)
            assert erased.subject == "user-42"
        assert verify_log(client.store).ok
        # Nothing left to erase: a second request changes nothing.
        again = client.erase(subject="user-42", reason="account deleted")
        assert again.conversations == [] and again.events == 0


def test_erasing_what_is_older_than_a_retention_period(
    backend: Backend, gemini_server: GeminiServer
) -> None:
    with backend.client(gemini_server) as client:
        chat = _converse(client, gemini_server)
        store = client.store
        now = _dt.datetime.now(_dt.timezone.utc)
        # Nothing is 30 days old yet.
        report = chatledger.erase(store, reason="retention", actor="cron", older_than="30d")
        assert report.conversations == [] and SECRETS["user"] in _texts(chat)
        # 31 days on, all of it is.
        later = now + _dt.timedelta(days=31)
        report = chatledger.erase(
            store, reason="retention", actor="cron", older_than="30d", now=later
        )
        assert report.conversations == [chat.id]
        erased = store.read(chat.id)[-1]
        assert isinstance(erased.data, ContentErased)
        assert erased.actor == "cron"
        assert erased.data.older_than is not None and erased.data.older_than < later.isoformat()
        assert SECRETS["user"] not in _texts(client.chats.get(chat.id))
        assert verify_log(store).ok


@pytest.mark.parametrize("bad", ["", "x" * 1001])
def test_erase_refuses_a_bad_request_and_leaves_the_log_unchanged(
    tmp_path: Path, gemini_server: GeminiServer, bad: str
) -> None:
    with Backend("sqlite", str(tmp_path / "log.db"), lambda: []).client(gemini_server) as client:
        chat = _converse(client, gemini_server)
        before = client.store.read(chat.id)
        with pytest.raises(chatledger.InvalidInputError, match="reason"):
            client.erase(chat.id, reason=bad)
        with pytest.raises(chatledger.InvalidInputError, match="exactly one"):
            client.erase(chat.id, subject="s", reason="r")
        with pytest.raises(chatledger.InvalidInputError, match="an age"):
            client.erase(older_than="thirty days", reason="r")
        with pytest.raises(chatledger.NotFoundError):
            client.erase("no-such-conversation", reason="r")
        with pytest.raises(chatledger.InvalidInputError, match="subject"):
            client.chats.create(model="gemini-2.5-flash", subject="\n")
        assert client.store.read(chat.id) == before


def test_merkle_proofs_over_the_log_still_verify_after_erasure(
    backend: Backend, gemini_server: GeminiServer
) -> None:
    # Leaves are event hashes in position order (docs/proofs.md): erasure keeps them.
    with backend.client(gemini_server) as client:
        chat = _converse(client, gemini_server)
        _other(client, gemini_server)
        store = client.store
        before = store.read_all(limit=1000)
        tree = MemoryTree.of(bytes.fromhex(e.hash) for e in before)
        old_root = tree.root()
        proofs = {
            e.event_id: inclusion_proof(tree, index, tree.size)
            for index, e in enumerate(before)
            if e.conversation_id == chat.id
        }
        assert len(proofs) >= 6

        client.erase(chat.id, reason="asked", vacuum=backend.kind == "postgres")

        after = store.read_all(limit=1000)
        assert sum(e.erased for e in after) >= 5
        grown = MemoryTree.of(bytes.fromhex(e.hash) for e in after)
        assert len(after) == len(before) + 1  # the content_erased event
        consistency_proof(grown, len(before), grown.size).verify(old_root, grown.root())
        checked = 0
        for event in after[: len(before)]:
            if event.event_id in proofs:
                checked += 1
                # A proof handed out before the erasure still proves the erased event.
                proofs[event.event_id].verify(leaf_hash(bytes.fromhex(event.hash)), old_root)
        assert checked == len(proofs)
