"""Store faults, **not a database**: text, binary, a chatledger export, another program's
database, a folder; an empty file is a new, empty log (SQLite's rule; see the test).

What every store fault test measures, and how: :mod:`tests.faults.store_faults`.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatledger.cli import cli
from chatledger.errors import NotFoundError, StoreUnavailableError
from chatledger.events import SQLiteStore
from tests.faults import ledger
from tests.faults.store_faults import (
    AREA,
    Tally,
    Template,
    make_client_without_server,
    mentions_path,
    one_line_error,
    template_fixture,  # noqa: F401 (the fixture "template")
)


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
