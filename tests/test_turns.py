"""The turn protocol across writers: turns never interleave, and a dead writer never
blocks a conversation for good. Real OS processes, a real SQLite file, a real server."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.client import _conversation, _fold, _leases
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.events import NewEvent, UserMessageAdded
from chatledger.projections import history
from tests.conftest import API_KEY
from tests.faults import ledger
from tests.support.gemini_server import GeminiServer, Reply, text_response
from tests.support.narrow import stream_version, text_of
from tests.support.postgres import scratch_database

_SENDER = r"""
import sys, chatledger
path, base_url, conversation_id, name, count = sys.argv[1:6]
client = chatledger.Client(
    api_key=sys.argv[6], http_options={"base_url": base_url}, store=path,
    actor=name, busy_timeout=60,
)
chat = client.chats.get(conversation_id)
for index in range(int(count)):
    reply = chat.send_message(f"{name}-{index}")
    assert reply.text == f"echo: {name}-{index}", reply.text
print("done")
"""


def _client(server: GeminiServer, path: Path, **kwargs: Any) -> chatledger.Client:
    return chatledger.Client(
        api_key=API_KEY, http_options={"base_url": server.base_url}, store=str(path), **kwargs
    )


def test_two_processes_sending_on_one_conversation_never_interleave(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    per_process = 15
    gemini_server.reply_echo(count=2 * per_process, delay=0.01)
    client = _client(gemini_server, db_path)
    chat = client.chats.create(model="gemini-2.5-flash")
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _SENDER,
                str(db_path),
                gemini_server.base_url,
                chat.id,
                name,
                str(per_process),
                API_KEY,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("left", "right")
    ]
    for process in processes:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
        assert out.strip() == "done"

    events = chat.events()
    assert client.store.verify(chat.id).ok
    # Each turn's events are contiguous: nobody wrote inside another's turn.
    open_turn = None
    for event in events[1:]:
        if event.type == "user_message_added":
            assert open_turn is None, f"turn {event.data.turn} opened inside turn {open_turn}"  # type: ignore[attr-defined]
            open_turn = event.data.turn  # type: ignore[attr-defined]
        else:
            assert event.data.turn == open_turn  # type: ignore[attr-defined]
            if event.type == "model_responded":
                open_turn = None
    chat.refresh()
    full = [content.to_wire() for content in chat.get_history()]
    assert len(full) == 4 * per_process
    for question, answer in zip(full[::2], full[1::2], strict=True):
        assert answer["parts"][0]["text"] == f"echo: {question['parts'][0]['text']}"
    # Every request carried the whole history so far (each sender caught up first).
    for index, request in enumerate(gemini_server.requests):
        assert len(request.body["contents"]) == 2 * index + 1
    client.close()


_HANGING_SENDER = r"""
import sys, chatledger
path, base_url, conversation_id = sys.argv[1:4]
client = chatledger.Client(api_key=sys.argv[4], http_options={"base_url": base_url}, store=path)
chat = client.chats.get(conversation_id)
print("sending", flush=True)
chat.send_message("will be killed")
"""


def test_a_killed_writer_does_not_block_the_conversation(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    # The first request hangs (the server waits for the gate) until the writer is killed.
    gate = threading.Event()
    gemini_server.enqueue(Reply("sse", chunks=[text_response("never")], gates={0: gate}))
    gemini_server.reply_text("after the crash")

    client = _client(gemini_server, db_path, busy_timeout=30)
    chat = client.chats.create(model="m")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _HANGING_SENDER,
            str(db_path),
            gemini_server.base_url,
            chat.id,
            API_KEY,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "sending"
        deadline = time.monotonic() + 60
        while not gemini_server.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gemini_server.requests, "the writer never reached the server"
        chat.refresh()
        assert chat._conversation.history.pending is not None  # its turn is open
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        gate.set()
        if writer.poll() is None:
            writer.kill()
        writer.communicate(timeout=30)

    assert chat.send_message("still there?").text == "after the crash"
    kinds = [event.type for event in chat.events()]
    assert kinds == [
        "conversation_started",
        "user_message_added",
        "model_call_started",
        "turn_abandoned",
        "user_message_added",
        "model_call_started",
        "model_responded",
    ]
    abandoned = chat.events()[3]
    assert f"process {writer.pid}" in abandoned.data.reason  # type: ignore[attr-defined]
    assert [content.to_wire()["parts"][0]["text"] for content in chat.get_history()] == [
        "still there?",
        "after the crash",
    ]
    assert client.store.verify().ok
    client.close()


def _open_foreign_turn(client: chatledger.Client, conversation_id: str, *, lease: float) -> None:
    version = stream_version(client.store, conversation_id)
    client.store.append(
        conversation_id,
        [
            NewEvent(
                data=UserMessageAdded(
                    turn=1,
                    content={"role": "user", "parts": [{"text": "elsewhere"}]},
                    lease_seconds=lease,
                ),
                metadata={"actor": "remote", "host": "another-host/0000", "pid": 1},
            )
        ],
        expected_version=version,
    )


def test_an_open_turn_on_another_host_makes_the_next_writer_wait_then_give_up(
    db_path: Path,
) -> None:
    transport = ScriptedTransport().enqueue("unused")
    client = chatledger.Client(store=str(db_path), transport=transport, busy_timeout=0.3)
    chat = client.chats.create(model="m")
    _open_foreign_turn(client, chat.id, lease=3600)
    before = len(chat.events())
    with pytest.raises(chatledger.ConversationBusyError, match="turn 1 open by remote"):
        chat.send_message("mine")
    assert len(chat.events()) == before
    assert transport.requests == []


def test_an_expired_lease_lets_the_next_writer_close_the_turn(db_path: Path) -> None:
    transport = ScriptedTransport().enqueue("hello")
    client = chatledger.Client(store=str(db_path), transport=transport, busy_timeout=5)
    chat = client.chats.create(model="m")
    _open_foreign_turn(client, chat.id, lease=0.05)
    time.sleep(0.1)  # let the lease run out (waiting, not measuring)
    assert chat.send_message("mine").text == "hello"
    abandoned = [event for event in chat.events() if event.type == "turn_abandoned"]
    assert len(abandoned) == 1 and "lease" in abandoned[0].data.reason  # type: ignore[attr-defined]
    # The abandoned turn is not in any history, and the new turn got the next number.
    assert [content.to_wire()["parts"][0]["text"] for content in chat.get_history()] == [
        "mine",
        "hello",
    ]
    assert chat.events()[-3].data.turn == 2  # type: ignore[attr-defined]


def test_a_turn_left_open_by_this_process_is_closed_at_once(db_path: Path) -> None:
    transport = ScriptedTransport().enqueue("ok")
    client = chatledger.Client(store=str(db_path), transport=transport, busy_timeout=0)
    chat = client.chats.create(model="m")
    version = chat.version
    client.store.append(
        chat.id,
        [
            NewEvent(
                data=UserMessageAdded(
                    turn=1, content={"role": "user", "parts": [{"text": "lost"}]}
                ),
                metadata={"host": _conversation.HOST, "pid": os.getpid()},
            )
        ],
        expected_version=version,
    )
    assert chat.send_message("next").text == "ok"
    reasons = [e.data.reason for e in chat.events() if e.type == "turn_abandoned"]  # type: ignore[attr-defined]
    assert reasons == ["left open by this process, which is no longer running it"]


def test_snapshots_make_resume_start_late_and_agree_with_the_log(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_fold, "SNAPSHOT_EVERY", 10)
    monkeypatch.setattr(_fold, "SNAPSHOT_GROWTH", 1)
    transport = ScriptedTransport()
    client = chatledger.Client(store=str(db_path), transport=transport)
    chat = client.chats.create(model="m", history=[{"role": "user", "parts": [{"text": "seed"}]}])
    for index in range(8):
        transport.enqueue(f"a{index}")
        chat.send_message(f"q{index}")
    snapshot = client.store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME)
    assert snapshot is not None and snapshot.version >= 10

    state, _, used = _fold.fold_events(client.store, chat.id)
    plain, _, unused = _fold.fold_events(client.store, chat.id, use_snapshot=False)
    assert used == snapshot.version and unused == 0
    assert history.dump_state(state) == history.dump_state(plain)
    resumed = chatledger.Client(store=str(db_path), transport=transport).chats.get(chat.id)
    assert resumed.get_history() == chat.get_history()


def _chat_with_snapshot(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, *, every: int = 10, sends: int = 6
) -> tuple[chatledger.Client, Any, ScriptedTransport]:
    """A chat of ``sends`` turns, snapshotted every ``every`` events."""
    monkeypatch.setattr(_fold, "SNAPSHOT_EVERY", every)
    monkeypatch.setattr(_fold, "SNAPSHOT_GROWTH", 1)
    transport = ScriptedTransport()
    client = chatledger.Client(store=str(db_path), transport=transport)
    chat = client.chats.create(model="m")
    for index in range(sends):
        transport.enqueue(f"a{index}")
        chat.send_message(f"q{index}")
    return client, chat, transport


def _tamper_with_snapshot(
    client: chatledger.Client, db_path: Path, chat_id: str, part: str
) -> None:
    """Edit the snapshot's state, keeping its version and anchor hash: the edit a resume
    cannot see (the anchor still matches the log)."""
    snapshot = client.store.load_snapshot(chat_id, _fold.SNAPSHOT_NAME)
    assert snapshot is not None
    state = _fold._SNAPSHOT_DECODER.decode(snapshot.state)
    if part == "contents":
        state.contents[0] = {"role": "user", "parts": [{"text": "forged"}]}
    else:
        state.usage.turns_completed += 1000
    with sqlite3.connect(db_path) as conn:  # as someone with the file would
        conn.execute(
            "UPDATE snapshots SET state = ? WHERE conversation_id = ?",
            (_fold._SNAPSHOT_ENCODER.encode(state), chat_id),
        )
    conn.close()


def test_verify_compares_a_snapshot_with_the_log(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _client, chat, _ = _chat_with_snapshot(db_path, monkeypatch)
    report = chat.verify()
    assert report.ok, report.problems
    assert report.snapshots_checked == 1


@pytest.mark.parametrize("part", ["contents", "usage"])
def test_verify_names_a_modified_snapshot_and_the_cli_rebuilds_it(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, part: str
) -> None:
    from click.testing import CliRunner

    from chatledger.cli import cli

    client, chat, _ = _chat_with_snapshot(db_path, monkeypatch)
    original = chat.get_history()
    snapshot = client.store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME)
    assert snapshot is not None
    _tamper_with_snapshot(client, db_path, chat.id, part)
    if part == "contents":  # what is at stake: a resume that folds starts from the snapshot
        # (on a store without read models; SQLite resumes read chat_contents instead)
        with monkeypatch.context() as patch:
            patch.setattr(_conversation, "load_state", lambda store, cid: None)
            forged = chatledger.Client(store=str(db_path)).chats.get(chat.id).get_history()
        assert text_of(forged[0]) == "forged" and text_of(original[0]) == "q0"

    report = chat.verify()
    assert [(p.conversation_id, p.version) for p in report.problems] == [
        (chat.id, snapshot.version)
    ]
    assert "its snapshot does not hold the histories the log gives" in report.problems[0].reason
    assert client.store.verify(chat.id).ok  # the events themselves are sound

    runner = CliRunner()
    result = runner.invoke(cli, ["--db", str(db_path), "verify"], catch_exceptions=False)
    assert result.exit_code == 1
    assert f"Problem: {chat.id} v{snapshot.version}: its snapshot does not hold" in result.stdout
    assert "--rebuild-snapshots" in result.stdout

    result = runner.invoke(
        cli, ["--db", str(db_path), "verify", "--rebuild-snapshots"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "and 1 snapshot of" in result.stdout
    resumed = chatledger.Client(store=str(db_path)).chats.get(chat.id)
    assert resumed.get_history() == original
    assert resumed.verify().ok
    rebuilt = client.store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME)
    assert rebuilt is not None and rebuilt.version == snapshot.version


def test_a_snapshot_that_does_not_match_the_log_is_ignored(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, chat, transport = _chat_with_snapshot(db_path, monkeypatch, every=5, sends=3)
    snapshot = client.store.load_snapshot(chat.id, _fold.SNAPSHOT_NAME)
    assert snapshot is not None
    transport.enqueue("after")
    chat.send_message("one more")  # so that snapshot.version + 1 is a real event
    forged = _fold._SNAPSHOT_DECODER.decode(snapshot.state)
    forged.contents = [{"role": "user", "parts": [{"text": "forged"}]}]
    forged.full = [0]
    forged.hash = "0" * 64
    client.store.save_snapshot(
        type(snapshot)(
            conversation_id=chat.id,
            name=snapshot.name,
            version=snapshot.version + 1,
            state=_fold._SNAPSHOT_ENCODER.encode(forged),
        )
    )
    resumed = chatledger.Client(store=str(db_path), transport=transport).chats.get(chat.id)
    assert resumed.get_history() == chat.get_history()


# --------------------------------------------------------------------------- leases and clocks


TEN_YEARS = 10 * 365 * 24 * 3600


@pytest.fixture(scope="module")
def turns_database() -> Iterator[str]:
    with scratch_database("chatledger_turns") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def log_location(request: pytest.FixtureRequest, db_path: Path) -> str:
    """Where the log is: a SQLite file, or a PostgreSQL schema of the test's own (the
    lease rules are the client's, the same over every store)."""
    if request.param == "sqlite":
        return str(db_path)
    base = request.getfixturevalue("turns_database")
    return f"{base}?schema=turns_{uuid.uuid4().hex[:10]}"


def _backend(location: str) -> str:
    return "postgres" if location.startswith("postgres") else "sqlite"


def _clock_ahead(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make this process's store write events as a writer whose clock runs ``seconds``
    ahead (the time stamped on each event is the writer's clock)."""
    import datetime as dt

    from chatledger.events import store as store_module

    def ahead() -> str:
        moment = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"

    monkeypatch.setattr(store_module, "utc_now", ahead)


def _open_turn(
    client: chatledger.Client,
    conversation_id: str,
    *,
    lease: float,
    host: str = "another-host/0000",
    pid: int = 1,
) -> None:
    version = stream_version(client.store, conversation_id)
    client.store.append(
        conversation_id,
        [
            NewEvent(
                data=UserMessageAdded(
                    turn=1,
                    content={"role": "user", "parts": [{"text": "elsewhere"}]},
                    lease_seconds=lease,
                ),
                metadata={"actor": "remote", "host": host, "pid": pid},
            )
        ],
        expected_version=version,
    )


def _abandoned(chat: Any) -> list[str]:
    return [event.data.reason for event in chat.events() if event.type == "turn_abandoned"]


def test_a_turn_recorded_by_a_clock_ten_years_ahead_is_closed_after_its_lease(
    log_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = ScriptedTransport().enqueue("hello")
    client = chatledger.Client(store=log_location, transport=transport, busy_timeout=30)
    chat = client.chats.create(model="m")
    with monkeypatch.context() as patched:
        _clock_ahead(patched, TEN_YEARS)
        _open_turn(client, chat.id, lease=0.5)
    recorded = chat.events()[-1].recorded_at
    assert recorded[:4] == str(int(chat.events()[0].recorded_at[:4]) + 10)

    # By the wall clock the turn's last event is ten years away; the lease is measured
    # by how long this process has watched the turn sit idle.
    assert chat.send_message("mine").text == "hello"
    [reason] = _abandoned(chat)
    assert "lease of 0.5 s ran out (watched by this process" in reason
    assert "in the future" in reason
    assert [text_of(c) for c in chat.get_history()] == ["mine", "hello"]
    assert client.store.verify().ok
    client.close()
    ledger.record("turns", f"clock-ahead/{_backend(log_location)}", faults=1)


def test_a_busy_error_keeps_the_watch_so_a_later_send_gets_through(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server process: each send waits briefly, but the time watched adds up.
    transport = ScriptedTransport().enqueue("at last")
    client = chatledger.Client(store=str(db_path), transport=transport, busy_timeout=0.2)
    chat = client.chats.create(model="m")
    with monkeypatch.context() as patched:
        _clock_ahead(patched, TEN_YEARS)
        _open_turn(client, chat.id, lease=0.6)
    with pytest.raises(chatledger.ConversationBusyError, match=r"its lease \(0\.6 s\)"):
        chat.send_message("too early")
    for _ in range(50):
        try:
            assert chat.send_message("now").text == "at last"
            break
        except chatledger.ConversationBusyError:
            continue
    else:
        pytest.fail("the turn was never closed")
    assert len(_abandoned(chat)) == 1


@pytest.mark.parametrize(
    ("lease", "ahead"), [(1e300, 0.0), (1e300, 1e9), (float("inf"), 0.0)], ids=str
)
def test_a_huge_lease_or_a_year_2999_time_is_bounded(
    log_location: str, monkeypatch: pytest.MonkeyPatch, lease: float, ahead: float
) -> None:
    # 1e9 s ahead is the year 2057; MAX_TURN_LEASE is an hour, shortened here to wait less.
    monkeypatch.setattr(_leases, "MAX_TURN_LEASE", 0.4)
    transport = ScriptedTransport().enqueue("free")
    client = chatledger.Client(store=log_location, transport=transport, busy_timeout=30)
    chat = client.chats.create(model="m")
    with monkeypatch.context() as patched:
        _clock_ahead(patched, ahead)
        if lease == float("inf"):  # not JSON: write the largest finite value a file can hold
            lease = 1.7976931348623157e308
        _open_turn(client, chat.id, lease=lease)
    assert chat.send_message("mine").text == "free"
    [reason] = _abandoned(chat)
    assert reason.startswith("its lease of 0.4 s ran out")
    client.close()
    ledger.record("turns", f"huge-lease-or-far-time/{_backend(log_location)}", faults=1)


def test_the_lease_bound_and_the_clock_rules() -> None:
    assert _leases.bounded_lease(1e300) == _leases.MAX_TURN_LEASE == 3600
    assert _leases.bounded_lease(float("nan")) == _leases.MAX_TURN_LEASE
    assert _leases.bounded_lease("600") == _leases.MAX_TURN_LEASE  # not a number
    assert _leases.bounded_lease(True) == _leases.MAX_TURN_LEASE
    assert _leases.bounded_lease(-5) == 0
    assert _leases.bounded_lease(600) == 600
    with pytest.raises(chatledger.InvalidInputError, match="at most 3600"):
        chatledger.Client(turn_lease=1e300)
    for bad in (float("nan"), 0, -1, "600"):
        with pytest.raises(chatledger.InvalidInputError, match="turn_lease"):
            chatledger.Client(turn_lease=bad)  # type: ignore[arg-type]
    with pytest.raises(chatledger.InvalidInputError, match="busy_timeout"):
        chatledger.Client(busy_timeout=float("nan"))
    assert chatledger.Client(busy_timeout=float("inf"), turn_lease=3600).busy_timeout > 1e308


def test_an_unreadable_time_counts_as_now_and_the_watch_decides() -> None:
    pending = history.PendingTurn(
        turn=3,
        opened_at="not a time",
        opened_version=2,
        lease_seconds=0.05,
        owner={"host": "elsewhere", "pid": 7},
        user_input={"role": "user", "parts": [{"text": "x"}]},
    )
    watch = _leases.LeaseWatch()

    def judge(version: int) -> str | None:
        return _leases.judge_turn(
            pending, location="db", conversation_id="c", version=version, watch=watch
        )

    assert judge(2) is None  # first seen now
    time.sleep(0.1)
    assert judge(3) is None  # a new event in the turn: the count starts again
    time.sleep(0.1)
    assert "watched by this process" in (judge(3) or "")


# --------------------------------------------------------------------------- PID namespaces


def test_the_host_identity_names_the_pid_namespace() -> None:
    namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    with open("/proc/sys/kernel/random/boot_id") as handle:
        boot_id = handle.read().strip()
    assert f"{os.uname().nodename}/{boot_id}/{namespace}" == _leases.HOST
    assert _conversation.HOST == _leases.HOST  # what every turn's first event records


def test_a_writer_in_another_pid_namespace_is_not_judged_by_its_pid(log_location: str) -> None:
    # Same host name and boot as this process, another PID namespace; its pid does not
    # exist here. Only the lease may close its turn.
    hostname, boot_id, _namespace = _leases.HOST.split("/")
    other = f"{hostname}/{boot_id}/4026531999"
    dead = _dead_pid()
    transport = ScriptedTransport()
    client = chatledger.Client(store=log_location, transport=transport, busy_timeout=0.3)
    chat = client.chats.create(model="m")
    _open_turn(client, chat.id, lease=600, host=other, pid=dead)
    with pytest.raises(chatledger.ConversationBusyError, match="turn 1 open by remote"):
        chat.send_message("mine")
    assert _abandoned(chat) == []
    assert transport.requests == []

    # The same record naming this namespace: the dead pid closes it at once.
    chat2 = client.chats.create(model="m")
    _open_turn(client, chat2.id, lease=600, host=_leases.HOST, pid=dead)
    transport.enqueue("second")
    assert chat2.send_message("mine").text == "second"
    assert _abandoned(chat2) == [f"its writer process {dead} on this host is gone"]
    client.close()
    ledger.record("turns", f"pid-namespace/{_backend(log_location)}", faults=2)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


_NAMESPACED_READER = r"""
import os, sys, chatledger
path, base_url, conversation_id, key = sys.argv[1:5]
client = chatledger.Client(
    api_key=key, http_options={"base_url": base_url}, store=path, busy_timeout=1
)
chat = client.chats.get(conversation_id)
print("pid", os.getpid(), flush=True)
try:
    chat.send_message("from another namespace")
except chatledger.ConversationBusyError as error:
    print("busy", error, flush=True)
else:
    print("sent", flush=True)
"""


def test_a_live_turn_is_not_taken_over_from_another_pid_namespace(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    """The writer (this process) streams a reply; a reader in a new PID namespace, where
    this process's pid does not exist, must wait for the lease, not close the turn."""
    gate = threading.Event()
    gemini_server.enqueue(
        Reply(
            "sse",
            chunks=[text_response("slow ", finish_reason=None), text_response("reply")],
            gates={1: gate},
        )
    )
    gemini_server.reply_text("the reader's reply")  # what a wrong takeover would get
    client = _client(gemini_server, db_path)
    chat = client.chats.create(model="m")
    chunks = chat.send_message_stream("streaming")
    first = next(chunks)  # the turn is open and in flight in this process
    assert first.text == "slow "
    try:
        reader = subprocess.run(
            [
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
                sys.executable,
                "-c",
                _NAMESPACED_READER,
                str(db_path),
                gemini_server.base_url,
                chat.id,
                API_KEY,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).resolve().parents[1],
        )
    finally:
        gate.set()
    assert reader.returncode == 0, reader.stderr
    lines = reader.stdout.splitlines()
    assert lines[0] == "pid 1", lines  # it really ran in a new PID namespace
    assert lines[1].startswith("busy "), lines
    assert "turn 1 open by" in lines[1]
    assert [chunk.text for chunk in chunks] == ["reply"]
    kinds = [event.type for event in chat.events()]
    assert "turn_abandoned" not in kinds
    assert kinds[-1] == "model_responded"
    assert [text_of(c) for c in chat.get_history()] == ["streaming", "slow reply"]
    client.close()
    ledger.record("turns", "pid-namespace-live-turn/sqlite", faults=1)


def test_a_send_reads_nothing_unless_another_writer_appended(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send's first append is made at the version the chat knows: with nobody else
    writing, a turn reads nothing back from the store; when another writer appended
    (here a whole turn, through another client), that append fails, writing nothing,
    and the send reads the new turn and sends it as part of the history."""
    transport = ScriptedTransport().enqueue("one").enqueue("two").enqueue("three")
    client = chatledger.Client(store=str(db_path), transport=transport)
    reads: list[tuple[str, int]] = []
    store: Any = client.store
    real_read = store._read

    def counted(conversation_id: str, after: int, to: int | None) -> Any:
        reads.append((conversation_id, after))
        return real_read(conversation_id, after, to)

    monkeypatch.setattr(store, "_read", counted)
    chat = client.chats.create(model="m")
    assert chat.send_message("first").text == "one"
    assert reads == []
    other = chatledger.Client(store=str(db_path), transport=transport)
    assert other.chats.get(chat.id).send_message("elsewhere").text == "two"
    version = chat.version
    assert chat.send_message("third").text == "three"
    assert reads and all(read == (chat.id, version) for read in reads)
    sent = [content["parts"][0]["text"] for content in transport.requests[-1].contents]
    assert sent == ["first", "one", "elsewhere", "two", "third"]
    turns = [e.data.turn for e in chat.events() if e.type == "user_message_added"]  # type: ignore[attr-defined]
    assert turns == [1, 2, 3]
    assert chat.verify().ok
