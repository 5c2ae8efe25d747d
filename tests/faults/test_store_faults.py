"""Store faults on a SQLite file: what another process, a full disk, permissions and
damage to the file do to real chats.

Every test works on a real file with real chats sent through the loopback Gemini server,
injects a fault, and then measures against what had been committed before it:

- the error is a :class:`~chatledger.errors.StoreError` (never a raw ``sqlite3`` error,
  never a crash), and its message names the file and says what to do;
- no committed event is lost (``events_lost``, measured, then asserted to be 0);
- the log verifies, or ``verify`` names the damage (the very event, when it is inside
  one); whatever ``verify`` passes reads exactly as committed: nothing silently wrong;
- once the fault is gone (lock released, space freed, permissions back) the chat goes on.

Faults, and how each is made honestly:

- **locked**: another *process* holds ``BEGIN IMMEDIATE`` / ``BEGIN EXCLUSIVE`` (or the
  exclusive locking mode, which shuts out readers too) for longer than the busy timeout,
  taken just before each append a send, stream, function-calling turn, retry, failure,
  rewind, create and fork makes, so every point of a turn is hit.
- **disk full**, at many fill levels, three ways: a small ``tmpfs`` really filled up
  (ENOSPC; needs root and ``mount``, else skipped), SQLite's ``max_page_count`` (its own
  SQLITE_FULL, portable), and ``RLIMIT_FSIZE`` in a child process with ``SIGXFSZ``
  ignored (writes fail with EFBIG: SQLite's I/O error path).
- **read-only**: ``chmod`` when not root; as root (permission bits do not apply)
  ``chattr +i`` on the file, and a read-only bind mount of the folder.
- **truncated** at many offsets and **corrupted** by flipping bits at many offsets (the
  header, the schema, b-tree pages, overflow pages, indexes, and inside event rows); a
  flipped byte in an event's JSON must be named by ``verify``. The ``-wal`` a crash
  leaves behind, cut short or flipped: every commit before the damage survives.
- **not a database**: text, binary, a chatledger export, another program's database, a
  folder; an empty file is a new, empty log (SQLite's rule; see the test).

``ledger.scale(fast, full)`` sizes the loops: the normal suite runs a sample, ``make
faults`` many more.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import chatledger
from chatledger.cli import cli
from chatledger.errors import (
    ChatledgerError,
    ClientError,
    IntegrityError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)
from chatledger.events import NewEvent, RecordedEvent, SQLiteStore
from tests.conftest import API_KEY
from tests.faults import ledger
from tests.support.gemini_server import GeminiServer, text_response

AREA = "store"
ROOT = Path(__file__).resolve().parents[2]
#: Short, so that a lock held past it fails fast; long enough for an unlocked write.
BUSY_TIMEOUT = 0.1
#: SQLite's default page count limit: "no limit" for max_page_count.
NO_PAGE_LIMIT = 1073741823


# --------------------------------------------------------------------------- helpers


class ObservedStore(SQLiteStore):
    """A real SQLite store that numbers its appends, remembers every event they committed,
    and can run a fault just before append number N (``before_append[N]``)."""

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        super().__init__(path, **options)
        self.appends = 0
        self.committed: set[str] = set()
        self.before_append: dict[int, Callable[[], None]] = {}
        #: (append number, first event type, error) of every append that failed.
        self.failed: list[tuple[int, str, StoreError]] = []

    def append(
        self, conversation_id: str, events: Sequence[NewEvent], *, expected_version: int
    ) -> list[int]:
        self.appends += 1
        number = self.appends
        fault = self.before_append.pop(number, None)
        if fault is not None:
            fault()
        try:
            positions = super().append(conversation_id, events, expected_version=expected_version)
        except StoreError as exc:
            self.failed.append((number, events[0].type, exc))
            raise
        self.committed.update(event.event_id for event in events)
        return positions


def make_client(server: GeminiServer, store: Any, **options: Any) -> chatledger.Client:
    return chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": server.base_url, "api_version": "v1beta", **options},
        store=store,
        actor="faults",
    )


Entry = tuple[str, int, str]  # conversation id, version, hash


def log_of(store: SQLiteStore) -> dict[str, Entry]:
    """Every event in the store by event id."""
    found: dict[str, Entry] = {}
    position = 0
    while True:
        events = store.read_all(after_position=position, limit=1000)
        if not events:
            return found
        for event in events:
            found[event.event_id] = (event.conversation_id, event.version, event.hash)
        position = events[-1].position


def count_lost(before: dict[str, Entry], committed: set[str], after: dict[str, Entry]) -> int:
    """Events committed before or during the fault that are missing or changed now."""
    lost = sum(1 for event_id, entry in before.items() if after.get(event_id) != entry)
    return lost + sum(1 for event_id in committed - before.keys() if event_id not in after)


def user_texts(chat: chatledger.Chat) -> list[str]:
    return [
        "".join(part.text or "" for part in content.parts or [])
        for content in chat.get_history(curated=True)
        if content.role == "user"
    ]


def lookup(city: str) -> dict[str, str]:
    """The weather in a city (a tool for the function-calling turn)."""
    return {"city": city, "sky": "clear"}


def function_call(name: str, **args: Any) -> dict[str, Any]:
    return text_response(parts=[{"functionCall": {"name": name, "args": args}}])


def mentions_path(message: str, path: Path) -> bool:
    return str(path) in message or path.name in message


def one_line_error(output: str) -> bool:
    lines = [line for line in output.splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in output


@dataclass
class Tally:
    """What one test injected and measured, for the ledger and its assertions."""

    faults: int = 0
    events_lost: int = 0
    invariants_broken: int = 0
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, note: str) -> bool:
        if not ok:
            self.invariants_broken += 1
            self.notes.append(note)
        return ok

    def add(self, other: Tally) -> None:
        self.faults += other.faults
        self.events_lost += other.events_lost
        self.invariants_broken += other.invariants_broken
        self.notes.extend(other.notes)

    def record(self, fault: str) -> None:
        ledger.record(
            AREA,
            f"{fault}/sqlite",
            faults=self.faults,
            events_lost=self.events_lost,
            invariants_broken=self.invariants_broken,
        )

    def assert_clean(self) -> None:
        assert self.faults > 0
        assert self.events_lost == 0, self.notes
        assert self.invariants_broken == 0, "\n".join(self.notes[:20])


# --------------------------------------------------------------------------- locked


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


def _stream(chat: chatledger.Chat, text: str) -> object:
    return list(chat.send_message_stream(text))


ACTIONS = [
    Action("send", lambda s: s.reply_echo(), lambda c, chat: chat.send_message("locked")),
    Action(
        "stream",
        lambda s: s.reply_sse([text_response("par", finish_reason=None), text_response("tial")]),
        lambda c, chat: _stream(chat, "locked"),
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
            store = client.store
            assert isinstance(store, SQLiteStore)
            tally.events_lost += count_lost(before, set(), log_of(store))
            tally.check(store.verify().ok, "the log does not verify")
            server.reply_echo()
            tally.check(
                client.chats.get(chat.id).send_message("after").text == "echo: after", "no go"
            )
    tally.record("locked")
    tally.assert_clean()


# --------------------------------------------------------------------------- disk full


@dataclass
class FillResult:
    """One fill level: what was committed, what failed, and what was measured."""

    level: int
    sends_before_full: int = 0
    failed_append: str = ""
    error: str = ""
    tally: Tally = field(default_factory=Tally)


def fill_until_full(
    path: Path,
    server: GeminiServer,
    level: int,
    make_full: Callable[[ObservedStore, int], None],
    free: Callable[[ObservedStore], None],
    *,
    expect: Sequence[str] = ("full",),
) -> FillResult:
    """Chat on ``path`` with the disk made nearly full (``level`` bytes or pages left) until
    an append fails; measure; free the space; and chat on."""
    result = FillResult(level)
    tally = result.tally
    store = ObservedStore(path, busy_timeout=BUSY_TIMEOUT)
    client = make_client(server, store)
    try:
        chat = client.chats.create(model="gemini-test")
        server.reply_echo()
        chat.send_message("first")
        sent = ["first"]
        before = log_of(store)
        committed_before = set(store.committed)
        make_full(store, level)
        raised: ChatledgerError | None = None
        for number in range(200):
            text = f"message {number} " + "x" * (300 + 97 * (number % 13))
            try:
                if number % 3 == 2:
                    server.reply_sse(
                        [text_response(f"echo: {text[:40]}", finish_reason=None), text_response("")]
                    )
                    _stream(chat, text)
                else:
                    server.reply_echo()
                    chat.send_message(text)
                sent.append(text)
            except ChatledgerError as exc:
                raised = exc
                break
        result.sends_before_full = len(sent) - 1
        tally.faults += 1
        where = f"fill level {level}"
        if not tally.check(raised is not None, f"{where}: the disk never filled up"):
            return result
        assert raised is not None
        result.error = str(raised)
        result.failed_append = store.failed[0][1] if store.failed else "?"
        tally.check(
            isinstance(raised, StoreUnavailableError)
            and mentions_path(result.error, path)
            and any(word in result.error for word in expect),
            f"{where}: {raised!r}",
        )
        # Measured while the disk is still full: every committed event is readable.
        tally.events_lost += count_lost(before, store.committed - committed_before, log_of(store))
        tally.check(store.verify().ok, f"{where}: the log does not verify while full")
        free(store)
        after = log_of(store)
        tally.events_lost += count_lost(before, store.committed - committed_before, after)
        tally.check(store.verify().ok, f"{where}: the log does not verify after freeing space")
        server.clear()  # the reply of a send that failed before calling the model
        server.reply_echo()
        try:
            reply = chat.send_message("after freeing space").text
        except ChatledgerError as exc:
            reply = f"failed: {exc!r}"
        tally.check(
            reply == "echo: after freeing space", f"{where}: the chat did not go on ({reply})"
        )
        tally.check(
            user_texts(chat) == [*sent, "after freeing space"],
            f"{where}: history {[t[:12] for t in user_texts(chat)]} vs {[t[:12] for t in sent]}",
        )
        with make_client(server, str(path)) as fresh:
            tally.check(
                fresh.chats.get(chat.id).get_history() == chat.get_history(),
                f"{where}: the history rebuilt from the log differs",
            )
        tally.events_lost += count_lost(after, set(), log_of(store))
        tally.check(store.verify().ok, f"{where}: the log does not verify at the end")
    finally:
        client.close()
        store.close()
    return result


def _check_fill_results(results: list[FillResult], fault: str) -> None:
    tally = Tally()
    for result in results:
        tally.add(result.tally)
    tally.record(fault)
    tally.assert_clean()
    # The levels reach the fault at different points of a turn, not just one.
    failed_at = {result.failed_append for result in results}
    assert failed_at, results
    if ledger.full_scale():
        assert {"user_message_added", "model_responded"} <= failed_at, failed_at


def _levels(fast: list[int], full_count: int, top: int, seed: int) -> list[int]:
    """The fill levels to try: ``fast`` (chosen to fail at the user message, at the reply,
    then at the user message again) in the normal suite; under ``make faults`` also
    ``full_count`` random ones below ``top``."""
    if not ledger.full_scale():
        return fast
    rng = random.Random(seed)
    return sorted({*fast, *(rng.randrange(top) for _ in range(full_count))})


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at ``mountpoint``, or skip where mounting is not allowed."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def _fill(filler: Path, leave: int) -> None:
    """Write ``filler`` until only ``leave`` bytes are free on its disk."""
    chunk = b"\0" * 65536
    with open(filler, "wb") as handle:
        while True:
            room = _free_bytes(filler.parent) - leave
            if room <= 0:
                return
            try:
                handle.write(chunk[: min(len(chunk), room)])
                handle.flush()
            except OSError:
                return


def test_disk_full_on_a_real_filesystem_at_many_fill_levels(tmp_path: Path) -> None:
    """A tmpfs filled to ``level`` free bytes (real ENOSPC), a fresh conversation per level."""
    levels = _levels([0, 40_000, 200_000], 40, 400_000, seed=8)
    results = []
    with tmpfs(tmp_path / "disk", "8m") as disk, GeminiServer() as server:
        filler = disk / "filler"
        for level in levels:
            folder = disk / f"level-{level}"
            folder.mkdir()
            results.append(
                fill_until_full(
                    folder / "chatledger.db",
                    server,
                    level,
                    lambda store, leave: _fill(filler, leave),
                    lambda store: filler.unlink(),
                )
            )
            shutil.rmtree(folder)
        # A new log on a full disk: its schema cannot be written; once there is room it can.
        _fill(filler, 0)
        fresh = Tally(faults=1)
        new = disk / "new.db"
        try:
            make_client(server, str(new)).close()
            fresh.check(False, "a new log was created on a full disk")
        except StoreUnavailableError as exc:
            fresh.check(mentions_path(str(exc), new) and "full" in str(exc), f"unclear: {exc}")
        filler.unlink()
        with make_client(server, str(new)) as client:
            chat = client.chats.create(model="gemini-test")
            server.reply_echo()
            fresh.check(chat.send_message("room again").text == "echo: room again", "no go")
            fresh.check(client.store.verify().ok, "the new log does not verify")
        results.append(FillResult(level=0, failed_append="conversation_started", tally=fresh))
    _check_fill_results(results, "disk-full")


def _page_limit(store: ObservedStore, extra_pages: int) -> None:
    def limit(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + extra_pages}")

    store.run_in_transaction(limit)


def test_database_full_by_max_page_count_at_many_fill_levels(tmp_path: Path) -> None:
    """SQLite's own SQLITE_FULL ("database or disk is full"), portable to any machine."""
    levels = _levels([0, 2, 8], 40, 24, seed=9)
    results = []
    with GeminiServer() as server:
        for level in levels:
            results.append(
                fill_until_full(
                    tmp_path / f"pages-{level}.db",
                    server,
                    level,
                    _page_limit,
                    lambda store: store.run_in_transaction(
                        lambda conn: conn.execute(f"PRAGMA max_page_count = {NO_PAGE_LIMIT}")
                    ),
                )
            )
    _check_fill_results(results, "disk-full")


def file_size_limit_child() -> None:
    """Run in a child process: chat with ``RLIMIT_FSIZE`` just above the files' sizes at
    each level (argv: workdir, levels as JSON); print one JSON result per level."""
    import resource

    workdir = Path(sys.argv[1])
    levels = json.loads(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit(store: ObservedStore, extra: int) -> None:
        biggest = max(
            Path(f"{store.path}{suffix}").stat().st_size
            for suffix in ("", "-wal", "-shm")
            if Path(f"{store.path}{suffix}").exists()
        )
        resource.setrlimit(resource.RLIMIT_FSIZE, (biggest + extra, hard))

    def unlimit(store: ObservedStore) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    with GeminiServer() as server:
        for level in levels:
            result = fill_until_full(
                workdir / f"fsize-{level}.db",
                server,
                level,
                limit,
                unlimit,
                expect=("disk", "full", "write"),
            )
            print(json.dumps(asdict(result)), flush=True)


def test_file_size_limit_makes_writes_fail_at_many_fill_levels(tmp_path: Path) -> None:
    """``ulimit -f`` in a child process: SQLite sees EFBIG (its I/O error path, or a short
    write it reports as full)."""
    levels = _levels([0, 30_000, 100_000], 30, 200_000, seed=10)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tests.faults.test_store_faults import file_size_limit_child as c; c()",
            str(tmp_path),
            json.dumps(levels),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = []
    for line in done.stdout.splitlines():
        raw = json.loads(line)
        raw["tally"] = Tally(**raw["tally"])
        results.append(FillResult(**raw))
    assert [result.level for result in results] == levels
    _check_fill_results(results, "disk-full")


# --------------------------------------------------------------------------- read-only


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
            store = client.store
            assert isinstance(store, SQLiteStore)
            chat = client.chats.get(cid)
            history = chat.get_history()
            tally.check(user_texts(chat) == ["turn 0", "turn 1"], f"{technique}: cannot read")
            tally.check(store.verify().ok, f"{technique}: verify failed")
            tally.check([s.conversation_id for s in client.chats.list()] == [cid], "list")
            writes: list[Callable[[], object]] = [
                lambda: chat.send_message("refused"),
                lambda: _stream(chat, "refused"),
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
            store = client.store
            assert isinstance(store, SQLiteStore)
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


# --------------------------------------------------------------------------- damaged files


@dataclass(frozen=True)
class Template:
    """A closed log file with several conversations (one forked, one with function calls,
    one with a message spilling over several pages), and every event it holds."""

    path: Path
    content: bytes
    events: dict[str, list[RecordedEvent]]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    path = tmp_path_factory.mktemp("template") / "chatledger.db"
    with GeminiServer() as server, make_client(server, str(path)) as client:
        chats = []
        for number in range(3):
            chat = client.chats.create(
                model="gemini-test",
                config={"system_instruction": f"conversation {number}", "tools": [lookup]},
            )
            for turn in range(3):
                server.reply_echo()
                chat.send_message(
                    f"conversation {number} turn {turn}: " + "words " * (5 + 20 * turn)
                )
            chats.append(chat)
        server.reply_json(function_call("lookup", city="Oslo"))
        server.reply_text("It is clear in Oslo.")
        chats[0].send_message("Weather in Oslo?")
        server.reply_echo()  # a message longer than a page: its rows spill to overflow pages
        chats[2].send_message("long " * 3000)
        fork = chats[1].fork(turn=2)
        server.reply_echo()
        fork.send_message("a different third turn")
        store = client.store
        events = {
            info.conversation_id: store.read(info.conversation_id) for info in store.conversations()
        }
        assert store.verify().ok
    for suffix in ("-wal", "-shm"):  # closed cleanly: everything is in the file itself
        assert not Path(f"{path}{suffix}").exists()
    return Template(path, path.read_bytes(), events)


def _write(path: Path, content: bytes) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(content)
    return path


CORRUPT_WORDS = ("corrupt", "damaged", "restore", "verify", "truncated", "not a chatledger")


def inspect_damaged(
    path: Path, template: Template, tally: Tally, where: str, *, empty_ok: bool = False
) -> str:
    """Open, read, verify and append to a damaged file. Returns how the damage showed:
    "refused" (a clear StoreError), "named" (verify named a problem), "intact" (verify
    passes and every event reads as committed: the damage hit no event). Anything else
    (a raw exception, or a clean verify over events that differ) is an invariant broken."""
    stage = "open"
    try:
        with SQLiteStore(path, busy_timeout=BUSY_TIMEOUT) as store:
            stage = "read"
            reads: dict[str, list[RecordedEvent] | StoreError] = {}
            for cid in template.events:
                try:
                    reads[cid] = store.read(cid)
                except StoreError as exc:
                    reads[cid] = exc
            stage = "verify"
            report = store.verify()
            if empty_ok and report.ok and report.streams_checked == 0:
                return "empty"
            # A conversation verify finds nothing wrong with must read exactly as committed.
            named = {problem.conversation_id for problem in report.problems}
            differing = [
                cid
                for cid, events in template.events.items()
                if cid not in named and reads.get(cid) != events
            ]
            if differing:
                tally.events_lost += sum(
                    len(template.events[cid])
                    for cid in differing
                    if not isinstance(reads[cid], list)
                    or len(reads[cid]) < len(template.events[cid])
                )
                tally.check(False, f"{where}: verify passed {differing}, which read differently")
                return "silent"
            if not report.ok:
                tally.check(
                    all(problem.reason for problem in report.problems),
                    f"{where}: a problem without a reason",
                )
                return "named"
            stage = "append"
            for cid in template.events:
                info = store.stream_info(cid)
                assert info is not None
                store.append(cid, [_note()], expected_version=info.version)
            stage = "verify after append"
            tally.check(store.verify().ok, f"{where}: an append after a clean verify broke the log")
            return "intact"
    except StoreError as exc:
        text = str(exc)
        tally.check(
            any(word in text for word in CORRUPT_WORDS)
            and (mentions_path(text, path) or " v" in text),
            f"{where}: unclear {stage} error {text!r}",
        )
        return "refused"
    except Exception as exc:  # the point of the test: nothing else may escape
        tally.check(False, f"{where}: {stage} raised {exc!r}")
        return "raw"


def _note() -> NewEvent:
    from chatledger.events import TurnRewound

    return NewEvent(data=TurnRewound(turn=1))


def test_truncated_files_are_refused_or_named_never_silently_wrong(
    tmp_path: Path, template: Template
) -> None:
    size = len(template.content)
    page = 4096
    rng = random.Random(81)
    offsets = {
        0,
        1,
        15,
        16,
        50,
        99,
        100,
        page - 1,
        page,
        page + 1,
        size // 2,
        size - page,
        size - 1,
    }
    if ledger.full_scale():
        offsets |= set(range(0, size, page)) | {rng.randrange(size) for _ in range(200)}
    else:
        offsets |= {rng.randrange(size) for _ in range(4)}
    tally = Tally()
    outcomes: dict[str, int] = {}
    for offset in sorted(offsets):
        path = _write(tmp_path / f"truncated-{offset}.db", template.content[:offset])
        tally.faults += 1
        where = f"truncated at {offset} of {size}"
        outcome = inspect_damaged(path, template, tally, where, empty_ok=offset < 100)
        tally.check(outcome != "intact", f"{where}: a truncated file verified as intact")
        if outcome == "empty":
            # Cut inside SQLite's magic string: SQLite opens that as a new, empty database,
            # as it does an empty file. Nothing is silently read from it: every
            # conversation is reported missing, by name and file.
            with make_client_without_server(path) as client:
                for cid in template.events:
                    try:
                        client.chats.get(cid)
                        tally.check(False, f"{where}: {cid} found in an empty file")
                    except NotFoundError as exc:
                        tally.check(cid in str(exc) and mentions_path(str(exc), path), str(exc))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        path.unlink()
    tally.record("truncated")
    tally.assert_clean()
    assert set(outcomes) <= {"refused", "named", "empty"}, outcomes


@contextlib.contextmanager
def make_client_without_server(path: Path) -> Iterator[chatledger.Client]:
    with chatledger.Client(api_key=API_KEY, store=str(path), actor="faults") as client:
        yield client


def _flip(content: bytes, offset: int, rng: random.Random) -> bytes:
    return _flip_bit(content, offset, rng.randrange(8))


def _flip_bit(content: bytes, offset: int, bit: int) -> bytes:
    damaged = bytearray(content)
    damaged[offset] ^= 1 << bit
    return bytes(damaged)


def test_flipped_bits_anywhere_are_refused_or_named_never_silently_wrong(
    tmp_path: Path, template: Template
) -> None:
    """Random single-bit flips: in the 100-byte header, and anywhere in the file."""
    size = len(template.content)
    rng = random.Random(82)
    count = ledger.scale(40, 1500)
    offsets = [rng.randrange(100) for _ in range(count // 4)]
    offsets += [rng.randrange(size) for _ in range(count - len(offsets))]
    tally = Tally()
    outcomes: dict[str, int] = {}
    for number, offset in enumerate(offsets):
        path = _write(tmp_path / f"flipped-{number}.db", _flip(template.content, offset, rng))
        tally.faults += 1
        outcome = inspect_damaged(path, template, tally, f"bit flipped at {offset}")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    tally.record("corrupted")
    tally.assert_clean()
    assert set(outcomes) <= {"refused", "named", "intact"}, outcomes


def _stored_fields(template: Template) -> list[tuple[RecordedEvent, str, int, int]]:
    """(event, column, start, end) of each stored text of an event found exactly once in
    the file, so a byte flipped there damages that event and nothing else."""
    with sqlite3.connect(template.path) as conn:
        rows = conn.execute(
            "SELECT event_id, data, metadata, hash, recorded_at FROM events"
        ).fetchall()
    by_id = {event.event_id: event for events in template.events.values() for event in events}
    found = []
    for event_id, *values in rows:
        for column, value in zip(("data", "metadata", "hash", "recorded_at"), values, strict=True):
            raw = value.encode("utf-8")
            if len(raw) >= 8 and template.content.count(raw) == 1:
                start = template.content.index(raw)
                found.append((by_id[event_id], column, start, start + len(raw)))
    return found


def test_a_flipped_byte_inside_an_event_is_named_by_verify(
    tmp_path: Path, template: Template
) -> None:
    """The hash chain catches a change to an event's data, metadata, hash or time: verify
    names that very event, and every other event still reads exactly as committed."""
    rng = random.Random(83)
    fields = _stored_fields(template)
    # (Metadata repeats from event to event, so it is rarely found just once.)
    assert {"data", "hash", "recorded_at"} <= {column for _, column, _, _ in fields}
    chosen = [rng.choice(fields) for _ in range(ledger.scale(24, 400))]
    tally = Tally()
    for number, (event, column, start, end) in enumerate(chosen):
        offset = rng.randrange(start, end)
        path = _write(tmp_path / f"event-{number}.db", _flip(template.content, offset, rng))
        tally.faults += 1
        where = f"{column} of {event.conversation_id} v{event.version} flipped at {offset}"
        try:
            with SQLiteStore(path) as store:
                report = store.verify()
                named = [
                    (p.conversation_id, p.version, p.event_id)
                    for p in report.problems
                    if p.conversation_id == event.conversation_id
                ]
                tally.check(
                    named[:1] == [(event.conversation_id, event.version, event.event_id)],
                    f"{where}: verify named {report.problems}",
                )
                # Every other event is intact and readable around the damaged one.
                for cid, events in template.events.items():
                    if cid != event.conversation_id:
                        survived = store.read(cid)
                    else:
                        survived = store.read(cid, to_version=event.version - 1) + store.read(
                            cid, after_version=event.version
                        )
                        events = [e for e in events if e.version != event.version]
                    tally.events_lost += sum(1 for e in events if e not in survived)
                # The damaged event is refused or reads as changed; it never reads as it was.
                try:
                    damaged = store.read(
                        cid, after_version=event.version - 1, to_version=event.version
                    )
                    tally.check(damaged != [event], f"{where}: reads as if undamaged")
                except IntegrityError as exc:
                    tally.check(f"v{event.version}" in str(exc), f"{where}: {exc}")
        except StoreError as exc:
            tally.check(False, f"{where}: {exc!r}")
        if number < ledger.scale(2, 10):
            result = CliRunner().invoke(cli, ["--db", str(path), "verify"])
            tally.check(
                result.exit_code == 1
                and f"Problem: {event.conversation_id} v{event.version}" in result.output
                and "Traceback" not in result.output,
                f"{where}: chatledger verify said {result.output!r}",
            )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    tally.record("corrupted")
    tally.assert_clean()


def _positions_go_back(path: Path) -> bool:
    """Whether paging through the file's events by position (as ``read_all`` does) meets
    a position that is not above the one before (only a damaged b-tree gives that)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        try:
            positions = [
                row[0] for row in conn.execute("SELECT position FROM events ORDER BY position")
            ]
        except sqlite3.Error:
            return False
    return any(
        not isinstance(later, int) or later <= earlier
        for earlier, later in itertools.pairwise(positions)
    )


def test_a_damaged_table_whose_positions_go_back_is_reported_not_read_forever(
    tmp_path: Path, template: Template
) -> None:
    """A bit flipped in the cell count of a b-tree page makes SQLite return rows of
    position 0 after the real ones. Readers follow positions: ``verify`` looped over the
    log forever on such a file (found by the random flips above), and ``subscribe``
    would have. Both must stop and say the file is damaged."""
    last = max(log_of_intact(template), key=lambda event: event.position)
    with sqlite3.connect(template.path) as conn:
        (data,) = conn.execute(
            "SELECT data FROM events WHERE position = ?", (last.position,)
        ).fetchone()
    page = template.content.index(data.encode("utf-8")) // 4096 * 4096
    path = tmp_path / "backwards.db"
    # Bytes 3-4 of a b-tree page header count its cells; a larger count reads past them.
    for offset, bit in ((offset, bit) for offset in (page + 4, page + 3) for bit in range(8)):
        _write(path, _flip_bit(template.content, offset, bit))
        if not _positions_go_back(path):
            continue
        with contextlib.suppress(StoreError), SQLiteStore(path) as store:
            if any("go back" in problem.reason for problem in store.verify().problems):
                break
    else:
        pytest.fail("no flip of the page's cell count made positions go back (layout changed?)")
    tally = Tally(faults=1)
    with SQLiteStore(path) as store:
        try:
            log_of(store)
            tally.check(False, "read_all paged through positions that go back")
        except IntegrityError as exc:
            tally.check("damaged" in str(exc) and "verify" in str(exc), str(exc))
        stop = threading.Event()
        guard = threading.Timer(30, stop.set)  # fail, rather than hang, if it regresses
        guard.start()
        seen = 0
        try:
            for _ in store.subscribe(stop=stop, poll_interval=0.01):
                seen += 1
            tally.check(False, f"subscribe ended without an error after {seen} events")
        except IntegrityError:
            tally.check(seen <= len(log_of_intact(template)), f"subscribe read {seen} events")
        finally:
            guard.cancel()
        # Every conversation still reads as committed (through its index).
        for cid, events in template.events.items():
            tally.events_lost += sum(1 for event in events if event not in store.read(cid))
    tally.record("corrupted")
    tally.assert_clean()


def log_of_intact(template: Template) -> list[RecordedEvent]:
    return [event for events in template.events.values() for event in events]


class WalObservedStore(ObservedStore):
    """Also notes where in the ``-wal`` file each append's commit ends."""

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        super().__init__(path, **options)
        self.commit_ends: list[tuple[int, list[str]]] = []

    def append(
        self, conversation_id: str, events: Sequence[NewEvent], *, expected_version: int
    ) -> list[int]:
        positions = super().append(conversation_id, events, expected_version=expected_version)
        wal = Path(f"{self.path}-wal").stat().st_size
        self.commit_ends.append((wal, [event.event_id for event in events]))
        return positions


def test_a_damaged_wal_keeps_every_commit_before_the_damage(tmp_path: Path) -> None:
    """The state a crash leaves (the file and its ``-wal``, not yet checkpointed), with the
    ``-wal`` cut short or a bit flipped in it. SQLite replays the write-ahead log up to
    its first damaged frame: every commit that ended before the damage must survive, and
    what survives is whole commits, in order, that verify; the chat goes on.

    (Commits after the damage are dropped by SQLite's recovery, whose checksums chain
    from frame to frame, and nothing in the file can tell they existed: a known limit of
    any write-ahead log, counted here as damage, not as events lost.)"""
    live = tmp_path / "live.db"
    with GeminiServer() as server:
        store = WalObservedStore(live)
        try:
            with make_client(server, store) as client:
                chat = client.chats.create(model="gemini-test")
                for number in range(6):
                    server.reply_echo()
                    chat.send_message(f"message {number} " + "words " * (20 * number))
                # A copy taken while the store is open is what a crash leaves on disk.
                content, wal = live.read_bytes(), Path(f"{live}-wal").read_bytes()
                commits = list(store.commit_ends)
        finally:
            store.close()
        with SQLiteStore(_write(tmp_path / "clean.db", content)) as clean:
            before_wal = set(log_of(clean))  # already checkpointed into the file itself
        rng = random.Random(84)
        tally = Tally()
        dropped = 0
        for number in range(ledger.scale(12, 300)):
            offset = rng.randrange(len(wal))
            cut = number % 2 == 0
            damaged_wal = wal[:offset] if cut else _flip(wal, offset, rng)
            path = _write(tmp_path / f"crash-{number}.db", content)
            Path(f"{path}-wal").write_bytes(damaged_wal)
            tally.faults += 1
            where = f"wal {'cut' if cut else 'flipped'} at {offset} of {len(wal)}"
            # The WAL header (32 bytes) is checksummed too: damage there voids every frame.
            survive = set(before_wal)
            for end, event_ids in commits:
                if end <= offset and offset >= 32:
                    survive.update(event_ids)
            try:
                with SQLiteStore(path) as reopened:
                    found = log_of(reopened)
                    tally.events_lost += len(survive - found.keys())
                    whole = [set(ids) <= found.keys() for _, ids in commits]
                    partial = [
                        bool(set(ids) & found.keys()) != ok
                        for (_, ids), ok in zip(commits, whole, strict=True)
                    ]
                    tally.check(not any(partial), f"{where}: a commit survived in part")
                    tally.check(
                        whole == sorted(whole, reverse=True), f"{where}: not a prefix of commits"
                    )
                    dropped += sum(1 for ok in whole if not ok)
                    tally.check(reopened.verify().ok, f"{where}: does not verify")
                with make_client(server, str(path)) as client:
                    server.reply_echo()
                    if whole[0]:
                        resumed = client.chats.get(chat.id)
                    else:  # the damage came before the conversation was started
                        resumed = client.chats.create(model="gemini-test")
                    again = resumed.send_message("after the crash").text
                    tally.check(again == "echo: after the crash", f"{where}: no go ({again})")
                    tally.check(client.store.verify().ok, f"{where}: does not verify at the end")
            except StoreError as exc:
                tally.check(False, f"{where}: {exc!r}")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    tally.record("wal-damaged")
    tally.assert_clean()
    assert dropped > 0  # the sample did reach into the log's commits


def test_the_cli_on_a_damaged_file_exits_with_one_line(tmp_path: Path, template: Template) -> None:
    """``chatledger verify`` / ``log`` / ``ls`` on a truncated or malformed file: exit
    status 1 and ``Error: ...`` on one line, through click and as a real process."""
    cid = next(iter(template.events))
    damaged = {
        "truncated": template.content[: len(template.content) // 2],
        "bad-header": template.content[:16] + b"\xff" * 84 + template.content[100:],
        "garbage": b"not a database at all\n" * 50,
    }
    tally = Tally()
    for name, content in damaged.items():
        path = _write(tmp_path / f"{name}.db", content)
        for command in (["verify"], ["log", cid], ["ls"], ["show", cid]):
            tally.faults += 1
            result = CliRunner().invoke(cli, ["--db", str(path), *command])
            tally.check(
                result.exit_code == 1
                and one_line_error(result.output)
                and mentions_path(result.output, path),
                f"{name} {command}: exit {result.exit_code}: {result.output!r}",
            )
        tally.check(path.read_bytes() == content, f"{name}: the CLI changed the damaged file")
        if name != "truncated" and not ledger.full_scale():
            continue  # one real process is enough in the normal suite
        done = subprocess.run(
            [sys.executable, "-m", "chatledger.cli", "--db", str(path), "verify"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        tally.faults += 1
        tally.check(
            done.returncode == 1 and one_line_error(done.stderr) and not done.stdout,
            f"{name}: exit {done.returncode}: {done.stderr!r}",
        )
    tally.record("corrupted")
    tally.assert_clean()


# --------------------------------------------------------------------------- not a database


def _another_programs_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, title TEXT, starts TEXT)")
        conn.execute("INSERT INTO events (title, starts) VALUES ('standup', '09:00')")


def _export_file(path: Path, template: Template) -> None:
    lines = [json.dumps(event.to_export()) for event in next(iter(template.events.values()))]
    path.write_text("\n".join(lines) + "\n")


NOT_DATABASES: dict[str, Callable[[Path, Template], object]] = {
    "text": lambda path, _: path.write_text("Shopping list\n- milk\n- eggs\n" * 20),
    "binary": lambda path, _: path.write_bytes(random.Random(5).randbytes(8192)),
    "png": lambda path, _: path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000),
    "export": _export_file,
    "another-programs-database": lambda path, _: _another_programs_database(path),
    "folder": lambda path, _: path.mkdir(),
}


@pytest.mark.parametrize("kind", list(NOT_DATABASES))
def test_a_file_that_is_not_a_chatledger_database_is_refused_untouched(
    tmp_path: Path, template: Template, kind: str
) -> None:
    path = tmp_path / "chatledger.db"
    NOT_DATABASES[kind](path, template)
    content = None if path.is_dir() else path.read_bytes()
    tally = Tally(faults=1)
    try:
        make_client_without_server(path).__enter__().close()
        tally.check(False, f"{kind}: opened as a log")
    except StoreUnavailableError as exc:
        text = str(exc)
        wanted = "folder" if kind == "folder" else "not a chatledger database"
        tally.check(mentions_path(text, path) and wanted in text, f"{kind}: unclear {text!r}")
    except Exception as exc:
        tally.check(False, f"{kind}: raised {exc!r}")
    tally.faults += 1
    result = CliRunner().invoke(cli, ["--db", str(path), "ls"])
    tally.check(
        result.exit_code == 1 and one_line_error(result.output), f"{kind}: {result.output!r}"
    )
    if content is not None:
        tally.check(path.read_bytes() == content, f"{kind}: the file was changed")
        if kind == "another-programs-database":
            with contextlib.closing(sqlite3.connect(path)) as conn:
                tables = [
                    row[0]
                    for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                ]
            tally.check(tables == ["events"], f"{kind}: tables added: {tables}")
    else:
        tally.check(path.is_dir() and not any(path.iterdir()), f"{kind}: the folder changed")
    tally.record("not-a-database")
    tally.assert_clean()


def test_an_empty_file_is_a_new_empty_log(tmp_path: Path) -> None:
    """SQLite's rule, kept on purpose: a file with no bytes is a new database (``touch``,
    ``mkstemp``, or another process that has just created it and not yet written its
    first page). Nothing can be read wrongly from it: it has no conversations, and
    asking for one says so, naming the file."""
    path = tmp_path / "chatledger.db"
    path.touch()
    with make_client_without_server(path) as client:
        assert client.chats.list() == []
        with pytest.raises(NotFoundError, match="no conversation 'gone'") as caught:
            client.chats.get("gone")
        assert mentions_path(str(caught.value), path)
        store = client.store
        assert isinstance(store, SQLiteStore)
        assert store.verify().ok
    ledger.record(AREA, "not-a-database/sqlite", faults=1)
