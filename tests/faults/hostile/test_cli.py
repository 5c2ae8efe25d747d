"""Hostile input through the command line: random and known-nasty values in every
argument of every command, and random bytes on stdin.

Each run must end as a command ends: success, ``Error: ...`` (status 1) or a usage error
(status 2), never a traceback. A refused run, and any run of a reading command, leaves
the log byte for byte as it was. Whatever the command prints for a person carries no raw
control character (the hostile values come back from the model server too, so this
checks the escaping of every command's output), except in click's own usage errors,
which only quote what the person typed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import chatledger
from chatledger.cli import cli
from chatledger.events import SQLiteStore
from tests.conftest import API_KEY
from tests.faults import ledger
from tests.faults.hostile.support import (
    ANY_CHARS,
    HOSTILE_TEXT,
    HYPOTHESIS,
    MODEL,
    Tally,
    clear_replies,
    file_digest,
    log_state,
)
from tests.support.gemini_server import GeminiServer

_CONTROL = re.compile("[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]")

Template = Callable[[str, str, str], list[str]]

# (name, writes when it succeeds, argv from (value, an id in the log, the server's URL))
TEMPLATES: list[tuple[str, bool, Template]] = [
    ("chat MESSAGE", True, lambda v, i, u: ["chat", "--no-stream", "--base-url", u, "--", v]),
    ("chat -s", True, lambda v, i, u: ["chat", "--no-stream", "--base-url", u, "-s", v, "hi"]),
    ("chat -m", True, lambda v, i, u: ["chat", "--no-stream", "--base-url", u, "-m", v, "hi"]),
    ("chat --id", True, lambda v, i, u: ["chat", "--no-stream", "--base-url", u, "--id", v, "x"]),
    (
        "chat --actor",
        True,
        lambda v, i, u: ["chat", "--no-stream", "--base-url", u, "--actor", v, "x"],
    ),
    (
        "chat --base-url",
        True,
        lambda v, i, u: ["chat", "--no-stream", "--base-url", f"{u}/{v}", "x"],
    ),
    ("chat -a", True, lambda v, i, u: ["chat", "--no-stream", "--base-url", u, "-a", v, "x"]),
    ("show", False, lambda v, i, u: ["show", "--", v]),
    ("log", False, lambda v, i, u: ["log", "--json", "--", v]),
    ("tree", False, lambda v, i, u: ["tree", "--", v]),
    ("diff", False, lambda v, i, u: ["diff", "--", i, v]),
    ("verify", False, lambda v, i, u: ["verify", "--", v]),
    ("export", False, lambda v, i, u: ["export", "--", v]),
    ("replay", False, lambda v, i, u: ["replay", "--", v]),
    ("fork ID", True, lambda v, i, u: ["fork", "--", v]),
    ("fork --at", True, lambda v, i, u: ["fork", i, "--at", v]),
    ("fork -m", True, lambda v, i, u: ["fork", i, "-m", v]),
    ("import", True, lambda v, i, u: ["import", v]),
    ("ls --db", False, lambda v, i, u: ["ls", "--db", v]),
]


def test_random_arguments_to_every_command(
    gemini_server: GeminiServer, db_path: Path, tmp_path: Path
) -> None:
    tally = Tally()
    with chatledger.Client(
        api_key=API_KEY, http_options={"base_url": gemini_server.base_url}, store=str(db_path)
    ) as client:
        gemini_server.reply_text("a first answer \x1b[2J")
        chat = client.chats.create(model=MODEL)
        chat.send_message("a first question")
        target = chat.id
    home = tmp_path / "home"  # a default log, should a value pick it, is never the user's
    runner = CliRunner(
        env={"GEMINI_API_KEY": API_KEY, "HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    )
    reads = {name for name, writes, _ in TEMPLATES if not writes}

    @settings(HYPOTHESIS, max_examples=ledger.scale(80, 800))
    @given(
        value=st.one_of(HOSTILE_TEXT, st.text(ANY_CHARS, min_size=1, max_size=40)),
        template=st.sampled_from(TEMPLATES),
        piped=st.one_of(st.none(), st.binary(max_size=64)),
    )
    def one(value: str, template: tuple[str, bool, Template], piped: bytes | None) -> None:
        tally.inputs += 1
        name, _writes, build = template
        clear_replies(gemini_server)
        gemini_server.reply_echo()  # the value comes back in the reply
        with SQLiteStore(db_path) as store:
            before = log_state(store, db_path)
        args = ["--db", str(db_path), *build(value, target, gemini_server.base_url)]
        result = runner.invoke(cli, args, input=piped, catch_exceptions=True)
        tally.note(None if result.exit_code == 0 else SystemExit(result.exit_code))
        what = f"{name} {value!r:.80} (stdin {piped!r:.40})"
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        tally.check(not crashed, f"{what}: {result.exception!r:.300}")
        tally.check(result.exit_code in (0, 1, 2), f"{what}: exit {result.exit_code}")
        tally.check("Traceback" not in result.output, f"{what}: a traceback")
        if result.exit_code != 2:
            raw = _CONTROL.search(result.stdout + result.stderr)
            tally.check(raw is None, f"{what}: a raw control character in {result.output!r:.300}")
        if result.exit_code != 0 or name in reads:
            with SQLiteStore(db_path) as store:
                after = log_state(store, db_path)
            tally.check(before == after, f"{what}: the log changed (exit {result.exit_code})")

    one()
    with SQLiteStore(db_path) as store:
        assert store.verify().ok
    assert file_digest(db_path)  # the file is still there, and a SQLite file
    tally.record("the CLI/random arguments and stdin")
