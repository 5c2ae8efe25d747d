"""The store contract: one test suite, written once, that every event store must pass.

A backend's test file subclasses :class:`StoreContract` and overrides ``make_store``::

    class TestMemoryStore(StoreContract):
        def make_store(self, tmp_path: Path) -> EventStore:
            return MemoryStore()

A new store is done when its subclass passes. Nothing here may assume a particular
backend, nor that the store is empty: a shared database (PostgreSQL) holds other tests'
streams, so every test works on conversation ids of its own (uuid4) and looks only at
events it wrote. (The few assertions about "the most recent" conversations assume no other
writer is busy on the same store while a test runs.)
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec.inspect as mi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatledger.errors import (
    ConcurrencyError,
    IntegrityError,
    InvalidInputError,
    StoreError,
)
from chatledger.events import (
    KINDS,
    ConfigChanged,
    ContentErased,
    ConversationStarted,
    ErrorInfo,
    EventData,
    EventStore,
    FunctionCalled,
    FunctionResponded,
    HistoryReplaced,
    ModelCallFailed,
    ModelCallStarted,
    ModelResponded,
    NewEvent,
    ParentRef,
    RecordedEvent,
    SessionCleared,
    SessionItemPopped,
    SessionItemsAdded,
    Snapshot,
    TurnAbandoned,
    TurnRewound,
    UnknownEvent,
    UserMessageAdded,
)
from chatledger.events.envelope import utc_now
from tests.support.narrow import stream_version

HEX = set("0123456789abcdef")

# ----------------------------------------------------------------------------- helpers


def new_id() -> str:
    return f"contract-{uuid.uuid4()}"


def started(*, model: str = "gemini-test", parent: ParentRef | None = None, **kw: Any) -> NewEvent:
    return NewEvent(data=ConversationStarted(model=model, parent=parent), **kw)


def message(turn: int = 1, text: str = "hello", **kw: Any) -> NewEvent:
    content = {"role": "user", "parts": [{"text": text}]}
    return NewEvent(data=UserMessageAdded(turn=turn, content=content), **kw)


def start(store: EventStore, conversation_id: str, *more: NewEvent) -> list[int]:
    """Create a conversation (conversation_started plus ``more``); return the positions."""
    return store.append(conversation_id, [started(), *more], expected_version=0)


def events_after(store: EventStore, position: int) -> list[RecordedEvent]:
    """Every event of the store after ``position``, paging through read_all."""
    found: list[RecordedEvent] = []
    while True:
        page = store.read_all(after_position=position, limit=100)
        if not page:
            return found
        found.extend(page)
        position = page[-1].position


_VERIFIER = Path(__file__).resolve().parents[1] / "examples" / "verify_export.py"


def _stdlib_verifier() -> Any:
    """examples/verify_export.py as a module: the standard-library verifier."""
    spec = importlib.util.spec_from_file_location("verify_export", _VERIFIER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stdlib_hash(store: EventStore, event: RecordedEvent, prev_hash: str) -> str:
    """The chain hash as a third party computes it from an export, with the stdlib only:
    the envelope with each content value committed under the event's salt, kept beside
    it (docs/erasure.md)."""
    export = event.to_export()
    (row,) = store._rows_with_event_ids([event.event_id])
    line = {**export, "data": json.loads(row.data), "content_salt": row.content_salt}
    digest: str = _stdlib_verifier().event_hash(line, prev_hash)
    return digest


def increasing(values: Sequence[int]) -> bool:
    return all(x < y for x, y in itertools.pairwise(values))


def wait_past(timestamp: str) -> None:
    """Let this host's UTC clock move past ``timestamp`` (microsecond resolution), so that
    the next append is recorded strictly later. Gives up after a second: a store whose
    clock runs ahead then fails the ordering assertions, which is what we want."""
    deadline = time.monotonic() + 1.0
    while utc_now() <= timestamp and time.monotonic() < deadline:
        time.sleep(0.0001)


def assert_not_written(
    store: EventStore, marker: int, event_ids: Sequence[str], *conversation_ids: str
) -> None:
    """No event written after position ``marker`` carries one of these ids."""
    later = events_after(store, marker)
    assert not [e for e in later if e.event_id in event_ids]
    assert not [e for e in later if e.conversation_id in conversation_ids]


# One event of every kind, with fields away from their defaults.
EVERY_KIND: list[EventData] = [
    ConversationStarted(
        model="gemini-2.5-flash",
        config={"temperature": 0.5, "systemInstruction": {"parts": [{"text": "be brief"}]}},
        history=[
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "yo"}]},
        ],
    ),
    UserMessageAdded(
        turn=1, content={"role": "user", "parts": [{"text": "héllo ✓"}]}, lease_seconds=30.5
    ),
    ModelCallStarted(
        turn=1,
        model="gemini-2.5-flash",
        attempt=2,
        streamed=True,
        config={"topK": 3},
        contents_count=3,
        contents_sha256="ab" * 32,
        transport="gemini",
    ),
    ModelResponded(
        turn=1,
        response={"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}}]},
        latency_ms=12.25,
        streamed=True,
        chunks=4,
        ends_turn=False,
    ),
    ModelCallFailed(
        turn=1,
        error=ErrorInfo(kind="ServerError", message="boom", code=503, status="UNAVAILABLE"),
        attempt=3,
        streamed=True,
        partial={"text": "par"},
        latency_ms=1.5,
        ends_turn=False,
    ),
    FunctionCalled(turn=1, name="lookup", args={"q": [1, 2.5, None, True]}, call_id="c1", index=1),
    FunctionResponded(
        turn=1,
        name="lookup",
        response={"result": {"n": 1}},
        call_id="c1",
        index=1,
        error="bad",
        duration_ms=3.0,
    ),
    TurnRewound(turn=1),
    TurnAbandoned(turn=2, reason="lease expired"),
    ConfigChanged(config={"temperature": 0.1}, model="gemini-2.5-pro"),
    HistoryReplaced(history=[{"role": "user", "parts": [{"text": "again"}]}]),
    SessionItemsAdded(items=[{"role": "user", "content": "hi ✓"}, {"type": "x", "n": [1.5]}]),
    SessionItemPopped(item_version=14, item_index=1, item_conversation_id="parent"),
    SessionCleared(count=1),
]
#: Written by erase only (EventStore.append refuses them): see tests/erasure.
ERASE_ONLY = {ContentErased.type_name}

# ----------------------------------------------------------------------------- strategies

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
METADATA = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)


def strategy_for(info: mi.Type) -> st.SearchStrategy[Any]:
    """Values of a msgspec field type. Fails loudly on a type it does not know, so a new
    kind with a new kind of field is noticed here rather than silently untested."""
    if isinstance(info, mi.AnyType):
        return JSON_VALUES
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.IntType):
        return st.integers()
    if isinstance(info, mi.FloatType):
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(info, mi.StrType):
        return st.text(max_size=16)
    if isinstance(info, mi.UnionType):
        return st.one_of([strategy_for(t) for t in info.types])
    if isinstance(info, mi.ListType):
        return st.lists(strategy_for(info.item_type), max_size=3)
    if isinstance(info, mi.DictType):
        return st.dictionaries(
            strategy_for(info.key_type), strategy_for(info.value_type), max_size=4
        )
    if isinstance(info, mi.StructType):
        return struct_strategy(info)
    raise TypeError(f"no strategy for {info!r}: teach strategy_for about it")


def struct_strategy(info: mi.StructType) -> st.SearchStrategy[Any]:
    # A random parent would name a stream that does not exist: forks are tested on their own.
    fields = [f for f in info.fields if f.name != "parent"]
    required = {f.name: strategy_for(f.type) for f in fields if f.required}
    optional = {f.name: strategy_for(f.type) for f in fields if not f.required}
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: info.cls(**kw))


KIND_DATA = {name: struct_strategy(mi.type_info(kind)) for name, kind in KINDS.items()}  # type: ignore[arg-type]
LATER_KINDS = st.sampled_from(
    sorted(set(KINDS) - {ConversationStarted.type_name} - ERASE_ONLY)
).flatmap(lambda name: KIND_DATA[name])
# A step: (which of three conversations, the events of one append after any start).
APPEND_STEPS = st.lists(
    st.tuples(st.integers(0, 2), st.lists(st.tuples(LATER_KINDS, METADATA), max_size=4)),
    min_size=1,
    max_size=10,
)

# ----------------------------------------------------------------------------- the contract


class StoreContract:
    """What every store does. Subclass it with ``make_store`` returning a fresh store."""

    def make_store(self, tmp_path: Path) -> EventStore:
        raise NotImplementedError("a store's test class returns a ready store here")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EventStore]:
        store = self.make_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    # ------------------------------------------------------------- append and read back

    def test_append_and_read_back_every_envelope_field(self, store: EventStore) -> None:
        cid = new_id()
        ids = [str(uuid.uuid4()) for _ in range(3)]
        metadata: list[dict[str, Any]] = [
            {"actor": "alice", "library": "chatledger/test"},
            {"actor": "alice", "correlation_id": "c-1", "nested": {"a": [1, 2.5, None]}},
            {},
        ]
        datas = [EVERY_KIND[0], EVERY_KIND[1], EVERY_KIND[4]]
        positions = store.append(
            cid,
            [
                NewEvent(data=d, event_id=i, metadata=m)
                for d, i, m in zip(datas, ids, metadata, strict=True)
            ],
            expected_version=0,
        )
        events = store.read(cid)

        assert len(positions) == 3
        assert positions == sorted(set(positions))
        assert [e.position for e in events] == positions
        assert [e.conversation_id for e in events] == [cid] * 3
        assert [e.version for e in events] == [1, 2, 3]
        assert [e.event_id for e in events] == ids
        assert [e.type for e in events] == [
            "conversation_started",
            "user_message_added",
            "model_call_failed",
        ]
        assert [e.schema_version for e in events] == [type(d).schema_version for d in datas]
        assert [e.data for e in events] == datas
        assert [type(e.data) for e in events] == [type(d) for d in datas]
        assert [e.metadata for e in events] == metadata
        assert events[0].actor == "alice"
        prev_hash = ""
        for event in events:
            when = event.recorded_at_datetime
            assert when.utcoffset() is not None
            assert when.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
            assert event.recorded_at.endswith("Z")
            assert len(event.hash) == 64
            assert set(event.hash) <= HEX
            # The chain is exactly the documented one, checkable with the stdlib alone.
            assert event.hash == stdlib_hash(store, event, prev_hash)
            prev_hash = event.hash

    def test_metadata_that_reads_back_differently_is_stored_as_read_and_verifies(
        self, store: EventStore
    ) -> None:
        # A tuple reads back as a list and integer keys as strings (sorted as strings,
        # not as numbers): the chain must hash what a reader decodes, or verify fails.
        cid = new_id()
        metadata = {"pair": (1, "two"), "by_number": {10: "ten", 9: "nine"}, "text": "é\u2028\"'"}
        start(store, cid, message(1, metadata=metadata))
        events = store.read(cid)
        assert events[1].metadata == {
            "pair": [1, "two"],
            "by_number": {"10": "ten", "9": "nine"},
            "text": "é\u2028\"'",
        }
        assert events[1].hash == stdlib_hash(store, events[1], events[0].hash)
        report = store.verify(cid)
        assert report.ok, report.problems

    def test_event_ids_default_to_uuids(self, store: EventStore) -> None:
        cid = new_id()
        start(store, cid, message())
        events = store.read(cid)
        assert len({e.event_id for e in events}) == 2
        for event in events:
            assert str(uuid.UUID(event.event_id)) == event.event_id

    def test_every_kind_round_trips(self, store: EventStore) -> None:
        cid = new_id()
        store.append(cid, [NewEvent(data=d) for d in EVERY_KIND], expected_version=0)
        events = store.read(cid)
        assert [e.data for e in events] == EVERY_KIND
        assert [e.type for e in events] == [type(d).type_name for d in EVERY_KIND]
        assert {e.type for e in events} == set(KINDS) - ERASE_ONLY
        with pytest.raises(InvalidInputError, match="written by erase"):
            store.append(
                cid,
                [NewEvent(data=ContentErased(reason="by hand", up_to_version=1))],
                expected_version=len(EVERY_KIND),
            )
        assert store.verify(cid).ok

    def test_versions_are_gapless_and_positions_increase_across_appends(
        self, store: EventStore
    ) -> None:
        cid = new_id()
        positions = start(store, cid)
        positions += store.append(cid, [message(1), message(2)], expected_version=1)
        positions += store.append(cid, [message(3)], expected_version=3)
        events = store.read(cid)
        assert [e.version for e in events] == [1, 2, 3, 4]
        assert [e.position for e in events] == positions
        assert increasing(positions)
        assert [e.hash for e in events[:-1]] != [e.hash for e in events[1:]]
        prev_hash = ""
        for event in events:
            assert event.hash == stdlib_hash(store, event, prev_hash)
            prev_hash = event.hash

    def test_read_of_an_unknown_conversation_is_empty(self, store: EventStore) -> None:
        assert store.read(new_id()) == []
        assert store.read(new_id(), after_version=3, to_version=9) == []

    def test_read_after_version_and_to_version(self, store: EventStore) -> None:
        cid = new_id()
        start(store, cid, *[message(turn) for turn in range(1, 5)])
        everything = store.read(cid)

        def versions(**kw: int | None) -> list[int]:
            return [e.version for e in store.read(cid, **kw)]  # type: ignore[arg-type]

        assert [e.version for e in everything] == [1, 2, 3, 4, 5]
        assert versions(after_version=2) == [3, 4, 5]
        assert versions(to_version=3) == [1, 2, 3]
        assert versions(after_version=1, to_version=4) == [2, 3, 4]
        assert versions(after_version=2, to_version=3) == [3]
        assert versions(after_version=5) == []
        assert versions(after_version=9) == []
        assert versions(to_version=0) == []
        assert versions(after_version=3, to_version=2) == []
        assert versions(to_version=99) == [1, 2, 3, 4, 5]
        assert store.read(cid, after_version=1, to_version=4) == everything[1:4]

    # ------------------------------------------------------------- expected_version

    def test_a_new_stream_needs_expected_version_zero(self, store: EventStore) -> None:
        cid = new_id()
        later = message(1)
        with pytest.raises(ConcurrencyError) as caught:
            store.append(cid, [later], expected_version=1)
        assert caught.value.conversation_id == cid
        assert caught.value.expected_version == 1
        assert caught.value.actual_version == 0
        assert store.read(cid) == []
        assert store.stream_info(cid) is None
        first = started()
        store.append(cid, [first], expected_version=0)
        store.append(cid, [later], expected_version=1)
        assert [e.event_id for e in store.read(cid)] == [first.event_id, later.event_id]

    @pytest.mark.parametrize("stale", [0, 1, 2, 4, 10])
    def test_a_version_mismatch_raises_and_writes_nothing(
        self, store: EventStore, stale: int
    ) -> None:
        cid = new_id()
        marker = start(store, cid, message(1), message(2))[-1]
        before = store.read(cid)
        info = store.stream_info(cid)
        attempt = [started()] if stale == 0 else [message(3), message(4)]
        with pytest.raises(ConcurrencyError) as caught:
            store.append(cid, attempt, expected_version=stale)
        error = caught.value
        assert isinstance(error, StoreError)
        assert (error.conversation_id, error.expected_version, error.actual_version) == (
            cid,
            stale,
            3,
        )
        assert "3" in str(error)
        assert store.read(cid) == before
        assert store.stream_info(cid) == info
        assert_not_written(store, marker, [e.event_id for e in attempt])

    def test_the_first_event_must_be_conversation_started(self, store: EventStore) -> None:
        cid = new_id()
        attempt = [message(1)]
        with pytest.raises(InvalidInputError, match="conversation_started"):
            store.append(cid, attempt, expected_version=0)
        assert store.read(cid) == []
        assert store.stream_info(cid) is None

    def test_conversation_started_is_only_ever_the_first_event(self, store: EventStore) -> None:
        cid = new_id()
        with pytest.raises(InvalidInputError, match="conversation_started"):
            store.append(cid, [started(), message(1), started()], expected_version=0)
        assert store.read(cid) == []
        start(store, cid)
        before = store.read(cid)
        with pytest.raises(InvalidInputError, match="conversation_started"):
            store.append(cid, [started()], expected_version=1)
        with pytest.raises(InvalidInputError, match="conversation_started"):
            store.append(cid, [message(1), started()], expected_version=1)
        assert store.read(cid) == before
        assert store.verify(cid).ok

    # ------------------------------------------------------------- atomicity

    def test_a_multi_event_append_is_all_or_nothing(self, store: EventStore) -> None:
        taken = new_id()
        marker = start(store, taken)[-1]
        used_id = store.read(taken)[0].event_id
        cid = new_id()
        # The third event reuses an id of another stream: the first two must not land.
        attempt = [started(), message(1), message(2, event_id=used_id)]
        with pytest.raises(IntegrityError):
            store.append(cid, attempt, expected_version=0)
        assert store.read(cid) == []
        assert store.stream_info(cid) is None
        assert_not_written(store, marker, [attempt[0].event_id, attempt[1].event_id], cid)

        # Same in an existing stream, failing late.
        start(store, cid)
        before, info = store.read(cid), store.stream_info(cid)
        attempt = [message(1), message(2), message(3, event_id=used_id)]
        with pytest.raises(IntegrityError):
            store.append(cid, attempt, expected_version=1)
        assert store.read(cid) == before
        assert store.stream_info(cid) == info

        # Data that cannot be stored, last in the batch: refused before anything is written.
        bad = NewEvent(data=ModelResponded(turn=1, response={}, latency_ms=math.nan))
        with pytest.raises(InvalidInputError):
            store.append(cid, [message(1), message(2), bad], expected_version=1)
        assert store.read(cid) == before
        assert store.verify(cid).ok

    # ------------------------------------------------------------- idempotent retries

    def test_reappending_the_same_event_ids_returns_the_original_positions(
        self, store: EventStore
    ) -> None:
        cid = new_id()
        first = [started(), message(1)]
        first_positions = store.append(cid, first, expected_version=0)
        second = [message(2), message(3)]
        second_positions = store.append(cid, second, expected_version=2)
        before = store.read(cid)
        info = store.stream_info(cid)

        # A retry after an unknown outcome resends the same events with the same expectation.
        assert store.append(cid, first, expected_version=0) == first_positions
        assert store.append(cid, second, expected_version=2) == second_positions
        # Retrying from even staler knowledge is still a retry.
        assert store.append(cid, second, expected_version=1) == second_positions

        assert store.read(cid) == before
        assert store.stream_info(cid) == info
        mine = [e for e in events_after(store, first_positions[0] - 1) if e.conversation_id == cid]
        assert [e.position for e in mine] == first_positions + second_positions
        assert store.verify(cid).ok

    @pytest.mark.parametrize("change", ["data", "metadata", "type", "schema_version"])
    def test_reappending_an_event_id_with_other_content_is_refused_naming_it(
        self, store: EventStore, change: str
    ) -> None:
        """A retry is a no-op only when it resends the same events. An event id appended
        again with other content must not return the old positions (silently dropping
        the new event): it is an error naming the event and what differs."""
        cid = new_id()
        first, second = started(), message(1, "hello", metadata={"actor": "alice"})
        store.append(cid, [first, second], expected_version=0)
        store.append(cid, [message(2)], expected_version=2)
        before, info = store.read(cid), store.stream_info(cid)
        same: dict[str, Any] = {"event_id": second.event_id, "metadata": {"actor": "alice"}}
        changed = {
            "data": message(1, "I never said that", **same),
            "metadata": message(1, "hello", event_id=second.event_id, metadata={"actor": "eve"}),
            "type": NewEvent(data=TurnRewound(turn=1), **same),
            "schema_version": NewEvent(
                data=UnknownEvent(
                    type="user_message_added", data=before[1].to_export()["data"], version=2
                ),
                **same,
            ),
        }[change]
        words = {
            "data": "other data",
            "metadata": "other metadata",
            "type": "another type",
            "schema_version": "another schema_version",
        }[change]
        for expected_version in (0, 1):  # a stale expectation: what a retry sends
            with pytest.raises(IntegrityError, match=second.event_id) as caught:
                store.append(
                    cid, [first, changed][expected_version:], expected_version=expected_version
                )
            assert words in str(caught.value)
            assert "nothing was written" in str(caught.value)
        # The identical retry is still a no-op returning the original positions.
        assert store.append(cid, [first, second], expected_version=0) == [
            e.position for e in before[:2]
        ]
        assert store.read(cid) == before
        assert store.stream_info(cid) == info

    def test_partially_overlapping_event_ids_raise_and_write_nothing(
        self, store: EventStore
    ) -> None:
        cid = new_id()
        seen = message(1)
        positions = start(store, cid, seen)
        before, info = store.read(cid), store.stream_info(cid)
        fresh = message(2)
        # Stale expectation: looks like a retry, but only half of it went through.
        with pytest.raises(IntegrityError):
            store.append(cid, [seen, fresh], expected_version=1)
        # Current expectation: one id is already in the stream.
        with pytest.raises(IntegrityError):
            store.append(cid, [fresh, seen], expected_version=2)
        assert store.read(cid) == before
        assert store.stream_info(cid) == info
        assert_not_written(store, positions[-1], [fresh.event_id])

    def test_an_event_id_of_another_conversation_is_refused(self, store: EventStore) -> None:
        one, other = new_id(), new_id()
        first = started()
        store.append(one, [first], expected_version=0)
        one_before = store.read(one)
        # A new stream that would start with the other stream's event.
        with pytest.raises(IntegrityError):
            store.append(other, [first], expected_version=0)
        assert store.read(other) == []
        assert store.stream_info(other) is None
        # An existing stream, with a current and with a stale expectation (the retry path).
        start(store, other)
        other_before = store.read(other)
        with pytest.raises(IntegrityError):
            store.append(other, [message(1, event_id=first.event_id)], expected_version=1)
        with pytest.raises(IntegrityError):
            store.append(other, [started(event_id=first.event_id)], expected_version=0)
        assert store.read(other) == other_before
        assert store.read(one) == one_before

    # ------------------------------------------------------------- read_all

    def test_read_all_is_in_position_order_across_streams(self, store: EventStore) -> None:
        a, b, c = new_id(), new_id(), new_id()
        order: list[str] = []
        positions: list[int] = []

        def append(cid: str, events: list[NewEvent], expected: int) -> None:
            positions.extend(store.append(cid, events, expected_version=expected))
            order.extend(e.event_id for e in events)

        append(a, [started(), message(1)], 0)
        append(b, [started()], 0)
        append(a, [message(2)], 2)
        append(c, [started(), message(1), message(2)], 0)
        append(b, [message(1)], 1)
        append(a, [message(3)], 3)

        everything = events_after(store, positions[0] - 1)
        assert increasing([e.position for e in everything])
        mine = [e for e in everything if e.conversation_id in (a, b, c)]
        assert [e.event_id for e in mine] == order
        assert [e.position for e in mine] == positions
        by_stream = {cid: store.read(cid) for cid in (a, b, c)}
        assert sorted(mine, key=lambda e: (e.conversation_id, e.version)) == sorted(
            [e for events in by_stream.values() for e in events],
            key=lambda e: (e.conversation_id, e.version),
        )

    def test_read_all_limit_and_after_position(self, store: EventStore) -> None:
        a, b = new_id(), new_id()
        positions = start(store, a, message(1), message(2))
        positions += start(store, b, message(1))
        positions += store.append(a, [message(3)], expected_version=3)
        marker = positions[0] - 1

        whole = events_after(store, marker)
        paged: list[RecordedEvent] = []
        after = marker
        while True:
            page = store.read_all(after_position=after, limit=2)
            assert len(page) <= 2
            assert all(e.position > after for e in page)
            if not page:
                break
            paged.extend(page)
            after = page[-1].position
        assert paged == whole
        assert [e.position for e in whole if e.conversation_id in (a, b)] == positions

        assert store.read_all(after_position=marker, limit=1) == whole[:1]
        third = positions[2]
        after_third = store.read_all(after_position=third)
        assert all(e.position > third for e in after_third)
        assert [e.position for e in after_third if e.conversation_id in (a, b)] == positions[3:]
        assert not [
            e for e in store.read_all(after_position=positions[-1]) if e.conversation_id in (a, b)
        ]

    # ------------------------------------------------------------- subscribe

    def test_subscribe_catches_up_then_follows_live_appends(self, store: EventStore) -> None:
        a, b = new_id(), new_id()
        pre = [[started(), message(1)], [started()]]
        positions = store.append(a, pre[0], expected_version=0)
        store.append(b, pre[1], expected_version=0)
        pre_ids = [e.event_id for events in pre for e in events]
        live = [
            (a, [message(2)], 2),
            (b, [message(1), message(2), message(3)], 1),
            (a, [message(3), message(4)], 3),
            (b, [message(4)], 4),
            (a, [message(5)], 5),
            (b, [message(5), message(6)], 5),
        ]
        live_ids = [e.event_id for _, events, _ in live for e in events]

        caught_up = threading.Event()
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                caught_up.wait()
                for cid, events, expected in live:
                    store.append(cid, events, expected_version=expected)
            except BaseException as exc:  # reported by the assertions below
                errors.append(exc)
                stop.set()

        thread = threading.Thread(target=writer)
        guard = threading.Timer(60, stop.set)  # a broken store fails the test, never hangs it
        thread.start()
        guard.start()
        seen: list[str] = []
        delivered: list[int] = []
        try:
            for event in store.subscribe(positions[0] - 1, stop=stop, poll_interval=0.01):
                delivered.append(event.position)
                if event.conversation_id in (a, b):
                    seen.append(event.event_id)
                if len(seen) == len(pre_ids):
                    caught_up.set()
                if len(seen) >= len(pre_ids) + len(live_ids):
                    stop.set()
        finally:
            caught_up.set()
            guard.cancel()
            thread.join()
        assert errors == []
        assert seen == pre_ids + live_ids
        assert increasing(delivered)

        # Resume from the last position handled: only what came after, exactly once.
        last = store.read(b)[-1].position
        assert last == max(e.position for e in store.read(a) + store.read(b))
        more = [message(6), message(7)]
        store.append(a, more, expected_version=6)
        stop = threading.Event()
        guard = threading.Timer(60, stop.set)
        guard.start()
        resumed: list[str] = []
        try:
            for event in store.subscribe(last, stop=stop, poll_interval=0.01):
                assert event.position > last
                if event.conversation_id in (a, b):
                    resumed.append(event.event_id)
                if len(resumed) >= len(more):
                    stop.set()
        finally:
            guard.cancel()
        assert resumed == [e.event_id for e in more]

    def test_subscribe_with_stop_already_set_yields_nothing(self, store: EventStore) -> None:
        start(store, new_id())
        stop = threading.Event()
        stop.set()
        assert list(store.subscribe(0, stop=stop)) == []

    # ------------------------------------------------------------- concurrency

    def test_threads_appending_to_one_conversation_with_retries(self, store: EventStore) -> None:
        cid = new_id()
        start(store, cid)
        writers, each = 4, 25
        barrier = threading.Barrier(writers)
        errors: list[BaseException] = []

        def write(writer: int) -> None:
            try:
                barrier.wait()
                for n in range(each):
                    while True:
                        info = store.stream_info(cid)
                        assert info is not None
                        event = message(n + 1, metadata={"writer": writer, "n": n})
                        try:
                            store.append(cid, [event], expected_version=info.version)
                            break
                        except ConcurrencyError:
                            continue
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        events = store.read(cid)
        assert [e.version for e in events] == list(range(1, writers * each + 2))
        assert len({e.event_id for e in events}) == len(events)
        written = [(e.metadata["writer"], e.metadata["n"]) for e in events[1:]]
        assert sorted(written) == [(w, n) for w in range(writers) for n in range(each)]
        for w in range(writers):
            assert [n for writer, n in written if writer == w] == list(range(each))
        assert store.verify(cid).ok

    # ------------------------------------------------------------- conversations

    def test_conversations_are_most_recently_updated_first(self, store: EventStore) -> None:
        a, b, c = new_id(), new_id(), new_id()
        for cid in (a, b, c):
            start(store, cid)
            wait_past(store.read(cid)[-1].recorded_at)
        store.append(a, [message(1)], expected_version=1)

        listed = store.conversations()
        mine = [info.conversation_id for info in listed if info.conversation_id in (a, b, c)]
        assert mine == [a, c, b]
        stamps = [info.updated_at for info in listed]
        assert stamps == sorted(stamps, reverse=True)
        info = {i.conversation_id: i for i in listed}
        assert info[a].version == 2
        assert info[a].updated_at == store.read(a)[-1].recorded_at
        assert info[a].created_at == store.read(a)[0].recorded_at
        assert info[c] == store.stream_info(c)

    def test_conversations_limit(self, store: EventStore) -> None:
        a, b, c = new_id(), new_id(), new_id()
        for cid in (a, b, c):
            start(store, cid)
            wait_past(store.read(cid)[-1].recorded_at)
        everything = store.conversations()
        assert len(everything) >= 3
        assert store.conversations(limit=2) == everything[:2]
        assert [i.conversation_id for i in store.conversations(limit=1)] == [c]
        assert len(store.conversations(limit=len(everything) + 5)) == len(everything)

    def test_conversations_by_parent_id_lists_direct_forks(self, store: EventStore) -> None:
        parent = new_id()
        start(store, parent, message(1), message(2))
        parent_events = store.read(parent)
        fork_one, fork_two, grandchild = new_id(), new_id(), new_id()

        def fork(cid: str, of: RecordedEvent) -> None:
            ref = ParentRef(conversation_id=of.conversation_id, version=of.version, hash=of.hash)
            store.append(cid, [started(parent=ref), message(9)], expected_version=0)
            wait_past(store.read(cid)[-1].recorded_at)

        fork(fork_one, parent_events[1])
        fork(fork_two, parent_events[2])
        fork(grandchild, store.read(fork_one)[1])

        forks = store.conversations(parent_id=parent)
        assert [i.conversation_id for i in forks] == [fork_two, fork_one]
        assert [(i.parent_id, i.parent_version) for i in forks] == [(parent, 3), (parent, 2)]
        assert [i.conversation_id for i in store.conversations(parent_id=fork_one)] == [grandchild]
        assert store.conversations(parent_id=grandchild) == []
        assert store.conversations(parent_id=new_id()) == []
        assert [i.conversation_id for i in store.conversations(parent_id=parent, limit=1)] == [
            fork_two
        ]
        info = store.stream_info(fork_one)
        assert info is not None
        assert (info.parent_id, info.parent_version) == (parent, 2)
        assert store.read(fork_one)[0].data.parent == ParentRef(  # type: ignore[attr-defined]
            conversation_id=parent, version=2, hash=parent_events[1].hash
        )
        # Appending to a fork keeps its parent.
        store.append(fork_one, [message(10)], expected_version=2)
        info = store.stream_info(fork_one)
        assert info is not None
        assert (info.parent_id, info.parent_version, info.version) == (parent, 2, 3)
        parent_info = store.stream_info(parent)
        assert parent_info is not None
        assert (parent_info.parent_id, parent_info.parent_version) == (None, None)
        for cid in (parent, fork_one, fork_two, grandchild):
            assert store.verify(cid).ok

    def test_stream_info(self, store: EventStore) -> None:
        cid = new_id()
        assert store.stream_info(cid) is None
        start(store, cid, message(1))
        wait_past(store.read(cid)[-1].recorded_at)
        store.append(cid, [message(2)], expected_version=2)
        events = store.read(cid)
        info = store.stream_info(cid)
        assert info is not None
        assert info.conversation_id == cid
        assert info.version == 3
        assert info.created_at == events[0].recorded_at
        assert info.updated_at == events[-1].recorded_at
        assert info.created_at < info.updated_at
        assert (info.parent_id, info.parent_version) == (None, None)

    # ------------------------------------------------------------- snapshots

    def test_snapshots_save_load_and_replace(self, store: EventStore) -> None:
        cid, other = new_id(), new_id()
        start(store, cid, *[message(turn) for turn in range(1, 12)])
        assert store.load_snapshot(cid, "history") is None

        def snap(version: int, state: bytes, name: str = "history", of: str = cid) -> Snapshot:
            return Snapshot(conversation_id=of, name=name, version=version, state=state)

        store.save_snapshot(snap(5, b"\x00five\xff"))
        assert store.load_snapshot(cid, "history") == snap(5, b"\x00five\xff")
        store.save_snapshot(snap(10, b"ten"))
        assert store.load_snapshot(cid, "history") == snap(10, b"ten")
        # A slower writer's older snapshot must not replace the newer one.
        store.save_snapshot(snap(7, b"seven"))
        assert store.load_snapshot(cid, "history") == snap(10, b"ten")
        # Names and conversations are separate.
        store.save_snapshot(snap(3, b"usage", name="usage"))
        store.save_snapshot(snap(2, b"other", of=other))
        assert store.load_snapshot(cid, "usage") == snap(3, b"usage", name="usage")
        assert store.load_snapshot(cid, "history") == snap(10, b"ten")
        assert store.load_snapshot(other, "history") == snap(2, b"other", of=other)
        assert store.load_snapshot(other, "usage") is None
        # Snapshots are a cache, not part of the log.
        assert stream_version(store, cid) == 12
        assert store.verify(cid).ok
        # Deleting one forgets that one only; then any version may be saved again.
        assert store.delete_snapshot(cid, "history") is True
        assert store.delete_snapshot(cid, "history") is False
        assert store.load_snapshot(cid, "history") is None
        assert store.load_snapshot(cid, "usage") == snap(3, b"usage", name="usage")
        assert store.load_snapshot(other, "history") == snap(2, b"other", of=other)
        store.save_snapshot(snap(4, b"four"))
        assert store.load_snapshot(cid, "history") == snap(4, b"four")
        assert stream_version(store, cid) == 12

    # ------------------------------------------------------------- verify

    def test_verify_passes_on_a_good_log(self, store: EventStore) -> None:
        a, b, fork = new_id(), new_id(), new_id()
        start(store, a, *[NewEvent(data=d) for d in EVERY_KIND[1:]])
        start(store, b, message(1))
        head = store.read(a)[3]
        ref = ParentRef(conversation_id=a, version=head.version, hash=head.hash)
        store.append(fork, [started(parent=ref)], expected_version=0)
        store.append(b, [message(2)], expected_version=2)

        for cid, count in ((a, len(EVERY_KIND)), (b, 3), (fork, 1)):
            report = store.verify(cid)
            assert report.ok, report.problems
            assert report.streams_checked == 1
            assert report.events_checked == count
            report.raise_for_problems()

        report = store.verify()
        assert report.streams_checked >= 3
        assert report.events_checked >= len(EVERY_KIND) + 4
        assert not [p for p in report.problems if p.conversation_id in (a, b, fork)]

    def test_verify_names_a_fork_whose_parent_hash_does_not_match(self, store: EventStore) -> None:
        parent, fork = new_id(), new_id()
        start(store, parent, message(1))
        wrong = ParentRef(conversation_id=parent, version=2, hash="0" * 64)
        positions = store.append(fork, [started(parent=wrong), message(1)], expected_version=0)

        report = store.verify(fork)
        assert not report.ok
        problem = report.problems[0]
        assert (problem.conversation_id, problem.version, problem.position) == (
            fork,
            1,
            positions[0],
        )
        assert problem.event_id == store.read(fork)[0].event_id
        assert parent in problem.reason
        with pytest.raises(IntegrityError, match=f"{fork} v1"):
            report.raise_for_problems()
        assert [p for p in store.verify().problems if p.conversation_id == fork] == [problem]
        assert store.verify(parent).ok

    @pytest.mark.parametrize("version", [3, 99])
    def test_verify_names_a_fork_of_a_version_that_does_not_exist(
        self, store: EventStore, version: int
    ) -> None:
        parent, fork = new_id(), new_id()
        start(store, parent, message(1))
        ref = ParentRef(conversation_id=parent, version=version, hash="a" * 64)
        store.append(fork, [started(parent=ref)], expected_version=0)
        problems = store.verify(fork).problems
        assert [(p.conversation_id, p.version) for p in problems] == [(fork, 1)]
        assert "does not exist" in problems[0].reason

    # ------------------------------------------------------------- bad input

    @pytest.mark.parametrize(
        "conversation_id",
        [
            "",
            "x" * 201,
            "x" * 100_000,
            "line\nbreak",
            "tab\there",
            "nul\x00",
            "\x1b[31mred",
            None,
            42,
            b"bytes",
        ],
    )
    def test_a_bad_conversation_id_is_refused(
        self, store: EventStore, conversation_id: Any
    ) -> None:
        marker = start(store, new_id())[-1]
        attempt = [started(), message(1)]
        with pytest.raises(InvalidInputError) as caught:
            store.append(conversation_id, attempt, expected_version=0)
        assert isinstance(caught.value, ValueError)
        with pytest.raises(InvalidInputError):
            store.read(conversation_id)
        assert_not_written(store, marker, [e.event_id for e in attempt])

    def test_a_conversation_id_of_200_printable_characters_is_fine(self, store: EventStore) -> None:
        cid = ("é✓" + uuid.uuid4().hex) * 10
        cid = cid[:200]
        start(store, cid)
        assert [e.conversation_id for e in store.read(cid)] == [cid]
        assert store.stream_info(cid).conversation_id == cid  # type: ignore[union-attr]

    def test_an_empty_append_is_refused(self, store: EventStore) -> None:
        cid = new_id()
        with pytest.raises(InvalidInputError):
            store.append(cid, [], expected_version=0)
        start(store, cid)
        before = store.read(cid)
        with pytest.raises(InvalidInputError):
            store.append(cid, [], expected_version=1)
        assert store.read(cid) == before

    @pytest.mark.parametrize("expected_version", [-1, "0", 1.0, None, True, False])
    def test_a_bad_expected_version_is_refused(
        self, store: EventStore, expected_version: Any
    ) -> None:
        cid = new_id()
        start(store, cid)
        before = store.read(cid)
        with pytest.raises(InvalidInputError, match="expected_version"):
            store.append(cid, [message(1)], expected_version=expected_version)
        fresh = new_id()
        with pytest.raises(InvalidInputError, match="expected_version"):
            store.append(fresh, [started()], expected_version=expected_version)
        assert store.read(cid) == before
        assert store.read(fresh) == []

    @pytest.mark.parametrize(
        "event",
        [
            pytest.param(
                NewEvent(data=ModelResponded(turn=1, response={}, latency_ms=math.nan)),
                id="nan-field",
            ),
            pytest.param(
                NewEvent(data=ModelResponded(turn=1, response={}, latency_ms=math.inf)),
                id="inf-field",
            ),
            pytest.param(
                NewEvent(data=FunctionCalled(turn=1, name="f", args={"x": [math.nan]})),
                id="nan-in-args",
            ),
            pytest.param(
                NewEvent(data=TurnRewound(turn=1), metadata={"tags": {"a", "b"}}), id="set-metadata"
            ),
            pytest.param(
                NewEvent(data=TurnRewound(turn=1), metadata={"raw": b"\x00"}), id="bytes-metadata"
            ),
            pytest.param(
                NewEvent(data=TurnRewound(turn=1), metadata={"o": object()}), id="object-metadata"
            ),
            pytest.param(
                NewEvent(data=TurnRewound(turn=1), metadata={"x": -math.inf}), id="inf-metadata"
            ),
            pytest.param(
                NewEvent(data=TurnRewound(turn=1), metadata={"s": "\ud800"}), id="surrogate"
            ),
            pytest.param(NewEvent(data=TurnRewound(turn=1), metadata=None), id="metadata-none"),  # type: ignore[arg-type]
            pytest.param(NewEvent(data={"turn": 1}), id="data-not-a-kind"),  # type: ignore[arg-type]
            pytest.param(NewEvent(data=TurnRewound(turn=1), event_id=""), id="empty-event-id"),
            pytest.param(
                NewEvent(data=TurnRewound(turn=1), event_id="e" * 101), id="huge-event-id"
            ),
            pytest.param(
                NewEvent(data=TurnRewound(turn=1), event_id="a\nb"), id="nonprintable-event-id"
            ),
            pytest.param(TurnRewound(turn=1), id="not-a-new-event"),
        ],
    )
    def test_unstorable_events_are_refused_and_nothing_is_written(
        self, store: EventStore, event: Any
    ) -> None:
        cid = new_id()
        marker = start(store, cid)[-1]
        before, info = store.read(cid), store.stream_info(cid)
        good = message(1)
        with pytest.raises(InvalidInputError):
            store.append(cid, [good, event], expected_version=1)
        with pytest.raises(InvalidInputError):
            store.append(cid, [event], expected_version=1)
        assert store.read(cid) == before
        assert store.stream_info(cid) == info
        assert_not_written(store, marker, [good.event_id])
        assert store.verify(cid).ok

    def test_duplicate_event_ids_in_one_append_are_refused(self, store: EventStore) -> None:
        cid = new_id()
        first = started()
        with pytest.raises(InvalidInputError):
            store.append(cid, [first, message(1, event_id=first.event_id)], expected_version=0)
        assert store.read(cid) == []

    @pytest.mark.parametrize(
        "kw",
        [{"after_version": -1}, {"to_version": -1}, {"after_version": "1"}, {"to_version": 2.5}],
    )
    def test_a_bad_read_range_is_refused(self, store: EventStore, kw: dict[str, Any]) -> None:
        cid = new_id()
        start(store, cid, message(1))
        with pytest.raises(InvalidInputError):
            store.read(cid, **kw)

    @pytest.mark.parametrize(
        "kw", [{"after_position": -1}, {"limit": 0}, {"limit": -5}, {"limit": "9"}]
    )
    def test_a_bad_read_all_range_is_refused(self, store: EventStore, kw: dict[str, Any]) -> None:
        start(store, new_id())
        with pytest.raises(InvalidInputError):
            store.read_all(**kw)

    @pytest.mark.parametrize("limit", [-1, 0, 1.5, "2", True])
    def test_a_bad_conversations_limit_is_refused(self, store: EventStore, limit: object) -> None:
        start(store, new_id())
        with pytest.raises(InvalidInputError):
            store.conversations(limit=limit)  # type: ignore[arg-type]

    def test_appending_an_unknown_event_keeps_its_type_and_schema_version(
        self, store: EventStore
    ) -> None:
        """An event from a newer chatledger (say, in an import) is stored as it was."""
        cid = new_id()
        start(store, cid)
        unknown = UnknownEvent(type="reaction_added", data={"emoji": "+1"}, version=3)
        store.append(cid, [NewEvent(data=unknown)], expected_version=1)
        event = store.read(cid)[-1]
        assert (event.type, event.schema_version) == ("reaction_added", 3)
        assert event.data == unknown
        assert store.verify(cid).ok

    # ------------------------------------------------------------- property

    def test_random_appends_read_back_exactly(self, store: EventStore) -> None:
        """Random batches of random kinds, interleaved over three conversations, read back
        exactly: data and metadata round-trip, versions are gapless, positions increase,
        and every stream verifies. (The property is defined per call so that it runs on
        this test's store; each example writes conversations of its own.)"""

        @settings(max_examples=40, deadline=None)
        @given(
            steps=APPEND_STEPS,
            starts=st.lists(
                st.tuples(KIND_DATA["conversation_started"], METADATA), min_size=3, max_size=3
            ),
            data=st.data(),
        )
        def appends_read_back_exactly(
            steps: list[tuple[int, list[tuple[EventData, dict[str, Any]]]]],
            starts: list[tuple[EventData, dict[str, Any]]],
            data: st.DataObject,
        ) -> None:
            cids = [new_id() for _ in range(3)]
            model: dict[str, list[NewEvent]] = {cid: [] for cid in cids}
            order: list[str] = []
            positions: dict[str, list[int]] = {cid: [] for cid in cids}
            for index, batch in steps:
                cid = cids[index]
                events = [NewEvent(data=d, metadata=m) for d, m in batch]
                if not model[cid]:
                    first_data, first_metadata = starts[index]
                    events.insert(0, NewEvent(data=first_data, metadata=first_metadata))
                if not events:
                    continue
                got = store.append(cid, events, expected_version=len(model[cid]))
                assert len(got) == len(events)
                assert increasing(got)
                model[cid].extend(events)
                positions[cid].extend(got)
                order.extend(e.event_id for e in events)

            written = [cid for cid in cids if model[cid]]
            for cid in written:
                stored = store.read(cid)
                expected = model[cid]
                assert [e.version for e in stored] == list(range(1, len(expected) + 1))
                assert [e.event_id for e in stored] == [e.event_id for e in expected]
                assert [e.type for e in stored] == [e.type for e in expected]
                assert [e.data for e in stored] == [e.data for e in expected]
                assert [e.metadata for e in stored] == [e.metadata for e in expected]
                assert [e.position for e in stored] == positions[cid]
                cut = data.draw(st.integers(0, len(expected)), label="after_version")
                assert store.read(cid, after_version=cut) == stored[cut:]
                report = store.verify(cid)
                assert report.ok, report.problems
                assert report.events_checked == len(expected)

            first = min(p for cid in written for p in positions[cid])
            everything = events_after(store, first - 1)
            assert increasing([e.position for e in everything])
            assert [e.event_id for e in everything if e.conversation_id in cids] == order

        appends_read_back_exactly()
