"""Hostile input from catalogues of known-nasty values: lone surrogates and invalid
UTF-8, control characters and NULs, SQL-looking ids, actors and names."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import chatledger
from chatledger import legacy
from chatledger.cli import cli
from chatledger.errors import InvalidResponseError
from chatledger.events import NewEvent, SQLiteStore, TurnAbandoned
from chatledger.events.audit import export_conversation, import_lines
from chatledger.types import Part
from tests.faults.hostile.support import (
    MODEL,
    NASTY_STRINGS,
    SQL,
    Tally,
    all_events,
    clear_replies,
    log_state,
    outcome,
    reopen,
    stdlib_verifies,
    wires,
)
from tests.support.gemini_server import GeminiServer, text_response
from tests.support.narrow import text_of

# --------------------------------------------------------------------------- (a) catalogues


def surrogate_actions(
    client: chatledger.Client, chat: chatledger.Chat
) -> list[tuple[str, Callable[[], Any]]]:
    lone = "\ud800"
    escaped = os.fsdecode(b"\xff")  # how a shell's invalid UTF-8 reaches Python: "\udcff"
    session = legacy.GenerativeModel(MODEL, client=client).start_chat()
    return [
        ("text message", lambda: chat.send_message(lone)),
        ("shell bytes message", lambda: chat.send_message(escaped)),
        ("list message", lambda: chat.send_message(["ok", escaped])),
        ("Part text", lambda: chat.send_message(Part(text=lone))),
        (
            "Part function name",
            lambda: chat.send_message(Part.from_function_call(name=lone, args={})),
        ),
        (
            "Part function args",
            lambda: chat.send_message(Part.from_function_call(name="f", args={"k": lone})),
        ),
        (
            "Part function arg key",
            lambda: chat.send_message(Part.from_function_call(name="f", args={lone: 1})),
        ),
        ("stream message", lambda: list(chat.send_message_stream(lone))),
        ("bytes message", lambda: chat.send_message(b"\xff\xfe")),  # type: ignore[arg-type]
        (
            "system instruction",
            lambda: chat.send_message("ok", config={"system_instruction": lone}),
        ),
        ("labels", lambda: chat.send_message("ok", config={"labels": {"k": lone}})),
        (
            "history",
            lambda: client.chats.create(
                model=MODEL, history=[{"role": "user", "parts": [{"text": lone}]}]
            ),
        ),
        ("model name", lambda: client.chats.create(model=lone)),
        ("shell model name", lambda: client.chats.create(model=escaped)),
        ("fork model name", lambda: chat.fork(model=lone)),
        (
            "declared function name",
            lambda: client.chats.create(
                model=MODEL, config={"tools": [{"function_declarations": [{"name": lone}]}]}
            ),
        ),
        ("conversation id", lambda: client.chats.get(lone)),
        ("shell conversation id", lambda: client.chats.get(escaped)),
        ("tree id", lambda: client.chats.tree(escaped)),
        ("actor", lambda: chatledger.Client(store=client.store, actor=lone)),
        ("acting_as", lambda: chatledger.acting_as(lone).__enter__()),
        ("legacy model", lambda: legacy.GenerativeModel(lone, client=client).start_chat()),
        ("legacy content", lambda: session.send_message({"parts": [lone]})),
    ]


def test_lone_surrogates_and_invalid_utf8_cannot_poison_the_log(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path
) -> None:
    """A lone surrogate (what invalid UTF-8 becomes in Python) anywhere: a clear error and
    no change, or a correct result; the log always verifies, with chatledger and with the
    standard-library verifier, and every export stays valid UTF-8 JSON."""
    tally = Tally()
    chat = hostile.chats.create(model=MODEL)
    for what, action in surrogate_actions(hostile, chat):
        tally.inputs += 1
        clear_replies(gemini_server)
        gemini_server.reply_echo()
        before = log_state(hostile.store, db_path)
        _, error = outcome(action)
        tally.refused(error, before, log_state(hostile.store, db_path), what)
    # A lone surrogate escape in a model's answer is not valid JSON text: refused, recorded.
    tally.inputs += 1
    clear_replies(gemini_server)
    gemini_server.reply_raw(
        b'{"candidates":[{"content":{"role":"model","parts":[{"text":"\\ud800"}]}}]}',
        content_type="application/json",
    )
    _, error = outcome(lambda: chat.send_message("hi"))
    tally.check(isinstance(error, InvalidResponseError), f"server surrogate: {error!r}")
    tally.check(chat.get_history() == [], "the history changed")
    # The CLI, given an id that is not UTF-8 by the shell.
    runner = CliRunner()
    for command in (["show"], ["log"], ["export"], ["fork"], ["tree"], ["verify"]):
        tally.inputs += 1
        result = runner.invoke(cli, ["--db", str(db_path), *command, os.fsdecode(b"\xff\xfe")])
        tally.check(
            result.exit_code == 1 and isinstance(result.exception, SystemExit),
            f"{command}: {result.output!r:.300} {result.exception!r}",
        )
        tally.check("Error:" in result.output, f"{command}: {result.output!r:.300}")
    tally.check(hostile.store.verify().ok, "the log does not verify")
    tally.check(stdlib_verifies(hostile.store, chat.id), "the standard-library verifier disagrees")
    for line in export_conversation(hostile.store, chat.id):
        line.encode("utf-8")  # strict: no surrogate reached an export
    tally.record("lone surrogates/invalid UTF-8 everywhere")


CONTROL_TEXTS = [
    s for s in NASTY_STRINGS if s and "\ud800" not in s and "\udcff" not in s and "\udfff" not in s
]


def test_control_characters_nuls_and_sql_round_trip_exactly(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path, tmp_path: Path
) -> None:
    """NULs, escapes, control characters, BOMs, bidi overrides and SQL-looking text in
    messages, histories, system instructions, labels, model names, function names and
    actors are data: stored, sent and read back byte for byte, through the log, an
    export, an import and the CLI; and the SQL never runs."""
    tally = Tally()
    chats: list[chatledger.Chat] = []
    for text in CONTROL_TEXTS:
        tally.inputs += 1
        clear_replies(gemini_server)
        with (
            chatledger.acting_as(text)
            if text.isprintable() and len(text) <= 200
            else contextlib.nullcontext()
        ):
            chat = hostile.chats.create(
                model=text
                if text.strip()
                and text.isprintable()
                and len(text) <= 500
                and not any(c in text for c in ("..", "?", "&", "#"))
                else MODEL,
                history=[
                    {"role": "user", "parts": [{"text": text}]},
                    {"role": "model", "parts": [{"text": text}]},
                ],
                config={
                    "system_instruction": text or "x",
                    "labels": {text: text},
                    "tools": [
                        {"function_declarations": [{"name": text or "f", "description": text}]}
                    ],
                },
            )
            gemini_server.reply_echo()
            gemini_server.reply_sse([text_response(text, finish_reason=None), text_response(text)])
            chat.send_message(
                [text or "x", Part.from_function_call(name=text or "f", args={text: text})]
            )
            list(chat.send_message_stream(text or "x"))
        chats.append(chat)
        request = gemini_server.requests[-2].body
        tally.check(
            request["contents"][-1]["parts"][0]["text"] == (text or "x"),
            f"{text!r}: the request changed the text",
        )
        tally.check(
            request["systemInstruction"]["parts"][0]["text"] == (text or "x"),
            f"{text!r}: system instruction changed",
        )
        tally.check(request["labels"] == {text: text}, f"{text!r}: labels changed")
        again = reopen(hostile, chat.id)
        tally.check(
            wires(again.get_history()) == wires(chat.get_history()),
            f"{text!r}: reads back differently",
        )
        tally.check(
            text_of(again.get_history()[-1]) == text + text,
            f"{text!r}: the streamed reply changed",
        )
    tally.check(hostile.store.verify().ok, "the log does not verify")
    with sqlite3.connect(db_path) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        tally.check({"events", "streams", "snapshots"} <= tables, f"tables went missing: {tables}")
    # Export, import into a new store, and the CLI's JSON views, byte for byte.
    with SQLiteStore(tmp_path / "copy.db") as copy:
        for chat in chats:
            import_lines(copy, list(export_conversation(hostile.store, chat.id)))
        tally.check(copy.verify().ok, "the copy does not verify")
        for chat in chats:
            tally.check(
                [e.hash for e in copy.read(chat.id)] == [e.hash for e in chat.events()],
                "the import changed events",
            )
    runner = CliRunner()
    for chat in chats[:8]:
        result = runner.invoke(cli, ["--db", str(db_path), "show", chat.id, "--json"])
        tally.check(result.exit_code == 0, result.output)
        tally.check(json.loads(result.stdout) == wires(chat.get_history()), "show --json differs")
        result = runner.invoke(cli, ["--db", str(db_path), "log", chat.id, "--json"])
        tally.check(result.exit_code == 0, result.output)
        tally.check(
            [json.loads(line)["hash"] for line in result.stdout.splitlines()]
            == [e.hash for e in chat.events()],
            "log --json differs",
        )
    tally.record("control characters, NULs, SQL/round trip")


def test_sql_looking_ids_actors_and_names(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path
) -> None:
    """SQL in a conversation id (API and CLI), a parent id, an actor, a model name, an
    event id and a function name: not found, or stored as data; never executed."""
    tally = Tally()
    payloads = [
        SQL,
        "' OR '1'='1",
        '" OR ""="',
        "1; DELETE FROM streams",
        "x') UNION SELECT * FROM events --",
        "%",
        "_",
    ]
    runner = CliRunner()
    for payload in payloads:
        before = log_state(hostile.store, db_path)
        for what, action in (
            ("chats.get", lambda p=payload: hostile.chats.get(p)),
            ("chats.tree", lambda p=payload: hostile.chats.tree(p)),
            ("read", lambda p=payload: hostile.store.read(p)),
            ("stream_info", lambda p=payload: hostile.store.stream_info(p)),
        ):
            tally.inputs += 1
            result, error = outcome(action)
            tally.check(
                result in ([], None) or isinstance(error, chatledger.NotFoundError),
                f"{what}({payload!r}): {result!r} {error!r}",
            )
        tally.check(hostile.chats.list(parent_id=payload) == [], f"list({payload!r})")
        for command in ("show", "log", "export", "fork", "tree", "verify"):
            tally.inputs += 1
            result = runner.invoke(cli, ["--db", str(db_path), command, payload])
            tally.check(
                result.exit_code == 1 and "Error:" in result.output,
                f"{command} {payload!r}: {result.output!r}",
            )
        tally.check(log_state(hostile.store, db_path) == before, f"{payload!r}: the log changed")
        # As data: an actor, a model name, a function name, an event id.
        tally.inputs += 1
        with chatledger.acting_as(payload):
            stored = hostile.chats.create(
                model=payload, config={"tools": [{"function_declarations": [{"name": payload}]}]}
            )
        gemini_server.reply_echo()
        stored.send_message(Part.from_function_call(name=payload, args={payload: payload}))
        tally.check(all(e.actor == payload for e in stored.events()[:1]), "the actor changed")
        hostile.store.append(
            stored.id,
            [
                NewEvent(
                    data=TurnAbandoned(turn=99, reason=payload), event_id=payload + stored.id[:8]
                )
            ],
            expected_version=len(stored.events()),
        )
        tally.check(
            hostile.store.read(stored.id)[-1].event_id == payload + stored.id[:8],
            "the event id changed",
        )
    tally.check(hostile.store.verify().ok, "the log does not verify")
    with sqlite3.connect(db_path) as conn:
        counted = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    tally.check(counted == len(all_events(hostile.store)), "rows went missing")
    tally.record("SQL-looking ids, actors, names")
