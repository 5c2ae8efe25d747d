"""What an import takes from another host is bounded, and an import never leaves a turn open.

A file's leases (finite, at most a day) and times (UTC as chatledger writes them, not
ahead of this host's clock, not running backwards in a conversation) are checked before
anything is written; a file that ends inside a turn is imported with the turn closed by
a recorded ``turn_abandoned``, so sends to it go on at once, and importing the file again
changes nothing. An event id twice in one file is named as such. On SQLite and
PostgreSQL. Forged files are re-hashed, as a forger would, so that only these rules can
refuse them.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chatledger
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.errors import IntegrityError, InvalidInputError
from chatledger.events import (
    ErrorInfo,
    EventStore,
    MemoryStore,
    ModelCallFailed,
    ModelResponded,
    NewEvent,
    SQLiteStore,
    TurnAbandoned,
    UserMessageAdded,
)
from chatledger.events.audit import export_conversation, import_lines, open_turn
from chatledger.events.envelope import event_hash
from chatledger.events.erasure import hashed_data
from chatledger.events.kinds import MAX_LEASE_SECONDS, ConversationStarted, HistoryReplaced
from chatledger.events.postgres import PostgresStore
from chatledger.projections import history
from tests.faults import ledger
from tests.support.postgres import scratch_database


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with scratch_database("chatledger_imports") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    """The store a file is imported into."""
    if request.param == "sqlite":
        store: EventStore = SQLiteStore(tmp_path / "target.db")
    else:
        url = request.getfixturevalue("postgres_url")
        store = PostgresStore(url, schema=f"imports_{uuid.uuid4().hex[:10]}")
    with store:
        yield store


def content(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def source_with_open_turn(lease: float = 600.0) -> tuple[MemoryStore, str]:
    """A conversation whose last turn is open: its writer, on another host, died (or the
    export was taken while it streamed)."""
    store, cid = MemoryStore(), f"open-{uuid.uuid4()}"
    writer = {"actor": "alice", "host": "elsewhere/boot", "pid": 4242}
    store.append(cid, [NewEvent(data=ConversationStarted(model="m"))], expected_version=0)
    store.append(
        cid,
        [
            NewEvent(data=UserMessageAdded(turn=1, content=content("hi")), metadata=writer),
            NewEvent(data=ModelResponded(turn=1, response={"candidates": []})),
            NewEvent(
                data=UserMessageAdded(turn=2, content=content("and?"), lease_seconds=lease),
                metadata=writer,
            ),
        ],
        expected_version=1,
    )
    return store, cid


def lines_of(store: EventStore, cid: str) -> list[str]:
    return list(export_conversation(store, cid))


def rehash(lines: list[str]) -> list[str]:
    """Recompute every hash of every chain in ``lines`` (what a forger does)."""
    events = [json.loads(line) for line in lines]
    previous: dict[str, str] = {}
    for event in events:
        event["hash"] = event_hash(
            **{k: event[k] for k in ("conversation_id", "version", "event_id", "type")},
            schema_version=event["schema_version"],
            # Content committed under the event's salt (docs/erasure.md).
            data=hashed_data(event["type"], event["data"], event.get("content_salt")),
            metadata=event["metadata"],
            recorded_at=event["recorded_at"],
            prev_hash=previous.get(event["conversation_id"], ""),
        )
        previous[event["conversation_id"]] = event["hash"]
    return [json.dumps(event) for event in events]


def edited(lines: list[str], index: int, change: Callable[[dict[str, Any]], None]) -> list[str]:
    events = [json.loads(line) for line in lines]
    change(events[index])
    return rehash([json.dumps(event) for event in events])


def everything(store: EventStore) -> list[tuple[str, int, str]]:
    return [(e.conversation_id, e.version, e.hash) for e in store.read_all(limit=10_000)]


# ----------------------------------------------------------------------------- open turns


def test_an_import_closes_the_turn_its_file_leaves_open(target: EventStore) -> None:
    source, cid = source_with_open_turn()
    lines = lines_of(source, cid)

    report = import_lines(target, lines, actor="importer")
    assert report.conversations == [cid]
    assert report.closed_turns == [(cid, 2)]
    assert report.events == 5  # the file's four, and the closing one
    events = target.read(cid)
    assert [e.type for e in events][-2:] == ["user_message_added", "turn_abandoned"]
    closing = events[-1]
    assert isinstance(closing.data, TurnAbandoned) and closing.data.turn == 2
    assert closing.actor == "importer"
    assert target.verify().ok

    # No one owns the turn here: a send goes on at once (it waited for the lease before).
    transport = ScriptedTransport().enqueue("answer")
    client = chatledger.Client(store=target, transport=transport, busy_timeout=0)
    assert client.chats.get(cid).send_message("again").text == "answer"

    # The same file again: already there, nothing written, no second closing event.
    before = everything(target)
    again = import_lines(target, lines)
    assert again.already_present == [cid] and again.events == 0 and again.closed_turns == []
    assert everything(target) == before
    ledger.record("store", f"import-open-turn/{type(target).__name__}", faults=1)


def test_an_import_that_ends_on_a_closed_turn_adds_nothing(target: EventStore) -> None:
    source, cid = source_with_open_turn()
    source.append(
        cid,
        [NewEvent(data=ModelResponded(turn=2, response={"candidates": []}))],
        expected_version=4,
    )
    report = import_lines(target, lines_of(source, cid))
    assert report.closed_turns == [] and report.events == 5
    assert [e.hash for e in target.read(cid)] == [e.hash for e in source.read(cid)]


# ----------------------------------------------------------------------------- bounds


def _set_lease(value: float) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        event["data"]["lease_seconds"] = value

    return change


def _set_time(value: str) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        event["recorded_at"] = value

    return change


def _hours_before(recorded_at: str, hours: float) -> str:
    when = dt.datetime.fromisoformat(recorded_at.replace("Z", "+00:00"))
    return (when - dt.timedelta(hours=hours)).isoformat(timespec="microseconds")[:-6] + "Z"


# (index of the event edited, the change, the error's words). Index 3 is the open turn.
OUT_OF_BOUNDS: dict[str, tuple[int, Callable[[dict[str, Any]], None], str]] = {
    "lease 1e300": (3, _set_lease(1e300), r"lease of 1e\+300"),
    "lease a day and a second": (3, _set_lease(MAX_LEASE_SECONDS + 1), "at most 86400"),
    "lease 0": (3, _set_lease(0), "more than 0"),
    "lease negative": (3, _set_lease(-5), "more than 0"),
    "recorded in 2999": (3, _set_time("2999-01-01T00:00:00.000000Z"), "after this host's clock"),
    "recorded tomorrow": (
        3,
        _set_time(
            (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).isoformat(
                timespec="microseconds"
            )[:-6]
            + "Z"
        ),
        "after this host's clock",
    ),
}


@pytest.mark.parametrize("case", list(OUT_OF_BOUNDS))
def test_leases_and_times_out_of_bounds_are_refused(target: EventStore, case: str) -> None:
    index, change, words = OUT_OF_BOUNDS[case]
    source, cid = source_with_open_turn()
    forged = edited(lines_of(source, cid), index, change)
    before = everything(target)
    with pytest.raises(IntegrityError, match=words) as caught:
        import_lines(target, forged)
    assert "nothing was imported" in str(caught.value)
    assert everything(target) == before
    ledger.record("store", f"import-bounds/{type(target).__name__}", faults=1)


def test_times_running_backwards_are_refused(tmp_path: Path) -> None:
    source, cid = source_with_open_turn()
    lines = lines_of(source, cid)
    earlier = _hours_before(json.loads(lines[1])["recorded_at"], 1)
    with SQLiteStore(tmp_path / "target.db") as store:
        with pytest.raises(IntegrityError, match="do not run backwards"):
            import_lines(store, edited(lines, 2, _set_time(earlier)))
        assert store.conversations() == []
        # A few seconds back (another writer's clock) is fine.
        slightly = _hours_before(json.loads(lines[1])["recorded_at"], 1 / 3600)
        assert import_lines(store, edited(lines, 2, _set_time(slightly))).conversations == [cid]


@pytest.mark.parametrize(
    "recorded_at",
    ["2026-01-01T00:00:00Z", "2026-01-01T02:00:00.000000+02:00", "2026-01-01 00:00:00.000000Z"],
)
def test_a_time_not_in_chatledgers_utc_form_is_refused(tmp_path: Path, recorded_at: str) -> None:
    source, cid = source_with_open_turn()
    with SQLiteStore(tmp_path / "target.db") as store:
        with pytest.raises(InvalidInputError, match="UTC time as chatledger writes it"):
            import_lines(store, edited(lines_of(source, cid), 0, _set_time(recorded_at)))
        assert store.conversations() == []


def test_an_event_id_twice_in_one_file_is_named_as_such(tmp_path: Path) -> None:
    source, cid = source_with_open_turn()
    lines = lines_of(source, cid)
    copy = [json.loads(line) for line in lines]
    for event in copy:
        event["conversation_id"] = "copy-" + cid
    with SQLiteStore(tmp_path / "target.db") as store:
        with pytest.raises(IntegrityError, match="appears twice in the file") as caught:
            import_lines(store, lines + rehash([json.dumps(event) for event in copy]))
        assert "already in this store" not in str(caught.value)
        assert f"lines 1 and {len(lines) + 1}" in str(caught.value)
        assert store.conversations() == []
    ledger.record("store", "import-duplicate-id/SQLiteStore", faults=1)


# ----------------------------------------------------------------------------- the rule


TURN = st.integers(1, 3)
EVENTS = st.lists(
    st.one_of(
        TURN.map(lambda t: UserMessageAdded(turn=t, content=content("q"))),
        st.builds(
            lambda t, ends: ModelResponded(turn=t, response={"candidates": []}, ends_turn=ends),
            TURN,
            st.booleans(),
        ),
        st.builds(
            lambda t, ends: ModelCallFailed(
                turn=t, error=ErrorInfo(kind="X", message="m"), ends_turn=ends
            ),
            TURN,
            st.booleans(),
        ),
        TURN.map(lambda t: TurnAbandoned(turn=t, reason="r")),
        st.just(HistoryReplaced(history=[])),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(events=EVENTS)
def test_open_turn_is_the_history_projections_rule(events: list[Any]) -> None:
    """The importer's rule for an open turn (events cannot import the projections) is
    the one the history projection folds: on random sequences of turn events."""
    store, cid = MemoryStore(), "rule"
    store.append(cid, [NewEvent(data=ConversationStarted(model="m"))], expected_version=0)
    for version, data in enumerate(events, start=1):
        store.append(cid, [NewEvent(data=data)], expected_version=version)
    state = history.fold(store.read(cid))
    expected = state.pending.turn if state.pending is not None else None
    assert open_turn(store._read(cid, 0, None)) == expected
