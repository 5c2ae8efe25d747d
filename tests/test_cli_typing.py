"""The command line as people type it (issue 17, section 5): ``--db`` and ``--actor``
after the command's name, ``chat -c`` to go on with the last conversation, text piped on
stdin, ``-a FILE`` attachments, and ``show`` ending its output with a newline. Through
click's runner and through real processes, on real SQLite files and the loopback
Gemini server."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

import chatledger
from chatledger.cli._inputs import MAX_INPUT_BYTES, attachment_type
from chatledger.events import SQLiteStore
from tests.cli_support import (
    API_KEY,
    assert_expected_error,
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
from tests.support.gemini_server import GeminiServer, text_response


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    return CliRunner()


def sent_parts(server: GeminiServer, index: int = -1) -> list[dict[str, object]]:
    """The parts of the last content of a request the server received."""
    parts: list[dict[str, object]] = server.requests[index].body["contents"][-1]["parts"]
    return parts


# --------------------------------------------------------------------------- --db and --actor


def test_db_and_actor_after_the_command(
    runner: CliRunner, tmp_path: Path, gemini_server: GeminiServer
) -> None:
    db = tmp_path / "after.db"
    stream_reply(gemini_server, "Placed.")
    chatted = run(
        runner,
        None,
        "chat",
        "--base-url",
        gemini_server.base_url,
        "hi",
        "--db",
        str(db),
        "--actor",
        "bob",
    )
    assert chatted.exit_code == 0, chatted.output
    cid = conversation_id_of(chatted)
    assert {event.actor for event in events_of(db, cid)} == {"bob"}

    for args in (["ls", "--db", str(db)], ["ls", "--json", "--db", str(db)]):
        listed = run(runner, None, *args)
        assert listed.exit_code == 0, listed.output
        assert cid in listed.stdout
    shown = run(runner, None, "show", cid[:8], "--db", str(db))
    assert shown.stdout == "user: hi\nmodel: Placed.\n"


def test_the_db_after_the_command_wins(
    runner: CliRunner, tmp_path: Path, gemini_server: GeminiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, after, from_env = tmp_path / "before.db", tmp_path / "after.db", tmp_path / "env.db"
    monkeypatch.setenv("CHATLEDGER_DB", str(from_env))
    stream_reply(gemini_server, "one")
    stream_reply(gemini_server, "two")
    first = run(
        runner, before, "chat", "--base-url", gemini_server.base_url, "one", "--db", str(after)
    )
    second = run(
        runner, None, "chat", "--base-url", gemini_server.base_url, "two", "--db", str(after)
    )
    assert first.exit_code == second.exit_code == 0
    assert len(conversations_in(after)) == 2
    assert not before.exists() and not from_env.exists()


def test_db_after_the_command_in_a_real_process(
    tmp_path: Path, gemini_server: GeminiServer
) -> None:
    db = tmp_path / "real.db"
    env = process_env(GEMINI_API_KEY=API_KEY)
    stream_reply(gemini_server, "Real.")
    chatted = cli_process(
        "chat", "hello", "--base-url", gemini_server.base_url, "--db", str(db), env=env
    )
    assert chatted.returncode == 0, chatted.stderr
    listed = cli_process("ls", "--json", "--db", str(db), env=env)
    assert [c["conversation_id"] for c in json.loads(listed.stdout)] == [
        conversation_id_of(chatted)
    ]


# --------------------------------------------------------------------------- chat -c


def test_continue_goes_on_with_the_most_recently_updated_conversation(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer
) -> None:
    for text in ("first", "second", "first again"):
        stream_reply(gemini_server, f"re: {text}")
    first = conversation_id_of(one_shot(runner, db_path, gemini_server, "first"))
    second = conversation_id_of(one_shot(runner, db_path, gemini_server, "second"))
    one_shot(runner, db_path, gemini_server, "first again", "--id", first)

    stream_reply(gemini_server, "continued")
    result = one_shot(runner, db_path, gemini_server, "and then?", "-c")
    assert conversation_id_of(result) == first != second
    assert [c["parts"][0]["text"] for c in gemini_server.requests[-1].body["contents"]] == [
        "first",
        "re: first",
        "first again",
        "re: first again",
        "and then?",
    ]

    gemini_server.reply_text("still")
    again = one_shot(runner, db_path, gemini_server, "more", "--continue", "--no-stream")
    assert conversation_id_of(again) == first


def test_continue_with_nothing_to_continue(runner: CliRunner, db_path: Path) -> None:
    SQLiteStore(db_path).close()  # an empty log
    result = run(runner, db_path, "chat", "-c", "hello")
    assert_expected_error(result, "there is no conversation to continue", "chatledger chat MESSAGE")
    assert conversations_in(db_path) == []


def test_continue_and_model_do_not_mix(runner: CliRunner, db_path: Path) -> None:
    result = run(runner, db_path, "chat", "-c", "-m", "other", "hello")
    assert result.exit_code == 2 and "only apply to a new conversation" in result.stderr


# --------------------------------------------------------------------------- stdin


def test_text_piped_on_stdin_is_sent_with_the_message(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer
) -> None:
    stream_reply(gemini_server, "A summary.")
    notes = "Line one of the notes.\nLine two: café.\n"
    result = run(
        runner, db_path, "chat", "--base-url", gemini_server.base_url, "Summarise.", input=notes
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "A summary.\n"
    assert sent_parts(gemini_server) == [{"text": notes}, {"text": "Summarise."}]
    shown = run(runner, db_path, "show", conversation_id_of(result), "--json")
    assert json.loads(shown.stdout)[0]["parts"] == [{"text": notes}, {"text": "Summarise."}]


def test_cat_into_a_real_process(tmp_path: Path, gemini_server: GeminiServer) -> None:
    db = tmp_path / "piped.db"
    stream_reply(gemini_server, "Piped.")
    done = cli_process(
        "--db",
        str(db),
        "chat",
        "--base-url",
        gemini_server.base_url,
        "summarise",
        env=process_env(GEMINI_API_KEY=API_KEY),
        stdin="\ufeffnotes from a file\n",  # a byte order mark is not part of the text
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Piped.\n"
    assert sent_parts(gemini_server) == [{"text": "notes from a file\n"}, {"text": "summarise"}]


def test_empty_stdin_adds_nothing(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer
) -> None:
    stream_reply(gemini_server, "ok")
    result = run(runner, db_path, "chat", "--base-url", gemini_server.base_url, "hi", input=" \n")
    assert result.exit_code == 0
    assert sent_parts(gemini_server) == [{"text": "hi"}]


@pytest.mark.parametrize(
    ("piped", "message"),
    [
        (b"caf\xe9 latin-1\n", "the text piped on stdin is not UTF-8 (byte 0xe9 at offset 3)"),
        (b"x" * (MAX_INPUT_BYTES + 1), "over the limit of 15,728,640 bytes"),
    ],
    ids=["not-utf8", "too-large"],
)
def test_stdin_that_cannot_be_sent_writes_nothing(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, piped: bytes, message: str
) -> None:
    SQLiteStore(db_path).close()
    before = file_state(db_path)
    result = run(runner, db_path, "chat", "--base-url", gemini_server.base_url, "hi", input=piped)
    assert_expected_error(result, message)
    assert file_state(db_path) == before
    assert gemini_server.requests == []


# --------------------------------------------------------------------------- attachments


def image_bytes(image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 30, 90)).save(buffer, image_format)
    return buffer.getvalue()


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


@pytest.mark.parametrize(
    ("name", "data", "mime_type"),
    [
        ("photo.png", image_bytes("PNG"), "image/png"),
        ("photo.jpg", image_bytes("JPEG"), "image/jpeg"),
        ("photo.webp", image_bytes("WEBP"), "image/webp"),
        ("named-wrongly.txt", image_bytes("PNG"), "image/png"),  # the bytes decide
        ("paper.pdf", PDF, "application/pdf"),
    ],
)
def test_attach_sends_inline_data(
    runner: CliRunner,
    db_path: Path,
    gemini_server: GeminiServer,
    tmp_path: Path,
    name: str,
    data: bytes,
    mime_type: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    stream_reply(gemini_server, "I see it.")
    result = one_shot(runner, db_path, gemini_server, "What is this?", "-a", str(path))
    assert result.stdout == "I see it.\n"
    inline, text = sent_parts(gemini_server)
    assert text == {"text": "What is this?"}
    assert inline["inlineData"]["mimeType"] == mime_type  # type: ignore[index]
    assert base64.urlsafe_b64decode(inline["inlineData"]["data"]) == data  # type: ignore[index]
    shown = run(runner, db_path, "show", conversation_id_of(result))
    assert shown.stdout.startswith(f"user: [inline data {mime_type}, about ")


def test_several_attachments_and_stdin_together(
    runner: CliRunner, db_path: Path, gemini_server: GeminiServer, tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes("PNG"))
    (tmp_path / "b.pdf").write_bytes(PDF)
    stream_reply(gemini_server, "Both.")
    args = ["-a", str(tmp_path / "a.png"), "--attach", str(tmp_path / "b.pdf")]
    result = run(
        runner,
        db_path,
        "chat",
        "--base-url",
        gemini_server.base_url,
        *args,
        "Compare.",
        input="context\n",
    )
    assert result.exit_code == 0, result.output
    parts = sent_parts(gemini_server)
    assert [next(iter(part)) for part in parts] == ["text", "inlineData", "inlineData", "text"]
    assert parts[0] == {"text": "context\n"} and parts[-1] == {"text": "Compare."}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"just some notes\n", "is not an image or PDF this command can attach (PNG, JPEG"),
        (b"GIF89a" + b"\x00" * 20, "is not an image or PDF this command can attach"),
        (None, "cannot read the attachment"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * MAX_INPUT_BYTES, "over the limit of 15,728,640"),
    ],
    ids=["text", "gif", "missing", "too-large"],
)
def test_an_attachment_that_cannot_be_sent_writes_nothing(
    runner: CliRunner,
    db_path: Path,
    gemini_server: GeminiServer,
    tmp_path: Path,
    content: bytes | None,
    message: str,
) -> None:
    SQLiteStore(db_path).close()
    before = file_state(db_path)
    path = tmp_path / "attachment.bin"
    if content is not None:
        path.write_bytes(content)
    result = run(
        runner, db_path, "chat", "--base-url", gemini_server.base_url, "-a", str(path), "hi"
    )
    assert_expected_error(result, message)
    assert file_state(db_path) == before
    assert gemini_server.requests == []


def test_attachment_types_from_their_first_bytes() -> None:
    assert attachment_type(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 8) == "image/heic"
    assert attachment_type(b"\x00\x00\x00\x18ftypmif1" + b"\x00" * 8) == "image/heif"
    assert attachment_type(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 8) is None  # a video
    assert attachment_type(b"RIFF\x00\x00\x00\x00WAVE") is None  # a sound
    assert attachment_type(b"") is None


# --------------------------------------------------------------------------- show


def test_show_ends_its_output_with_a_newline(
    runner: CliRunner, tmp_path: Path, gemini_server: GeminiServer
) -> None:
    db = tmp_path / "shapes.db"
    shapes = [
        text_response("no newline at the end"),
        text_response("ends with a newline\n"),
        text_response(None, parts=[]),  # an empty reply
        text_response(None, parts=[{"functionCall": {"name": "f", "args": {}}}]),
        text_response(None, parts=[{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]),
        text_response("a cursor move \x1b[1A at the end \x1b[K"),
    ]
    client = chatledger.Client(
        api_key=API_KEY, http_options={"base_url": gemini_server.base_url}, store=str(db)
    )
    ids = []
    for shape in shapes:  # each shape last in a conversation of its own
        gemini_server.reply_sse([shape])
        chat = client.chats.create(model="gemini-2.5-flash")
        list(chat.send_message_stream("hi"))
        ids.append(chat.id)
    client.close()
    for cid in ids:
        shown = cli_process("--db", str(db), "show", cid, env=process_env())
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.endswith("\n") and shown.stdout.count("\n") >= 2, shown.stdout
        for mode in ("--curated", "--context", "--json"):
            other = run(runner, db, "show", cid, mode)
            # Something, ending with a newline; or nothing (an empty history, said on stderr).
            assert other.stdout.endswith("\n") or (other.stdout == "" and other.stderr)
