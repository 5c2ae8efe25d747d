"""SIGKILL inside every kind of write, on SQLite and PostgreSQL: nothing lost, nothing
half-written, and the conversation goes on (the harness is :mod:`tests.faults.crash`).

In the normal suite a few kill points per operation run; ``make faults`` runs 200 each.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import chatledger
from tests.faults import ledger
from tests.faults.crash import (
    API_KEY,
    MODEL,
    OPERATIONS,
    CrashReport,
    ModelServer,
    _check_after_kill,
    check_continued_replies,
    check_request,
    crash_operation,
)
from tests.support.postgres import scratch_database

KILL_POINTS = ledger.scale(fast=4, full=200)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with scratch_database("chatledger_crash") as url:
        yield url


def _run(store: str, kind: str, operation: str, workdir: Path) -> None:
    report = crash_operation(store, kind, operation, KILL_POINTS, workdir, progress=print)
    ledger.record(
        "crashes",
        f"{operation}/{kind}",
        kill_points=report.kill_points,
        events_lost=report.events_lost,
        invariants_broken=report.invariants_broken,
    )
    assert report.failures == [], "\n".join(report.failures)
    assert report.events_lost == 0
    assert report.invariants_broken == 0
    # The sample is spread over the operation's steps; almost all must really kill.
    assert report.kill_points >= KILL_POINTS * 0.9, report
    assert report.steps > KILL_POINTS, report


@pytest.mark.parametrize("operation", OPERATIONS)
def test_sigkill_sqlite(operation: str, tmp_path: Path) -> None:
    _run(str(tmp_path / "crash.db"), "sqlite", operation, tmp_path)


@pytest.mark.postgres
@pytest.mark.parametrize("operation", OPERATIONS)
def test_sigkill_postgres(operation: str, postgres_url: str, tmp_path: Path) -> None:
    _run(postgres_url, "postgres", operation, tmp_path)


# ----------------------------------------------------------------------------- the checks can fail


def test_request_check_finds_unpaired_calls_and_repeats() -> None:
    call = {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}
    answer = {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
    ask = {"role": "user", "parts": [{"text": "hi"}]}
    assert check_request({"contents": [ask, call, answer]}) == []
    assert check_request({"contents": [ask, call]})  # a call without its response
    assert check_request({"contents": [ask, call, ask]})
    assert check_request({"contents": [ask, answer]})  # a response without its call
    assert check_request({"contents": [ask, {"role": "model", "parts": [{"text": "x"}]}, ask]})
    assert check_request({"contents": [ask], "continuationToken": "aG9wLTE="})


def test_continued_reply_check_finds_a_half_merged_turn() -> None:
    whole = chatledger.types.Content(
        role="model",
        parts=[
            chatledger.types.Part(text="first half of the reply"),
            chatledger.types.Part(text="reply to x"),
        ],
    )
    half = chatledger.types.Content(
        role="model", parts=[chatledger.types.Part(text="first half of the reply")]
    )
    assert check_continued_replies([whole]) == []
    assert check_continued_replies([whole, half]) == [
        "content 1: a continued reply without its last hop: 'first half of the reply'"
    ]


def test_after_kill_check_counts_lost_and_tampered_events(tmp_path: Path) -> None:
    store = str(tmp_path / "check.db")
    with ModelServer() as server:
        with chatledger.Client(
            api_key=API_KEY, http_options={"base_url": server.base_url}, store=store
        ) as client:
            chat = client.chats.create(model=MODEL)
            chat.send_message("one")
            before = {chat.id: [(e.event_id, e.hash) for e in chat.events()]}
        report = CrashReport("sqlite", "check")
        _check_after_kill(report, store, server, chat.id, before, "clean")
        assert report.invariants_broken == 0 and report.events_lost == 0, report.failures

        # An event that was committed and is gone is counted as lost.
        forged = {chat.id: [*before[chat.id], ("no-such-event", "0" * 64)]}
        _check_after_kill(report, store, server, chat.id, forged, "lost")
        assert report.events_lost == 1

        # A tampered event breaks verify, and the check says so.
        with sqlite3.connect(store) as connection:
            connection.execute("DROP TRIGGER events_no_update")
            connection.execute(
                "UPDATE events SET data = replace(data, 'one', 'two') WHERE type = 'user_message_added'"
            )
        broken = CrashReport("sqlite", "check")
        _check_after_kill(broken, store, server, chat.id, before, "tampered")
        assert broken.invariants_broken >= 1
        assert any("verify" in failure or "lost" in failure for failure in broken.failures)
