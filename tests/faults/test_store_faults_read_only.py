"""Store faults, **read-only**: ``chmod`` when not root; as root (permission bits do not
apply) ``chattr +i`` on the file, and a read-only bind mount of the folder.

What every store fault test measures, and how: :mod:`tests.faults.store_faults`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatledger.cli import cli
from chatledger.errors import StoreUnavailableError
from chatledger.events import SQLiteStore
from tests.faults.store_faults import (
    Tally,
    count_lost,
    log_of,
    make_client,
    mentions_path,
    one_line_error,
    send_streamed,
    user_texts,
)
from tests.support.gemini_server import GeminiServer


def _chat_file(server: GeminiServer, path: Path, turns: int = 2) -> str:
    with make_client(server, str(path)) as client:
        chat = client.chats.create(model="gemini-test")
        for turn in range(turns):
            server.reply_echo()
            chat.send_message(f"turn {turn}")
        return chat.id


def _refuses_writes(path: Path) -> bool:
    try:
        with open(path, "r+b"):
            return False
    except PermissionError:
        return True


@contextlib.contextmanager
def read_only_file(path: Path) -> Iterator[str]:
    """Make the file itself read-only; yield the technique used."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield "chmod 0444"
        finally:
            path.chmod(0o644)
        return
    # Root ignores permission bits; the immutable attribute binds root too.
    if shutil.which("chattr") is None:
        pytest.skip("no chattr to make a file read-only for root")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0 or not _refuses_writes(path):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        pytest.skip(f"this filesystem has no immutable attribute: {done.stderr.strip()}")
    try:
        yield "chattr +i"
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[str]:
    """Make the folder (and so the file in it) read-only; yield the technique used."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield "chmod 0555"
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) for a read-only bind mount")
    bind = subprocess.run(
        ["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True
    )
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.strip()}")
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True
        )
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        yield "read-only bind mount"
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_file_can_be_read_and_refuses_writes_clearly(tmp_path: Path) -> None:
    path = tmp_path / "chatledger.db"
    tally = Tally()
    with GeminiServer() as server:
        cid = _chat_file(server, path)
        with SQLiteStore(path) as store:
            before = log_of(store)
        with read_only_file(path) as technique, make_client(server, str(path)) as client:
            assert isinstance(client.store, SQLiteStore)
            store = client.store
            chat = client.chats.get(cid)
            history = chat.get_history()
            tally.check(user_texts(chat) == ["turn 0", "turn 1"], f"{technique}: cannot read")
            tally.check(store.verify().ok, f"{technique}: verify failed")
            tally.check([s.conversation_id for s in client.chats.list()] == [cid], "list")
            writes: list[Callable[[], object]] = [
                lambda: chat.send_message("refused"),
                lambda: send_streamed(chat, "refused"),
                lambda: chat.rewind(),
                lambda: chat.fork(),
                lambda: client.chats.create(model="gemini-test"),
            ]
            for write in writes:
                server.reply_echo()
                tally.faults += 1
                try:
                    write()
                    tally.check(False, f"{technique}: a write went through")
                except StoreUnavailableError as exc:
                    text = str(exc)
                    tally.check(
                        mentions_path(text, path) and "read-only" in text and "writable" in text,
                        f"{technique}: unclear message {text!r}",
                    )
            tally.events_lost += count_lost(before, set(), log_of(store))
            tally.check(chat.get_history() == history, f"{technique}: the history changed")
            log = CliRunner().invoke(cli, ["--db", str(path), "log", cid])
            tally.check(log.exit_code == 0 and "user_message_added" in log.output, log.output)
            check = CliRunner().invoke(cli, ["--db", str(path), "verify"])
            tally.check(check.exit_code == 0, check.output)
        # Writable again: the chat goes on from where it was.
        with make_client(server, str(path)) as client:
            assert isinstance(client.store, SQLiteStore)
            store = client.store
            tally.events_lost += count_lost(before, set(), log_of(store))
            chat = client.chats.get(cid)
            server.reply_echo()
            tally.check(chat.send_message("writable").text == "echo: writable", "no go")
            tally.check(user_texts(chat) == ["turn 0", "turn 1", "writable"], f"{user_texts(chat)}")
            tally.check(store.verify().ok, "verify failed at the end")
    tally.record("read-only")
    tally.assert_clean()


def test_a_read_only_folder_gives_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    """SQLite needs to create ``-wal`` and ``-shm`` files beside a WAL database even to
    read it, so a closed log in a read-only folder (or filesystem) cannot be opened: the
    error says so and what to do, and the file is untouched."""
    folder = tmp_path / "logs"
    folder.mkdir()
    path = folder / "chatledger.db"
    tally = Tally()
    with GeminiServer() as server:
        cid = _chat_file(server, path)
        with SQLiteStore(path) as store:
            before = log_of(store)
        content = path.read_bytes()
        with read_only_folder(folder) as technique:
            tally.faults += 1
            try:
                make_client(server, str(path)).close()
                tally.check(False, f"{technique}: opened")
            except StoreUnavailableError as exc:
                text = str(exc)
                tally.check(
                    mentions_path(text, path) and "writable" in text and "-wal" in text,
                    f"{technique}: unclear message {text!r}",
                )
            tally.faults += 1
            result = CliRunner().invoke(cli, ["--db", str(path), "log", cid])
            tally.check(result.exit_code == 1 and one_line_error(result.output), result.output)
            tally.check(path.read_bytes() == content, f"{technique}: the file changed")
        with SQLiteStore(path) as store:
            tally.events_lost += count_lost(before, set(), log_of(store))
            tally.check(store.verify().ok, "verify failed")
    tally.record("read-only")
    tally.assert_clean()
