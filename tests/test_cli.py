"""The ``chatledger`` command line, on real SQLite files against the loopback Gemini server.

Most tests go through click's CliRunner (stdout and stderr kept apart); a few run the CLI
as a real subprocess, as a user's shell would. No test reaches a real model or the
internet, and none sends to the local model (its own suite covers it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import chatledger
from chatledger.cli import (
    COMMANDS,
    cli,
    default_db,
    default_model,
    resolve_conversation_id,
    summarize,
)
from chatledger.client._settings import default_actor
from chatledger.events import (
    ConfigChanged,
    ConversationStarted,
    ErrorInfo,
    FunctionCalled,
    FunctionResponded,
    HistoryReplaced,
    ModelCallFailed,
    ModelResponded,
    NewEvent,
    SQLiteStore,
    TurnAbandoned,
    TurnRewound,
    UnknownEvent,
)
from tests.cli_support import (
    API_KEY,
    assert_expected_error,
    assert_key_nowhere,
    cli_process,
    conversation_id_of,
    events_of,
    one_shot,
    run,
    stream_reply,
)
from tests.support.gemini_server import GeminiServer, text_response


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    return API_KEY


# --------------------------------------------------------------------------- chat


def test_one_shot_chat_prints_only_the_reply_then_ls_show_log(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, api_key: str
) -> None:
    stream_reply(gemini_server, "Hel", "lo ", "there!")

    result = one_shot(runner, db_path, gemini_server, "Hi, model", "--system", "Be brief.")

    assert result.stdout == "Hello there!\n"
    conversation_id = conversation_id_of(result)
    request = gemini_server.requests[0]
    assert request.streamed and request.model == "gemini-2.5-flash"
    assert request.body["contents"] == [{"role": "user", "parts": [{"text": "Hi, model"}]}]
    assert request.body["systemInstruction"]["parts"] == [{"text": "Be brief."}]

    listed = run(runner, db_path, "ls")
    assert listed.exit_code == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "MODEL", "TURNS", "UPDATED"]
    assert row.split()[:3] == [conversation_id, "gemini-2.5-flash", "1"]

    listed_json = json.loads(run(runner, db_path, "ls", "--json").stdout)
    assert [(c["conversation_id"], c["model"], c["turns"]) for c in listed_json] == [
        (conversation_id, "gemini-2.5-flash", 1)
    ]

    for mode in ([], ["--full"], ["--curated"], ["--context"]):
        shown = run(runner, db_path, "show", conversation_id, *mode)
        assert shown.exit_code == 0
        assert shown.stdout == "user: Hi, model\nmodel: Hello there!\n", mode
    shown_json = json.loads(run(runner, db_path, "show", conversation_id, "--json").stdout)
    assert shown_json == [
        {"role": "user", "parts": [{"text": "Hi, model"}]},
        {"role": "model", "parts": [{"text": "Hello there!"}]},
    ]

    logged = run(runner, db_path, "--actor", "ignored-for-reads", "log", conversation_id)
    assert logged.exit_code == 0
    lines = logged.stdout.splitlines()
    types = ["conversation_started", "user_message_added", "model_call_started", "model_responded"]
    assert [line.split()[3] for line in lines] == types
    assert [int(line.split()[0]) for line in lines] == [1, 2, 3, 4]
    assert {line.split()[2] for line in lines} == {default_actor()}  # the OS user
    assert 'system="Be brief."' in lines[0]
    assert 'turn 1: "Hi, model"' in lines[1]
    assert '"Hello there!" finish=STOP tokens=12' in lines[3]

    exported = run(runner, db_path, "log", conversation_id, "--json")
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [r["type"] for r in records] == types
    assert [r["version"] for r in records] == [1, 2, 3, 4]
    assert {r["conversation_id"] for r in records} == {conversation_id}
    assert records == [e.to_export() for e in events_of(db_path, conversation_id)]

    assert_key_nowhere(
        db_path, result.output, listed.output, logged.output, exported.output, shown.output
    )


def test_no_stream_sends_generate_content(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, api_key: str
) -> None:
    gemini_server.reply_text("Whole reply.")
    result = one_shot(runner, db_path, gemini_server, "Hi", "--no-stream", "--model", "gemini-x")
    assert result.stdout == "Whole reply.\n"
    assert not gemini_server.requests[0].streamed
    assert gemini_server.requests[0].model == "gemini-x"


def test_a_reply_without_text_says_why_on_stderr(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, api_key: str
) -> None:
    gemini_server.reply_sse([text_response(None, finish_reason="SAFETY")])
    result = one_shot(runner, db_path, gemini_server, "Hi")
    assert result.stdout == "\n"
    assert "no text; finish reason SAFETY" in result.stderr


def test_resume_by_id_prefix(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, api_key: str
) -> None:
    stream_reply(gemini_server, "First answer.")
    conversation_id = conversation_id_of(one_shot(runner, db_path, gemini_server, "First"))
    stream_reply(gemini_server, "Second answer.")

    resumed = one_shot(runner, db_path, gemini_server, "Second", "--id", conversation_id[:8])

    assert resumed.stdout == "Second answer.\n"
    assert conversation_id_of(resumed) == conversation_id
    assert [c["parts"][0]["text"] for c in gemini_server.requests[1].body["contents"]] == [
        "First",
        "First answer.",
        "Second",
    ]
    summary = json.loads(run(runner, db_path, "ls", "--json").stdout)
    assert [(s["conversation_id"], s["turns"]) for s in summary] == [(conversation_id, 2)]


def test_model_and_system_do_not_apply_to_a_resumed_conversation(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, api_key: str
) -> None:
    stream_reply(gemini_server, "ok")
    conversation_id = conversation_id_of(one_shot(runner, db_path, gemini_server, "Hi"))
    result = run(runner, db_path, "chat", "--id", conversation_id, "--model", "other", "Hi")
    assert result.exit_code == 2
    assert "only apply to a new conversation" in result.stderr
    assert len(events_of(db_path, conversation_id)) == 4


def test_repl_driven_through_stdin(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, api_key: str
) -> None:
    stream_reply(gemini_server, "Hi, ", "human.")
    stream_reply(gemini_server, "Two is ", "the answer.")
    script = "Hello\n\nWhat is 1+1?\n/history\n/rewind\n/history\n/exit\nnever sent\n"

    result = run(
        runner,
        db_path,
        "--actor",
        "alice",
        "chat",
        "--base-url",
        gemini_server.base_url,
        input=script,
    )

    assert result.exit_code == 0, result.output
    conversation_id = conversation_id_of(result)
    assert result.stdout.splitlines() == [
        "Hi, human.",
        "Two is the answer.",
        "user: Hello",  # /history
        "model: Hi, human.",
        "user: What is 1+1?",
        "model: Two is the answer.",
        "Took back the last turn (it stays in the log):",  # /rewind
        "user: What is 1+1?",
        "model: Two is the answer.",
        "user: Hello",  # /history after /rewind
        "model: Hi, human.",
    ]
    assert len(gemini_server.requests) == 2

    events = events_of(db_path, conversation_id)
    assert [e.type for e in events] == [
        "conversation_started",
        *["user_message_added", "model_call_started", "model_responded"] * 2,
        "turn_rewound",
    ]
    assert {e.actor for e in events} == {"alice"}
    with chatledger.Client(store=str(db_path)) as client:
        chat = client.chats.get(conversation_id)
        assert [c.parts[0].text for c in chat.get_history() if c.parts] == ["Hello", "Hi, human."]
    assert_key_nowhere(db_path, result.output)


def test_repl_reports_errors_and_goes_on(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, api_key: str
) -> None:
    gemini_server.reply_error(503, "UNAVAILABLE", "overloaded")
    stream_reply(gemini_server, "Back again.")
    stream_reply(gemini_server, "Slashed.")
    script = "/rewind\n/nonsense\nHello\nHello\n//etc/hosts?\n"  # ends with EOF, no /exit

    result = run(runner, db_path, "chat", "--base-url", gemini_server.base_url, input=script)

    assert result.exit_code == 0, result.output
    assert result.stdout == "Back again.\nSlashed.\n"
    assert gemini_server.requests[-1].body["contents"][-1]["parts"] == [{"text": "/etc/hosts?"}]
    assert "Error: nothing to rewind: no message was sent yet" in result.stderr
    assert "Unknown command /nonsense" in result.stderr
    assert "Error: 503 UNAVAILABLE" in result.stderr
    types = [e.type for e in events_of(db_path, conversation_id_of(result))]
    assert types.count("model_call_failed") == 1 and types.count("model_responded") == 2


def test_default_model_choice() -> None:
    assert default_model({}) == "local"
    assert default_model({"GEMINI_API_KEY": ""}) == "local"
    assert default_model({"GEMINI_API_KEY": "k"}) == "gemini-2.5-flash"
    # Vertex AI (docs/chat-api.md#vertex-ai) serves Gemini models.
    assert default_model({"GOOGLE_GENAI_USE_VERTEXAI": "true"}) == "gemini-2.5-flash"
    assert default_model({"GOOGLE_GENAI_USE_ENTERPRISE": "1"}) == "gemini-2.5-flash"
    assert default_model({"GOOGLE_GENAI_USE_VERTEXAI": "false"}) == "local"
    assert default_model({"GOOGLE_API_KEY": "k"}) == "gemini-2.5-flash"


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """platformdirs pointed at a temporary home: the real user data dir is never touched."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    return home


def test_default_db_is_created_in_the_user_data_dir(runner: CliRunner, data_home: Path) -> None:
    expected = data_home / "xdg-data" / "chatledger" / "chatledger.db"
    assert default_db() == expected
    assert not expected.parent.exists()

    # Reading a log that does not exist yet creates nothing.
    assert json.loads(run(runner, None, "ls", "--json").stdout) == []
    assert not expected.exists()

    # No API key: the offline model; EOF before any message, so the model is never
    # loaded, and the conversation, created with its first message, never recorded.
    result = run(runner, None, "chat", input="")

    assert result.exit_code == 0, result.output
    assert "Chatting with local." in result.stderr
    assert "conversation: " not in result.stderr
    assert expected.is_file()
    assert json.loads(run(runner, None, "ls", "--json").stdout) == []

    fork = run(runner, None, "fork", "nothing-yet")
    assert_expected_error(fork, "no conversation id starts with 'nothing-yet'")


def test_db_option_wins_over_the_environment(
    runner: CliRunner,
    tmp_path: Path,
    gemini_server: GeminiServer,
    api_key: str,
    data_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from_env, from_option = tmp_path / "env.db", tmp_path / "option.db"
    monkeypatch.setenv("CHATLEDGER_DB", str(from_env))
    stream_reply(gemini_server, "to env")
    stream_reply(gemini_server, "to option")

    via_env = run(runner, None, "chat", "--base-url", gemini_server.base_url, "one")
    via_option = run(runner, from_option, "chat", "--base-url", gemini_server.base_url, "two")

    assert via_env.exit_code == via_option.exit_code == 0
    env_ids = [c["conversation_id"] for c in json.loads(run(runner, None, "ls", "--json").stdout)]
    option_ids = [
        c["conversation_id"] for c in json.loads(run(runner, from_option, "ls", "--json").stdout)
    ]
    assert env_ids == [conversation_id_of(via_env)]
    assert option_ids == [conversation_id_of(via_option)]
    assert not (data_home / "xdg-data").exists()  # the default was never used


# --------------------------------------------------------------------------- errors


@pytest.fixture
def two_similar_ids(db_path: Path) -> Iterator[Path]:
    with SQLiteStore(db_path) as store:
        for conversation_id in ("abc-1", "abc-2"):
            store.append(
                conversation_id, [NewEvent(data=ConversationStarted(model="m"))], expected_version=0
            )
    yield db_path


@pytest.mark.parametrize("command", [["show"], ["log"], ["verify"], ["chat", "hi", "--id"]])
def test_ambiguous_and_unknown_ids_are_clear_errors(
    runner: CliRunner, two_similar_ids: Path, command: list[str]
) -> None:
    db = two_similar_ids

    ambiguous = run(runner, db, *command, "abc")
    assert_expected_error(ambiguous, "'abc' is ambiguous", "abc-1", "abc-2", "give more of the id")

    unknown = run(runner, db, *command, "zzz")
    assert_expected_error(unknown, "no conversation id starts with 'zzz'", "chatledger ls")

    exact = run(runner, db, "log", "abc-1")
    assert exact.exit_code == 0 and "conversation_started" in exact.stdout


def test_resolve_prefers_an_exact_id(db_path: Path) -> None:
    with SQLiteStore(db_path) as store:
        for conversation_id in ("abc", "abcd"):
            store.append(
                conversation_id, [NewEvent(data=ConversationStarted(model="m"))], expected_version=0
            )
        assert resolve_conversation_id(store, "abc") == "abc"
        assert resolve_conversation_id(store, "abcd") == "abcd"
        with pytest.raises(chatledger.InvalidInputError):
            resolve_conversation_id(store, " ")


@pytest.mark.parametrize("stream", [True, False])
def test_api_error_is_reported_and_recorded(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, api_key: str, stream: bool
) -> None:
    gemini_server.reply_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded, slow down")
    args = ["chat", "--base-url", gemini_server.base_url, "Hi"]
    result = run(runner, db_path, *args, *([] if stream else ["--no-stream"]))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Traceback" not in result.output
    conversation_id = conversation_id_of(result)
    assert result.stderr.splitlines()[-1].startswith("Error: 429 RESOURCE_EXHAUSTED.")
    assert "Quota exceeded" in result.stderr

    logged = run(runner, db_path, "log", conversation_id[:6])
    failed = logged.stdout.splitlines()[-1]
    assert "model_call_failed" in failed
    assert "ClientError 429 RESOURCE_EXHAUSTED" in failed
    assert [e.type for e in events_of(db_path, conversation_id)][-1] == "model_call_failed"
    shown = run(runner, db_path, "show", conversation_id)
    assert shown.stdout == ""  # failures leave events, not history
    assert_key_nowhere(db_path, result.output, logged.output, gemini_server.requests[0].path)


def test_a_missing_folder_for_db_is_an_expected_error(runner: CliRunner, tmp_path: Path) -> None:
    result = run(runner, tmp_path / "no" / "such" / "dir.db", "ls")
    assert_expected_error(result, "does not exist")


def test_store_errors_are_expected_errors(runner: CliRunner, tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("this is not SQLite " * 100)
    assert_expected_error(run(runner, not_a_db, "ls"), "not a chatledger database")


# --------------------------------------------------------------------------- verify


def test_verify_a_good_log(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, api_key: str
) -> None:
    stream_reply(gemini_server, "Fine.")
    conversation_id = conversation_id_of(one_shot(runner, db_path, gemini_server, "Hello"))

    everything = run(runner, db_path, "verify")
    one = run(runner, db_path, "verify", conversation_id[:5])

    assert everything.exit_code == one.exit_code == 0
    assert everything.stdout.splitlines() == [
        f"Checked 4 events in 1 conversation of sqlite:///{db_path}.",
        "No problems found.",
    ]
    assert one.stdout.startswith("Checked 4 events in 1 conversation")


def test_verify_finds_a_tampered_event(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, api_key: str
) -> None:
    stream_reply(gemini_server, "The truth.")
    conversation_id = conversation_id_of(one_shot(runner, db_path, gemini_server, "Hello"))
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        triggers = [
            row[0]
            for row in conn.execute(
                "SELECT sql FROM sqlite_master WHERE name IN "
                "('events_no_update', 'events_no_delete')"
            )
        ]
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("DROP TRIGGER events_no_delete")
        changed = conn.execute(
            "UPDATE events SET data = replace(data, 'Hello', 'Goodbye') "
            "WHERE conversation_id = ? AND version = 2",
            (conversation_id,),
        ).rowcount
        for trigger in triggers:  # and puts the triggers back (verify checks them)
            conn.execute(trigger)
        conn.commit()
    assert changed == 1

    result = run(runner, db_path, "verify")

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    problems = [line for line in result.stdout.splitlines() if line.startswith("Problem: ")]
    assert len(problems) == 1
    assert f"{conversation_id} v2" in problems[0]
    assert "hash mismatch" in problems[0]
    assert "1 problem found." in result.stderr
    assert run(runner, db_path, "verify", conversation_id).exit_code == 1


# --------------------------------------------------------------------------- help


def walk(command: click.Command, path: Sequence[str] = ()) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path) or "chatledger", command
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            assert sub is not None, name
            yield from walk(sub, (*path, name))


def test_every_command_and_option_has_help(runner: CliRunner) -> None:
    seen = []
    for name, command in walk(cli):
        seen.append(name)
        assert (command.help or "").strip(), f"{name} has no help"
        assert command.get_short_help_str().strip(), f"{name} has no short help"
        for param in command.params:
            if isinstance(param, click.Option):
                assert (param.help or "").strip(), f"{name} {param.opts} has no help"
        args = [] if name == "chatledger" else name.split()
        shown = runner.invoke(cli, [*args, "--help"])
        assert shown.exit_code == 0
        assert "Usage:" in shown.stdout
    # Every registered command was walked (a command added to COMMANDS is checked too).
    assert sorted(seen) == sorted(["chatledger", *COMMANDS])
    assert {"chat", "ls", "show", "log", "verify", "fork", "tree", "diff", "replay"} < set(seen)
    assert {"export", "import"} < set(seen)


DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def doc_sections() -> dict[str, str]:
    """docs/cli.md by second-level heading ("## chat {#chat}" -> "chat")."""
    sections: dict[str, str] = {}
    name = ""
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            name = line[3:].split(" {#")[0].strip()
        sections[name] = sections.get(name, "") + line + "\n"
    return sections


def test_docs_cover_every_command_and_option() -> None:
    """docs/cli.md has a section for every command naming each of its options (or
    links from that section to the page that does)."""
    sections = doc_sections()
    common = sections["Common ground"]
    for name, command in walk(cli):
        if name == "chatledger":
            text = common
        else:
            assert name in sections, f"docs/cli.md has no section for {name}"
            text = sections[name]
            for page in re.findall(r"\]\(([a-z-]+\.md)[#)]", text):
                linked = DOCS.parent / page
                text += linked.read_text(encoding="utf-8") if linked.exists() else ""
        for param in command.params:
            if not isinstance(param, click.Option) or param.name in ("db", "actor"):
                continue
            assert any(opt in text for opt in param.opts), f"docs/cli.md: {name} {param.opts}"
    for option in ("--db", "--actor", "--version", "--help"):
        assert f"`{option}" in common
    assert "| 2 |" in common and "| 1 |" in common  # exit statuses


# --------------------------------------------------------------------------- subprocess


def test_real_process_on_a_real_file(db_path: Path, gemini_server: GeminiServer) -> None:
    env = {**os.environ, "GEMINI_API_KEY": API_KEY, "CHATLEDGER_DB": str(db_path)}
    stream_reply(gemini_server, "From ", "a real process.")

    chatted = cli_process("chat", "--base-url", gemini_server.base_url, "Hello", env=env)

    assert chatted.returncode == 0, chatted.stderr
    assert chatted.stdout == "From a real process.\n"
    conversation_id = chatted.stderr.strip().removeprefix("conversation: ")
    assert chatted.stderr == f"conversation: {conversation_id}\n"

    exported = cli_process("log", "--json", conversation_id[:8], env=env)
    assert exported.returncode == 0, exported.stderr
    assert [json.loads(line)["type"] for line in exported.stdout.splitlines()] == [
        "conversation_started",
        "user_message_added",
        "model_call_started",
        "model_responded",
    ]
    verified = cli_process("verify", env=env)
    assert verified.returncode == 0 and "No problems found." in verified.stdout

    unknown = cli_process("show", "no-such-id", env=env)
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert unknown.stderr.startswith("Error: no conversation id starts with 'no-such-id'")
    assert "Traceback" not in unknown.stderr
    assert_key_nowhere(
        db_path, chatted.stdout, chatted.stderr, exported.stdout, verified.stdout, unknown.stderr
    )


def test_installed_script_runs(db_path: Path) -> None:
    script = Path(sys.executable).parent / "chatledger"
    assert script.exists(), "the chatledger console script is not installed: pip install -e ."
    result = subprocess.run(
        [str(script), "--db", str(db_path), "ls", "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_show_renders_function_calls_and_each_mode(runner: CliRunner, db_path: Path) -> None:
    history: list[dict[str, Any]] = [
        {"role": "user", "parts": [{"text": "What is 2+2?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "add", "args": {"a": 2, "b": 2}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "add", "response": {"result": 4}}}],
        },
        {"role": "model", "parts": [{"text": "It is 4."}]},
        {"role": "user", "parts": [{"text": "Tell me a secret"}]},
        {"role": "model", "parts": []},
    ]
    with chatledger.Client(store=str(db_path)) as client:
        conversation_id = client.chats.create(model="gemini-x", history=history).id

    def show(*mode: str) -> list[str]:
        result = run(runner, db_path, "show", conversation_id, *mode)
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    full = [
        "user: What is 2+2?",
        'model: → add({"a":2,"b":2})',
        'user: ← add: {"result":4}',
        "model: It is 4.",
        "user: Tell me a secret",
        "model: (no parts)",
    ]
    assert show() == full
    assert show("--full") == full
    assert show("--context") == full[:4]
    assert show("--curated") == ["user: What is 2+2?", "model: It is 4."]
    assert json.loads(run(runner, db_path, "show", conversation_id, "--json").stdout) == history
    started = run(runner, db_path, "log", conversation_id).stdout
    assert "model=gemini-x history=6 contents" in started


def test_a_stream_cut_mid_reply_ends_the_line_then_reports(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, api_key: str
) -> None:
    gemini_server.reply_sse(
        [text_response("Half an ", finish_reason=None), text_response("answer")], drop_after=1
    )
    result = run(runner, db_path, "chat", "--base-url", gemini_server.base_url, "Hi")

    assert result.exit_code == 1
    assert result.stdout == "Half an \n"
    assert result.stderr.splitlines()[-1].startswith("Error: ")
    assert "Traceback" not in result.output
    logged = run(runner, db_path, "log", conversation_id_of(result)).stdout.splitlines()
    assert "model_call_failed" in logged[-1] and 'partial="Half an"' in logged[-1]


def test_ls_limit_shows_the_newest(runner: CliRunner, db_path: Path) -> None:
    with chatledger.Client(store=str(db_path)) as client:
        ids = [client.chats.create(model=f"model-{n}").id for n in range(3)]
    listed = json.loads(run(runner, db_path, "ls", "--limit", "2", "--json").stdout)
    assert [c["conversation_id"] for c in listed] == [ids[2], ids[1]]
    assert run(runner, db_path, "ls", "--limit", "0").exit_code == 2
    empty = run(runner, db_path.with_name("empty.db"), "ls")
    assert empty.exit_code == 0 and empty.stdout == "" and "No conversations" in empty.stderr


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (FunctionCalled(turn=2, name="add", args={"a": 1}), 'turn 2: add({"a":1})'),
        (
            FunctionResponded(turn=2, name="add", response={"error": "boom"}, error="boom"),
            'turn 2: add → error "boom"',
        ),
        (
            FunctionResponded(turn=2, name="add", response={"result": 3}),
            'turn 2: add → {"result":3}',
        ),
        (TurnRewound(turn=3), "turn 3 taken back"),
        (TurnAbandoned(turn=4, reason="lease expired"), "turn 4: lease expired"),
        (ConfigChanged(model="other"), "model=other"),
        (HistoryReplaced(history=[]), "history set to 0 contents"),
        (
            ModelCallFailed(
                turn=1, error=ErrorInfo(kind="ModelConnectionError", message="connection reset")
            ),
            "turn 1: ModelConnectionError: connection reset",
        ),
        (UnknownEvent(type="from_the_future", data={"x": 1}), '{"x":1}'),
    ],
)
def test_log_summaries(data: Any, expected: str) -> None:
    event = chatledger.RecordedEvent(
        conversation_id="c",
        version=2,
        position=2,
        event_id="e",
        type=data.type_name or "from_the_future",
        schema_version=1,
        data=data,
        metadata={"actor": "a"},
        recorded_at="2025-01-31T12:00:00.000000Z",
        hash="h",
    )
    assert summarize(event) == expected


def test_odd_stored_responses_are_summarized_as_they_are() -> None:
    odd = ModelResponded(turn=1, response={"candidates": ["not an object"]})
    event = chatledger.RecordedEvent(
        conversation_id="c",
        version=2,
        position=2,
        event_id="e",
        type="model_responded",
        schema_version=1,
        data=odd,
        metadata={},
        recorded_at="2025-01-31T12:00:00Z",
        hash="h",
    )
    assert summarize(event) == '{"turn":1,"response":{"candidates":["not an object"]}}'
