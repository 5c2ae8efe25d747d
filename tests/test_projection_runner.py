"""The projection runner keeps a read model exactly up to date, on SQLite and PostgreSQL:
token usage per model after real conversations, and neither a stop, a crash between
handling and commit, nor a second runner makes it skip or double-count an event."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.client.transports.scripted import ScriptedTransport, text_response
from chatledger.errors import ServerError, StoreError
from chatledger.events import (
    ConversationStarted,
    EventStore,
    MemoryStore,
    ModelCallStarted,
    ModelResponded,
    NewEvent,
    SQLiteStore,
)
from chatledger.events.postgres import PostgresStore
from chatledger.readmodels import (
    ModelTokens,
    ProjectionRunner,
    TokenUsageByModel,
    Transaction,
    qmark_to_format,
    usage_deltas,
)
from tests.store_contract import events_after
from tests.support.postgres import run_projection_until_crash, scratch_database


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with scratch_database("chatledger_runner") as url:
        yield url


class Backend:
    """How to open the same store again (a new process, a restarted runner)."""

    def __init__(self, location: str, schema: str | None) -> None:
        self.location = location
        self.schema = schema

    def open(self) -> EventStore:
        if self.schema is None:
            return SQLiteStore(self.location)
        return PostgresStore(self.location, schema=self.schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend(str(tmp_path / "runner.db"), None)
    url: str = request.getfixturevalue("postgres_url")
    return Backend(url, f"runner_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def store(backend: Backend) -> Iterator[EventStore]:
    with backend.open() as store:
        yield store


def usage(prompt: int, candidates: int, model_version: str | None = None) -> dict[str, Any]:
    response = text_response(
        f"{prompt}/{candidates}",
        usage={
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates,
        },
    )
    if model_version:
        response["modelVersion"] = model_version
    return response


def fill(store: EventStore, conversations: int = 4, responses: int = 40) -> dict[str, ModelTokens]:
    """Append conversations of model calls and responses; return the expected totals."""
    expected: dict[str, ModelTokens] = {}
    for c in range(conversations):
        cid = f"usage-{uuid.uuid4()}"
        model = f"model-{c % 2}"
        events = [NewEvent(data=ConversationStarted(model=model))]
        for r in range(responses):
            events.append(NewEvent(data=ModelCallStarted(turn=r + 1, model=model)))
            version = "pinned-1" if r % 5 == 0 else None
            events.append(
                NewEvent(data=ModelResponded(turn=r + 1, response=usage(r, 2 * r + 1, version)))
            )
            key = version or model
            expected[key] = expected.get(key, ModelTokens()) + ModelTokens(
                1, r, 2 * r + 1, 3 * r + 1
            )
        for offset in range(0, len(events), 7):  # several appends per conversation
            store.append(cid, events[offset : offset + 7], expected_version=offset)
    return expected


def add(*totals: dict[str, ModelTokens]) -> dict[str, ModelTokens]:
    out: dict[str, ModelTokens] = {}
    for total in totals:
        for model, tokens in total.items():
            out[model] = out.get(model, ModelTokens()) + tokens
    return out


def last_position(store: EventStore) -> int:
    return events_after(store, 0)[-1].position


# ----------------------------------------------------------------------------- usage


def test_token_usage_per_model_after_conversations(store: EventStore) -> None:
    transport = ScriptedTransport()
    with chatledger.Client(store=store, transport=transport) as client:
        a = client.chats.create(model="gemini-a")
        transport.enqueue(usage(10, 5, "gemini-a-001"))
        a.send_message("one")
        transport.enqueue(usage(20, 7))
        a.send_message("two")
        b = client.chats.create(model="gemini-b")
        transport.enqueue(chunks=[text_response("str", finish_reason=None), usage(1, 2)])
        list(b.send_message_stream("streamed"))
        transport.enqueue(
            error=ServerError(
                503, {"error": {"code": 503, "status": "UNAVAILABLE", "message": "busy"}}
            )
        )
        with pytest.raises(ServerError):
            b.send_message("fails")
        fork = a.fork(turn=1)
        transport.enqueue(usage(4, 4))
        fork.send_message("in the fork")

    runner = ProjectionRunner(store, TokenUsageByModel(), batch=3)
    applied = runner.run_once()
    assert applied == len(events_after(store, 0))
    assert TokenUsageByModel.totals(store) == {
        "gemini-a": ModelTokens(2, 24, 11, 35),  # "two" and the fork's reply
        "gemini-a-001": ModelTokens(1, 10, 5, 15),
        "gemini-b": ModelTokens(1, 1, 2, 3),  # the failed call is not a response
    }
    assert runner.position == last_position(store)
    assert runner.run_once() == 0


def test_batches_and_a_restart_neither_skip_nor_double_count(
    store: EventStore, backend: Backend
) -> None:
    first = fill(store)
    runner = ProjectionRunner(store, TokenUsageByModel(), batch=25)
    runner.run_once()
    assert TokenUsageByModel.totals(store) == first
    second = fill(store, conversations=2, responses=13)
    with backend.open() as again:  # a new process would see exactly this
        assert ProjectionRunner(again, TokenUsageByModel(), batch=7).run_once() == 2 * (1 + 2 * 13)
        assert TokenUsageByModel.totals(again) == add(first, second)


def test_a_live_runner_follows_and_resumes_after_a_stop(
    store: EventStore, backend: Backend
) -> None:
    runner = ProjectionRunner(store, TokenUsageByModel(), batch=10)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(stop=stop, poll_interval=0.02)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        expected = fill(store, conversations=3, responses=10)
        deadline = time.monotonic() + 60
        while runner.position < last_position(store) and time.monotonic() < deadline and not errors:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(30)
    assert errors == []
    assert TokenUsageByModel.totals(store) == expected
    more = fill(store, conversations=1, responses=5)
    with backend.open() as again:
        ProjectionRunner(again, TokenUsageByModel()).run_once()
        assert TokenUsageByModel.totals(again) == add(expected, more)


class SimulatedCrash(Exception):
    pass


class CrashingUsage(TokenUsageByModel):
    """Writes a batch's rows, then fails before the transaction commits."""

    def __init__(self, after_batches: int) -> None:
        self.after_batches = after_batches

    def handle(self, tx: Transaction, events: list[Any]) -> None:
        super().handle(tx, events)
        self.after_batches -= 1
        if self.after_batches < 0:
            raise SimulatedCrash


def test_a_failure_between_handling_and_commit_rolls_the_batch_back(store: EventStore) -> None:
    expected = fill(store, conversations=3, responses=20)
    runner = ProjectionRunner(store, CrashingUsage(after_batches=2), batch=10)
    with pytest.raises(SimulatedCrash):
        runner.run_once()
    assert runner.position == events_after(store, 0)[19].position  # two batches committed
    partial = TokenUsageByModel.totals(store)
    assert sum(t.calls for t in partial.values()) == sum(
        1 for e in events_after(store, 0)[:20] if e.type == "model_responded"
    )
    ProjectionRunner(store, TokenUsageByModel(), batch=10).run_once()
    assert TokenUsageByModel.totals(store) == expected


def test_a_process_killed_mid_transaction_loses_nothing(
    store: EventStore, backend: Backend
) -> None:
    expected = fill(store, conversations=3, responses=30)
    # The child dies (os._exit) while its third batch of 50 is written but not committed.
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=run_projection_until_crash, args=(backend.location, 120, backend.schema)
    )
    child.start()
    child.join(120)
    assert child.exitcode == 17
    runner = ProjectionRunner(store, TokenUsageByModel())
    assert runner.position == events_after(store, 0)[99].position
    runner.run_once()
    assert TokenUsageByModel.totals(store) == expected


def test_two_runners_at_once_apply_every_event_once(backend: Backend) -> None:
    with backend.open() as store:
        expected = fill(store, conversations=4, responses=25)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with backend.open() as own:
                ProjectionRunner(own, TokenUsageByModel(), batch=5).run_once()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    with backend.open() as store:
        assert TokenUsageByModel.totals(store) == expected
        assert ProjectionRunner(store, TokenUsageByModel()).position == last_position(store)


# ----------------------------------------------------------------------------- pieces


def test_usage_deltas_is_a_fold() -> None:
    from chatledger.events import RecordedEvent

    def recorded(cid: str, version: int, data: Any) -> RecordedEvent:
        return RecordedEvent(
            conversation_id=cid,
            version=version,
            position=version,
            event_id=str(uuid.uuid4()),
            type=type(data).type_name,
            schema_version=1,
            data=data,
            metadata={},
            recorded_at="t",
            hash="h",
        )

    models = {"known": "remembered"}
    events = [
        recorded("known", 5, ModelResponded(turn=1, response=usage(1, 1))),
        recorded("new", 1, ConversationStarted(model="m")),
        recorded(
            "new", 2, ModelResponded(turn=1, response={"usageMetadata": {"totalTokenCount": True}})
        ),
        recorded("new", 3, ModelCallStarted(turn=2, model="other")),
        recorded("new", 4, ModelResponded(turn=2, response=usage(2, 3, "v"))),
        recorded("lost", 9, ModelResponded(turn=1, response={})),
    ]
    deltas, changed = usage_deltas(events, models)
    assert deltas == {
        "remembered": ModelTokens(1, 1, 1, 2),
        "m": ModelTokens(1, 0, 0, 0),
        "v": ModelTokens(1, 2, 3, 5),
        "unknown": ModelTokens(1, 0, 0, 0),
    }
    assert changed == {"new": "other"}
    assert models == {"known": "remembered", "new": "other"}


def test_placeholders_are_translated_outside_quotes() -> None:
    assert qmark_to_format("SELECT ?, '?', \"a?\", 5 % 2 WHERE x LIKE 'a%' AND y = ?") == (
        "SELECT %s, '?', \"a?\", 5 %% 2 WHERE x LIKE 'a%%' AND y = %s"
    )


def test_a_store_without_a_database_cannot_run_projections() -> None:
    with pytest.raises(StoreError, match="keeps no database"):
        ProjectionRunner(MemoryStore(), TokenUsageByModel()).run_once()
