"""The ``chatledger`` command line on PostgreSQL: ``--db postgresql://...`` and
``CHATLEDGER_DB`` work as they do for a SQLite file, on conversations written through
the library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

import chatledger
from chatledger.cli import cli
from chatledger.client.transports.scripted import ScriptedTransport, text_response
from chatledger.errors import mask_url_password
from chatledger.events import ConversationStarted, NewEvent
from chatledger.events.postgres import PostgresStore
from tests.faults import ledger
from tests.support.postgres import connect, scratch_database

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with scratch_database("chatledger_cli") as url:
        yield url


@pytest.fixture
def url(database_url: str) -> str:
    """A schema of this test's own, named in the URL as the CLI user would."""
    return f"{database_url}?schema=cli_{uuid.uuid4().hex[:10]}"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def write_conversation(url: str) -> str:
    transport = ScriptedTransport()
    transport.enqueue(text_response("Hello from PostgreSQL ✓", usage={"totalTokenCount": 12}))
    transport.enqueue("Second answer.")
    with chatledger.Client(store=url, transport=transport, actor="writer") as client:
        chat = client.chats.create(
            model="gemini-2.5-flash", config={"system_instruction": "Be brief."}
        )
        chat.send_message("Hi, model")
        chat.send_message("Again")
        return chat.id


def test_ls_show_log_verify_on_postgres(url: str) -> None:
    cid = write_conversation(url)
    with PostgresStore(url) as store:
        location = store.location
        events = store.read(cid)

    listed = run("--db", url, "ls")
    assert listed.exit_code == 0, listed.output
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "MODEL", "TURNS", "UPDATED"]
    assert row.split()[:3] == [cid, "gemini-2.5-flash", "2"]
    assert [c["conversation_id"] for c in json.loads(run("--db", url, "ls", "--json").stdout)] == [
        cid
    ]

    shown = run("--db", url, "show", cid[:8])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == (
        "user: Hi, model\nmodel: Hello from PostgreSQL ✓\nuser: Again\nmodel: Second answer.\n"
    )

    logged = run("--db", url, "log", cid)
    assert logged.exit_code == 0, logged.output
    lines = logged.stdout.splitlines()
    assert [int(line.split()[0]) for line in lines] == [e.version for e in events]
    assert [line.split()[3] for line in lines] == [e.type for e in events]
    assert {line.split()[2] for line in lines} == {"writer"}
    exported = [
        json.loads(line) for line in run("--db", url, "log", cid, "--json").stdout.splitlines()
    ]
    assert exported == [e.to_export() for e in events]

    verified = run("--db", url, "verify")
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.splitlines() == [
        # The location as the command line prints it: a lone user name may be a token.
        f"Checked {len(events)} events in 1 conversation of {mask_url_password(location)}.",
        "No problems found.",
    ]
    assert run("--db", url, "verify", cid[:6]).exit_code == 0


def test_verify_finds_an_event_changed_behind_the_library(url: str) -> None:
    cid = write_conversation(url)
    schema = url.rsplit("schema=", 1)[1]
    with connect(url.split("?")[0]) as conn:
        conn.execute(f"ALTER TABLE {schema}.events DISABLE TRIGGER events_no_update_or_delete")
        changed = conn.execute(
            f"UPDATE {schema}.events SET data = replace(data, 'Hi, model', 'Bye, model') "
            "WHERE conversation_id = %s AND version = 2",
            (cid,),
        ).rowcount
        # ... and enables it again (verify checks the triggers too).
        conn.execute(f"ALTER TABLE {schema}.events ENABLE TRIGGER events_no_update_or_delete")
    assert changed == 1
    result = run("--db", url, "verify")
    assert result.exit_code == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("Problem: ")]
    assert len(problems) == 1
    assert f"{cid} v2" in problems[0] and "hash mismatch" in problems[0]


def test_an_unreachable_server_is_an_error_message_not_a_traceback() -> None:
    result = CliRunner().invoke(
        cli, ["--db", "postgresql://postgres:pw-never-shown@127.0.0.1:1/chats", "ls"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:1/chats"
    )
    assert "Traceback" not in result.output
    assert "pw-never-shown" not in result.output


def test_chatledger_db_names_the_postgres_store_for_a_real_process(url: str) -> None:
    cid = write_conversation(url)
    env = {**os.environ, "CHATLEDGER_DB": url}
    result = subprocess.run(
        [sys.executable, "-m", "chatledger.cli", "ls", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert [c["conversation_id"] for c in json.loads(result.stdout)] == [cid]


def test_the_cli_hardening_holds_on_postgres(url: str) -> None:
    """Issue 13's smaller items where the store takes part, on PostgreSQL: a message
    that cannot be sent creates no conversation; an exact id wins over another's prefix
    and ``tree`` shows an id that leads back; an export that cannot be written is an
    error, not a traceback (docs/security.md)."""
    real = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
    with PostgresStore(url) as store:
        for cid, model in ((real, "real"), (real[:8], "impostor")):
            started = NewEvent(data=ConversationStarted(model=model))
            store.append(cid, [started], expected_version=0)
        before = [(e.conversation_id, e.version) for e in store.read_all(limit=100)]

    bad = CliRunner().invoke(cli, ["--db", url, "chat", "bad \udcff"])
    assert bad.exit_code == 1 and "MESSAGE is not valid UTF-8 text" in bad.output
    assert "Traceback" not in bad.output

    assert "model=impostor" in run("--db", url, "log", real[:8]).output
    tree = run("--db", url, "tree", real)
    label = tree.output.split()[0]
    assert label == real[:9] and "model=real" in run("--db", url, "log", label).output

    missing = CliRunner().invoke(cli, ["--db", url, "export", real, "-o", "/missing/dir/x"])
    assert missing.exit_code == 1 and missing.output.startswith("Error: ")
    assert "Traceback" not in missing.output
    with PostgresStore(url) as store:
        assert [(e.conversation_id, e.version) for e in store.read_all(limit=100)] == before
    ledger.record("cli", "hardening/postgres", faults=4)
