"""The CLI against what broke it (issue 13): input that is not UTF-8 leaving an empty
conversation, files it cannot write or read printing tracebacks, ids that name two
conversations, a model's escape sequences reaching the terminal, passwords in URLs, and
no way to bound a model call. Real SQLite files, the loopback Gemini server, click's
runner and real processes (one in a real pseudo-terminal)."""

from __future__ import annotations

import json
import os
import pty
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import chatledger
from chatledger.cli._app import CliSettings, mask_url, shown_location, url_secrets
from chatledger.cli._ids import resolve_conversation_id, short_ids
from chatledger.cli._render import escape_controls, json_line
from chatledger.events import ConversationStarted, NewEvent, SQLiteStore, UserMessageAdded
from tests.cli_support import (
    API_KEY,
    assert_expected_error,
    assert_key_nowhere,
    cli_process,
    conversation_id_of,
    conversations_in,
    events_of,
    file_state,
    one_shot,
    process_env,
    run,
    stream_reply,
)
from tests.faults import ledger
from tests.support.gemini_server import GeminiServer, Reply, text_response
from tests.support.narrow import stream_version


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    return CliRunner()


# --------------------------------------------------------------------------- validate, then write


BAD_UTF8 = "bad \udcff"  # what Python makes of the bytes b"bad \xff" in argv


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["chat", BAD_UTF8], "MESSAGE is not valid UTF-8 text (byte 0xff at character 4)"),
        (["chat", "-s", BAD_UTF8, "hi"], "--system is not valid UTF-8 text"),
        (["chat", "--base-url", "http://x/\udcfe", "hi"], "--base-url is not valid UTF-8"),
        (["chat", "hi", "-m", "bad\nmodel"], "model must be printable text"),
    ],
)
def test_input_that_cannot_be_sent_writes_nothing(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, args: list[str], named: str
) -> None:
    stream_reply(gemini_server, "an earlier answer")
    one_shot(runner, db_path, gemini_server, "an earlier conversation")
    before = file_state(db_path)

    result = run(runner, db_path, *args[:1], "--base-url", gemini_server.base_url, *args[1:])

    assert_expected_error(result, named)
    assert file_state(db_path) == before  # not a byte changed
    assert len(conversations_in(db_path)) == 1
    assert len(gemini_server.requests) == 1
    ledger.record("cli", "unsendable-input-writes-nothing/sqlite", faults=1)


def test_bytes_that_are_not_utf8_in_a_real_argv_create_no_log(tmp_path: Path) -> None:
    db = tmp_path / "never.db"
    done = cli_process("--db", str(db), "chat", b"bad \xff", env=process_env())
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "Error: MESSAGE is not valid UTF-8 text (byte 0xff at character 4); give it in "
        "UTF-8 (nothing was sent or recorded)\n"
    )
    assert not db.exists()
    ledger.record("cli", "unsendable-input-writes-nothing/sqlite", faults=1)


def test_a_repl_that_sends_nothing_valid_records_no_conversation(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer
) -> None:
    script = b"bad \xff\n/history\n/rewind\n"
    result = run(runner, db_path, "chat", "--base-url", gemini_server.base_url, input=script)
    assert result.exit_code == 0, result.output
    assert "Error: the line is not valid UTF-8 text" in result.stderr
    assert "Error: nothing to rewind" in result.stderr
    assert "conversation: " not in result.stderr
    assert conversations_in(db_path) == []
    assert gemini_server.requests == []


def test_reading_commands_do_not_create_a_log(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    for args in (["show", "abc"], ["log", "abc"], ["tree", "abc"], ["verify"], ["export", "x"]):
        result = run(runner, db, *args)
        assert_expected_error(result, f"there is no log at {db}")
    listed = run(runner, db, "ls")
    assert listed.exit_code == 0 and listed.stderr == f"No conversations in {db}.\n"
    assert not db.exists()


def test_usage_errors_come_before_the_log_is_opened(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "untouched.db"
    for args in (
        ["chat", "--id", "x", "-s", "be brief", "hi"],
        ["chat", "--id", "x", "--continue", "hi"],
        ["chat", "-a", "photo.png"],
        ["replay", "x", "--timeout", "3"],
    ):
        result = run(runner, db, *args)
        assert result.exit_code == 2, (args, result.output)
        assert not db.exists()


# --------------------------------------------------------------------------- files


@pytest.fixture
def recorded(runner: CliRunner, db_path: Path, gemini_server: GeminiServer) -> str:
    stream_reply(gemini_server, "Recorded.")
    return conversation_id_of(one_shot(runner, db_path, gemini_server, "Record this"))


@pytest.mark.parametrize(
    ("output", "reason"),
    [("/dev/full", "No space left on device"), ("{tmp}/missing/dir/x", "No such file")],
)
def test_an_export_that_cannot_be_written_is_an_error_not_a_traceback(
    runner: CliRunner, db_path: Path, recorded: str, tmp_path: Path, output: str, reason: str
) -> None:
    target = output.format(tmp=tmp_path)
    result = run(runner, db_path, "export", recorded, "-o", target)
    assert_expected_error(result, f"cannot write the export to {target}: {reason}")
    ledger.record("cli", "export-cannot-be-written/sqlite", faults=1)


def _limited_files(limit: int) -> None:
    """In the child: files may not grow past ``limit`` bytes (a disk that fills up), and
    a write past it fails (EFBIG) instead of killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_an_export_replaces_a_file_only_once_complete(runner: CliRunner, db_path: Path) -> None:
    with SQLiteStore(db_path) as store:  # closed: nothing left for a reader to write
        _start(store, "big")
        big = {"role": "user", "parts": [{"text": "x" * 3_000_000}]}
        store.append(
            "big", [NewEvent(data=UserMessageAdded(turn=1, content=big))], expected_version=1
        )
    target = db_path.parent / "audit.jsonl"
    target.write_text("the previous export\n")
    argv = ["--db", str(db_path), "export", "big", "-o", str(target)]
    done = subprocess.run(
        [sys.executable, "-m", "chatledger.cli", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=process_env(),
        timeout=120,
        preexec_fn=lambda: _limited_files(1_000_000),  # the disk fills up part way
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"Error: cannot write the export to {target}: File too large")
    assert target.read_text() == "the previous export\n"
    assert not [p for p in db_path.parent.iterdir() if p.name.endswith(".partial")]


def test_an_export_is_written_whole(
    runner: CliRunner, db_path: Path, recorded: str, tmp_path: Path
) -> None:
    target = tmp_path / "audit.jsonl"
    result = run(runner, db_path, "export", recorded, "-o", str(target))
    assert result.exit_code == 0 and result.stderr == "exported 4 events\n"
    lines = target.read_text().splitlines()
    assert [json.loads(line)["version"] for line in lines] == [1, 2, 3, 4]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_an_import_that_cannot_be_read_is_an_error(runner: CliRunner, db_path: Path) -> None:
    result = run(runner, db_path, "import", "/proc/self/mem")
    assert_expected_error(result, "cannot read /proc/self/mem: Input/output error")
    assert conversations_in(db_path) == []


def test_a_reader_that_goes_away_ends_the_command_quietly(db_path: Path, recorded: str) -> None:
    # `chatledger log ID | head -1`, with a log long enough to fill the pipe.
    with SQLiteStore(db_path) as store:
        version = stream_version(store, recorded)
        store.append(
            recorded,
            [
                NewEvent(
                    data=UserMessageAdded(
                        turn=n, content={"role": "user", "parts": [{"text": "x" * 500}]}
                    )
                )
                for n in range(2, 400)
            ],
            expected_version=version,
        )
    process = subprocess.Popen(
        [sys.executable, "-m", "chatledger.cli", "--db", str(db_path), "log", recorded],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=process_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"   1  ")
    process.stdout.close()
    errors = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 1
    assert errors == b""


# --------------------------------------------------------------------------- ids


def _start(store: SQLiteStore, conversation_id: str, model: str = "m") -> None:
    store.append(
        conversation_id, [NewEvent(data=ConversationStarted(model=model))], expected_version=0
    )


def test_short_ids_are_lengthened_until_they_name_one_conversation() -> None:
    ids = ["abcdefgh", "abcdefgh-1111", "abcdefgh-1222", "zz", "0123456789"]
    shown = short_ids(ids)
    assert shown == {
        "abcdefgh": "abcdefgh",  # whole: an exact id wins
        "abcdefgh-1111": "abcdefgh-11",
        "abcdefgh-1222": "abcdefgh-12",
        "zz": "zz",
        "0123456789": "01234567",
    }


def test_an_exact_id_wins_and_tree_never_shows_an_ambiguous_id(
    runner: CliRunner, db_path: Path
) -> None:
    real = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
    with SQLiteStore(db_path) as store:
        _start(store, real, model="real")
        _start(store, real[:8], model="impostor")  # an id equal to the real one's prefix
        assert resolve_conversation_id(store, real[:8]) == real[:8]

    shown = run(runner, db_path, "log", real[:8])
    assert "model=impostor" in shown.stdout

    tree = run(runner, db_path, "tree", real)
    assert tree.exit_code == 0, tree.output
    label = tree.stdout.split()[0]
    assert label == real[:9] and tree.stdout.rstrip().endswith("*")
    again = run(runner, db_path, "log", label)  # what tree shows leads back to it
    assert "model=real" in again.stdout
    ledger.record("cli", "exact-id-wins/sqlite", faults=1)


def test_diff_labels_resolve_to_their_conversations(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer
) -> None:
    stream_reply(gemini_server, "one")
    first = conversation_id_of(one_shot(runner, db_path, gemini_server, "First"))
    with SQLiteStore(db_path) as store:
        _start(store, first[:8])
    result = run(runner, db_path, "diff", first, first[:8])
    left, right = result.stdout.split(" share ")[0].split(" and ")
    assert (left, right) == (first[:9], first[:8])


# --------------------------------------------------------------------------- control characters


ESCAPES = "Hi \x1b[2J\x1b]0;pwned\x07 \x9b31m\r\x08 done"
SHOWN = "Hi \\x1b[2J\\x1b]0;pwned\\x07 \\x9b31m\\x0d\\x08 done"


def test_control_characters_are_escaped_for_people_and_kept_in_the_log(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer
) -> None:
    stream_reply(gemini_server, ESCAPES[:8], ESCAPES[8:])  # an escape split across chunks
    chatted = one_shot(runner, db_path, gemini_server, "Say something odd \x1b[1A")
    cid = conversation_id_of(chatted)
    assert chatted.stdout == SHOWN + "\n"

    shown = run(runner, db_path, "show", cid)
    assert shown.stdout == f"user: Say something odd \\x1b[1A\nmodel: {SHOWN}\n"
    logged = run(runner, db_path, "log", cid)
    tree = run(runner, db_path, "tree", cid)
    for output in (chatted.output, shown.output, logged.output, tree.output):
        assert not any(c in output for c in "\x1b\x07\x9b\r\x08"), output

    # Exact where exactness is asked for: the JSON outputs and the log.
    as_json = json.loads(run(runner, db_path, "show", cid, "--json").stdout)
    assert as_json[1]["parts"][0]["text"] == ESCAPES
    raw = run(runner, db_path, "log", cid, "--json").stdout
    assert "\x9b" not in raw and "\x1b" not in raw
    assert (
        json.loads(raw.splitlines()[-1])["data"]["response"]["candidates"][0]["content"]["parts"][
            0
        ]["text"]
        == ESCAPES
    )
    assert (
        events_of(db_path, cid)[-1].data.response["candidates"][0]["content"]["parts"][0][  # type: ignore[attr-defined]
            "text"
        ]
        == ESCAPES
    )
    ledger.record("cli", "escape-sequences/sqlite", faults=1)


def test_a_servers_escape_sequences_in_an_error_are_escaped(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer
) -> None:
    gemini_server.reply_error(400, "INVALID_ARGUMENT", "bad \x1b]0;owned\x07 request")
    result = run(runner, db_path, "chat", "--base-url", gemini_server.base_url, "hi")
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr and "\\x1b]0;owned" in result.stderr
    ledger.record("cli", "escape-sequences/sqlite", faults=1)


def test_escape_helpers() -> None:
    assert escape_controls("a\tb\nc\r\nd\x00\x7f\x85") == "a\tb\nc\nd\\x00\\x7f\\x85"
    assert json_line({"t": "\x1b\x9b\u2028é"}) == '{"t": "\\u001b\\u009b\\u2028é"}'


def test_show_in_a_real_terminal_sends_it_no_escape_sequence(
    db_path: Path, gemini_server: GeminiServer
) -> None:
    client = chatledger.Client(
        api_key=API_KEY, http_options={"base_url": gemini_server.base_url}, store=str(db_path)
    )
    gemini_server.reply_text(ESCAPES)
    chat = client.chats.create(model="gemini-2.5-flash")
    chat.send_message("hi")
    client.close()

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "chatledger.cli", "--db", str(db_path), "show", chat.id],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=process_env(),
        close_fds=True,
    )
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(timeout=60) == 0
    text = output.decode()
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text
    assert text.endswith("\\x08 done\r\n")  # the terminal's own line end
    ledger.record("cli", "escape-sequences/sqlite", faults=1)


# --------------------------------------------------------------------------- secrets in URLs


PASSWORD = "PASSWORD-s3cr3t-9f8e"


def test_a_password_in_the_base_url_is_never_printed_or_stored(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, tmp_path: Path
) -> None:
    # A server that is not there: the error names the URL.
    closed = f"http://user:{PASSWORD}@127.0.0.1:9/"
    failed = run(runner, db_path, "chat", "--base-url", closed, "--no-stream", "hi")
    assert failed.exit_code == 1 and failed.stderr.splitlines()[-1].startswith("Error: ")
    cid = conversation_id_of(failed)

    # A server that is there, reached with credentials in its URL.
    host = gemini_server.base_url.split("://", 1)[1]
    gemini_server.reply_text("hello")
    worked = run(runner, db_path, "chat", "--base-url", f"http://user:{PASSWORD}@{host}", "hi")
    assert worked.exit_code == 0, worked.output

    outputs = [
        failed.output,
        worked.output,
        run(runner, db_path, "log", cid).output,
        run(runner, db_path, "log", cid, "--json").output,
        run(runner, db_path, "export", cid).output,
    ]
    assert_key_nowhere(db_path, *outputs, key=PASSWORD)
    ledger.record("secrets", "password in the base URL/cli", faults=2)


def test_a_password_in_the_base_url_of_a_real_process(db_path: Path) -> None:
    done = cli_process(
        "--db",
        str(db_path),
        "chat",
        "--no-stream",
        "--base-url",
        f"http://me:{PASSWORD}@127.0.0.1:9/v1beta",
        "hi",
        env=process_env(GEMINI_API_KEY=API_KEY),
    )
    assert done.returncode == 1
    assert "Error: " in done.stderr and "Traceback" not in done.stderr
    assert_key_nowhere(db_path, done.stdout, done.stderr, key=PASSWORD)
    ledger.record("secrets", "password in the base URL/cli", faults=1)


def test_url_secrets_and_the_settings_repr() -> None:
    assert url_secrets(f"postgresql://app:{PASSWORD}@db/chats") == [PASSWORD, PASSWORD]
    assert url_secrets("https://TOKEN123@host/", lone_user=True) == ["TOKEN123", "TOKEN123"]
    assert url_secrets("postgresql://postgres@db/chats") == []  # a user name alone is not
    assert url_secrets("host=db password='p w' user=app") == ["p w"]
    assert mask_url(f"http://u:{PASSWORD}@h/") == "http://u:***@h/"
    settings = CliSettings(f"postgresql://app:{PASSWORD}@db/chats", "alice")
    assert PASSWORD not in repr(settings)
    assert repr(settings) == "CliSettings(db='postgresql://app:***@db/chats', actor='alice')"
    # Registered: a library error quoting the URL is masked too.
    assert PASSWORD not in str(chatledger.InvalidInputError(f"cannot reach {settings.db}"))


def test_every_printed_location_goes_through_mask_url_password() -> None:
    # A lone user name is often a token: masked whole, as mask_url_password does.
    assert mask_url("https://TOKEN123@host/v1") == "https://***@host/v1"
    assert (
        shown_location(f"postgresql://app:{PASSWORD}@db/chats") == "postgresql://app:***@db/chats"
    )
    assert shown_location("/home/me/chatledger.db") == "/home/me/chatledger.db"
    # A percent-encoded password is masked whole, and so is its decoded copy elsewhere.
    assert (
        shown_location("postgresql://app:p%40ss@db/x?note=p@ss")
        == "postgresql://app:***@db/x?note=***"
    )


# --------------------------------------------------------------------------- timeout


def test_timeout_bounds_a_model_call_and_is_recorded(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer
) -> None:
    gate = threading.Event()
    gemini_server.enqueue(
        Reply(
            "sse",
            chunks=[text_response("never ", finish_reason=None), text_response("finished")],
            gates={1: gate},
        )
    )
    try:
        result = run(
            runner, db_path, "chat", "--base-url", gemini_server.base_url, "--timeout", "0.5", "hi"
        )
    finally:
        gate.set()
    assert result.exit_code == 1
    assert result.stdout == "never \n"  # the partial line is ended before the error
    assert result.stderr.splitlines()[-1].startswith("Error: ")
    failed = events_of(db_path, conversation_id_of(result))[-1]
    assert failed.type == "model_call_failed"
    assert failed.data.error.kind == "ModelTimeoutError"  # type: ignore[attr-defined]
    ledger.record("cli", "timeout/sqlite", faults=1)


def test_timeout_must_be_positive(runner: CliRunner, db_path: Path) -> None:
    result = run(runner, db_path, "chat", "--timeout", "0", "hi")
    assert result.exit_code == 2 and "--timeout" in result.stderr
