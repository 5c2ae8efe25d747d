"""Store faults, **locked**: another *process* holds ``BEGIN IMMEDIATE`` / ``BEGIN
EXCLUSIVE`` (or the exclusive locking mode, which shuts out readers too) for longer than
the busy timeout, taken just before each append a send, stream, function-calling turn,
retry, failure, rewind, create and fork makes, so every point of a turn is hit.

What every store fault test measures, and how: :mod:`tests.faults.store_faults`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.errors import ChatledgerError, ClientError, StoreUnavailableError
from chatledger.events import SQLiteStore
from tests.faults import ledger
from tests.faults.store_faults import (
    BUSY_TIMEOUT,
    ObservedStore,
    Tally,
    count_lost,
    function_call,
    log_of,
    lookup,
    make_client,
    mentions_path,
    send_streamed,
    user_texts,
)
from tests.support.gemini_server import GeminiServer, text_response

LOCKER = r"""
import sqlite3, sys
conn = None
for line in sys.stdin:
    command = line.split(maxsplit=2)
    if command[0] == "lock":
        conn = sqlite3.connect(command[2].strip(), isolation_level=None, timeout=30)
        if command[1] == "READERS":
            # Exclusive locking mode: once taken, not even readers get in.
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        else:
            conn.execute("BEGIN " + command[1])
    elif command[0] == "release":
        conn.execute("ROLLBACK")
        conn.close()
        conn = None
    print("ok", flush=True)
"""


class Locker:
    """Another process that takes and releases a file's lock on request."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOCKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.held = False

    def _say(self, command: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer == "ok", f"the locking process did not {command} (exit {self.process.poll()})"

    def lock(self, path: Path, mode: str = "IMMEDIATE") -> None:
        self._say(f"lock {mode} {path}")
        self.held = True

    def release(self) -> None:
        if self.held:
            self._say("release")
            self.held = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.release()
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def locker() -> Iterator[Locker]:
    holder = Locker()
    try:
        yield holder
    finally:
        holder.close()


@dataclass(frozen=True)
class Action:
    """Something a chat does that appends: the replies it needs, and the act itself."""

    name: str
    script: Callable[[GeminiServer], object]
    act: Callable[[chatledger.Client, chatledger.Chat], object]
    #: The error the act raises without any fault (a model error), if any.
    own_error: type[Exception] | None = None
    #: Appends whose failure is logged rather than raised (recording a model failure):
    #: with them the caller sees ``own_error``.
    swallowed: frozenset[int] = frozenset()
    retries: bool = False


ACTIONS = [
    Action("send", lambda s: s.reply_echo(), lambda c, chat: chat.send_message("locked")),
    Action(
        "stream",
        lambda s: s.reply_sse([text_response("par", finish_reason=None), text_response("tial")]),
        lambda c, chat: send_streamed(chat, "locked"),
    ),
    Action(
        "function_calling",
        lambda s: (s.reply_json(function_call("lookup", city="Oslo")), s.reply_text("clear")),
        lambda c, chat: chat.send_message("locked"),
    ),
    Action(
        "retry",
        lambda s: (s.reply_error(503, "UNAVAILABLE", "try again"), s.reply_echo()),
        lambda c, chat: chat.send_message("locked"),
        retries=True,
    ),
    Action(
        "model_failure",
        lambda s: s.reply_error(400, "INVALID_ARGUMENT", "no"),
        lambda c, chat: chat.send_message("locked"),
        own_error=ClientError,
        swallowed=frozenset({2}),
    ),
    Action("rewind", lambda s: None, lambda c, chat: chat.rewind()),
    Action("create", lambda s: None, lambda c, chat: c.chats.create(model="gemini-test")),
    Action("fork", lambda s: None, lambda c, chat: chat.fork()),
]


#: The first event of an append that opens something (nothing is left open if it fails).
OPENING_KINDS = {"user_message_added", "conversation_started", "turn_rewound"}


def _retry_options(action: Action) -> dict[str, Any]:
    if not action.retries:
        return {}
    return {"retry_options": {"attempts": 2, "initial_delay": 0, "jitter": 0}}


def _start(
    server: GeminiServer, path: Path, action: Action
) -> tuple[ObservedStore, chatledger.Client, chatledger.Chat]:
    store = ObservedStore(path, busy_timeout=BUSY_TIMEOUT)
    client = make_client(server, store, **_retry_options(action))
    chat = client.chats.create(model="gemini-test", config={"tools": [lookup]})
    server.reply_echo()
    chat.send_message("first")
    return store, client, chat


def _count_appends(action: Action, path: Path, server: GeminiServer) -> int:
    """How many appends ``action`` makes when nothing goes wrong."""
    store, client, chat = _start(server, path, action)
    try:
        action.script(server)
        start = store.appends
        with contextlib.suppress(*(action.own_error,) if action.own_error else ()):
            action.act(client, chat)
        return store.appends - start
    finally:
        client.close()
        store.close()


def _locked_case(
    action: Action,
    at: int,
    mode: str,
    path: Path,
    *,
    twice: bool,
    server: GeminiServer,
    holder: Locker,
) -> Tally:
    """Lock the file from another process just before append ``at`` of ``action`` and
    hold it until the action gives up; then measure, release, and go on chatting."""
    tally = Tally()
    server.clear()
    store, client, chat = _start(server, path, action)
    try:
        before = log_of(store)
        committed_before = set(store.committed)
        store.before_append[store.appends + at] = lambda: holder.lock(path, mode)
        action.script(server)
        tally.faults += 1
        expected: type[Exception] = (
            action.own_error
            if at in action.swallowed and action.own_error
            else StoreUnavailableError
        )
        raised: Exception | None = None
        try:
            action.act(client, chat)
        except ChatledgerError as exc:
            raised = exc
        where = f"{action.name} locked ({mode}) at append {at}"
        tally.check(
            isinstance(raised, expected), f"{where}: raised {raised!r}, not {expected.__name__}"
        )
        if isinstance(raised, StoreUnavailableError):
            text = str(raised)
            tally.check(
                mentions_path(text, path) and "locked" in text and "busy_timeout" in text,
                f"{where}: unclear message {text!r}",
            )
            # Past the turn's first append, the message also says the turn stays open.
            in_turn = store.failed[0][1] not in OPENING_KINDS
            tally.check(
                not in_turn or ("stays open" in text and "send the message again" in text),
                f"{where}: does not say what became of the turn: {text!r}",
            )
        # Readers are not blocked by a writer's lock (WAL): measure while it is held.
        during = log_of(store)
        holder.release()
        server.clear()  # replies the action did not get to use
        after = log_of(store)
        lost = count_lost(before, store.committed - committed_before, after)
        tally.events_lost += lost + count_lost(before, set(), during)
        tally.check(store.verify().ok, f"{where}: the log does not verify")

        if twice:
            # The next write is hit too (closing the turn left open, or the next turn).
            store.before_append[store.appends + 1] = lambda: holder.lock(path, mode)
            tally.faults += 1
            server.reply_echo()
            try:
                chat.send_message("locked again")
                tally.check(False, f"{where}: a send under a second lock went through")
            except StoreUnavailableError:
                pass
            holder.release()
            server.clear()

        server.reply_echo()
        try:
            reply = chat.send_message("after the lock").text
        except ChatledgerError as exc:
            reply = f"failed: {exc!r}"
        tally.check(reply == "echo: after the lock", f"{where}: the chat did not go on ({reply})")
        tally.check(
            user_texts(chat) == ["first", "after the lock"],
            f"{where}: history {user_texts(chat)}",
        )
        with make_client(server, str(path)) as fresh:
            rebuilt = fresh.chats.get(chat.id)
            tally.check(
                rebuilt.get_history() == chat.get_history(),
                f"{where}: the history rebuilt from the log differs",
            )
        final = log_of(store)
        tally.events_lost += count_lost(after, set(), final)
        tally.check(store.verify().ok, f"{where}: the log does not verify at the end")
    finally:
        client.close()
        store.close()
    return tally


def test_a_lock_held_by_another_process_at_every_append_of_a_turn(tmp_path: Path) -> None:
    """A send records the user message, calls the model, records the reply (and, with
    functions or retries, more in between). Whichever append meets the lock: the caller
    gets StoreUnavailableError saying the file is locked and what to do; nothing
    committed is lost; a turn left open is closed by the next send, which goes on."""
    tally = Tally()
    modes = ["IMMEDIATE", "EXCLUSIVE"]
    with GeminiServer() as server, locker() as holder:
        for action in ACTIONS:
            appends = _count_appends(action, tmp_path / f"{action.name}.db", server)
            assert appends >= 1, action.name
            for at in range(1, appends + 1):
                for mode in modes if ledger.full_scale() else [modes[at % 2]]:
                    tally.add(
                        _locked_case(
                            action,
                            at,
                            mode,
                            tmp_path / f"{action.name}-{at}-{mode}.db",
                            twice=ledger.full_scale() or at == 1,
                            server=server,
                            holder=holder,
                        )
                    )
    tally.record("locked")
    tally.assert_clean()


def test_a_lock_released_within_the_busy_timeout_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "chatledger.db"
    tally = Tally()
    with GeminiServer() as server, locker() as holder:
        store = ObservedStore(path, busy_timeout=10)
        try:
            with make_client(server, store) as client:
                chat = client.chats.create(model="gemini-test")
                before = log_of(store)
                for index, at in enumerate((1, 2)):  # the user message, then the reply
                    store.before_append[store.appends + at] = lambda: holder.lock(path, "EXCLUSIVE")
                    server.reply_echo(delay=0.0)
                    tally.faults += 1
                    # The lock goes away while the append waits for it.
                    releaser = _release_later(holder, 0.3)
                    try:
                        tally.check(
                            chat.send_message(f"waited {index}").text == f"echo: waited {index}",
                            "the send did not wait for the lock",
                        )
                    finally:
                        releaser.join()
                tally.events_lost += count_lost(before, store.committed, log_of(store))
                tally.check(store.verify().ok, "the log does not verify")
                tally.check(
                    user_texts(chat) == ["waited 0", "waited 1"], f"history {user_texts(chat)}"
                )
        finally:
            store.close()
    tally.record("locked")
    tally.assert_clean()


def _release_later(holder: Locker, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, holder.release)
    timer.start()
    return timer


def test_a_process_holding_the_file_in_exclusive_locking_mode_shuts_out_readers(
    tmp_path: Path,
) -> None:
    """``PRAGMA locking_mode = EXCLUSIVE`` in another process blocks even reads: opening
    and reading give StoreUnavailableError (not a raw sqlite3 error), and all is there
    once it lets go."""
    path = tmp_path / "chatledger.db"
    tally = Tally()
    with GeminiServer() as server:
        with make_client(server, str(path)) as client:
            chat = client.chats.create(model="gemini-test")
            server.reply_echo()
            chat.send_message("first")
        with SQLiteStore(path) as store:
            before = log_of(store)
        with locker() as holder:
            holder.lock(path, "READERS")
            tally.faults += 1
            with pytest.raises(StoreUnavailableError) as caught:
                SQLiteStore(path, busy_timeout=BUSY_TIMEOUT)
            text = str(caught.value)
            tally.check(mentions_path(text, path) and "locked" in text, f"unclear: {text}")
            holder.release()
        with make_client(server, str(path)) as client:
            assert isinstance(client.store, SQLiteStore)
            store = client.store
            tally.events_lost += count_lost(before, set(), log_of(store))
            tally.check(store.verify().ok, "the log does not verify")
            server.reply_echo()
            tally.check(
                client.chats.get(chat.id).send_message("after").text == "echo: after", "no go"
            )
    tally.record("locked")
    tally.assert_clean()
