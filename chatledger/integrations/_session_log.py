"""What every framework session kept in the log shares: a list of JSON items as events.

A session is one conversation of the log. Its first event is ``conversation_started``
(its ``model`` and its metadata's ``integration`` name the framework); then
``session_items_added`` (the items, exactly as given), ``session_item_popped`` (naming the
item taken off) and ``session_cleared``. The items of a session at a version are a fold of
those events: nothing is ever deleted, so every state the session went through can be
read again, ``verify`` covers every item, and a fork starts from its parent's items.

Writes follow the log's optimistic concurrency: read the new events, decide, append at
the version read; if another writer (thread, process or host) appended first, read again
and decide again. So a pop always takes off the item that is last when it is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec

from .._version import __version__
from ..client import Client, current_actor, default_actor
from ..errors import (
    ChatStateError,
    ConcurrencyError,
    ConversationBusyError,
    IntegrityError,
    InvalidInputError,
)
from ..events import (
    ConversationStarted,
    EventData,
    EventStore,
    NewEvent,
    ParentRef,
    RecordedEvent,
    SessionCleared,
    SessionItemPopped,
    SessionItemsAdded,
    VerificationReport,
    open_store,
)
from ..events.envelope import check_json, validate_conversation_id

__all__ = ["MAX_ADD_BYTES", "MAX_ITEMS_PER_ADD", "Entry", "SessionLog"]

#: The most items one ``add`` may carry, and their most bytes as JSON: an add is one
#: event, and an event is read whole.
MAX_ITEMS_PER_ADD = 10_000
MAX_ADD_BYTES = 64 * 1024 * 1024
#: How often a write reads again and retries when other writers keep appending first.
_WRITE_ATTEMPTS = 50

T = TypeVar("T")

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class Entry(NamedTuple):
    """One item of a session, and where it was added: (conversation, version, index)."""

    conversation_id: str
    version: int
    item_index: int
    item: dict[str, Any]


def copy_items(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Independent copies of ``items`` (a caller may change what it is given)."""
    if not items:
        return []
    copied: list[dict[str, Any]] = _decode(_encode(list(items)))
    return copied


class SessionLog:
    """The items of one session, kept in the log (thread-safe; the methods block).

    ``store`` is a :class:`chatledger.Client` (its store and actor are used), an
    :class:`~chatledger.events.EventStore`, or anything :func:`chatledger.open_store`
    takes (a path, ``":memory:"``, a URL; ``None``: ``CHATLEDGER_DB`` or memory), which
    :meth:`close` then closes. ``integration`` names the framework (``"openai-agents"``,
    ``"langchain"``): a session is only ever opened as what it was created as.
    """

    def __init__(
        self,
        store: Any,
        session_id: str,
        *,
        integration: str,
        actor: str | None = None,
        noun: str = "item",
    ) -> None:
        validate_conversation_id(session_id)
        if actor is not None and (
            not isinstance(actor, str) or not actor or len(actor) > 200 or not actor.isprintable()
        ):
            raise InvalidInputError(
                "an actor must be a non-empty printable string of at most 200 characters"
            )
        self.session_id = session_id
        self.integration = integration
        self.noun = noun
        if isinstance(store, Client):
            self.store: EventStore = store.store
            self._actor = actor or store.actor
            self._owns_store = False
        else:
            self._owns_store = not isinstance(store, EventStore)
            self.store = open_store(store)
            self._actor = actor or default_actor()
        self._lock = threading.RLock()
        self._closed = False
        self._version = 0
        self._entries: list[Entry] = []

    # ----------------------------------------------------------------- reading

    @property
    def version(self) -> int:
        """The version of the last event read (0: the session has no events yet)."""
        return self._version

    def items(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The session's items, oldest first: the last ``limit`` of them when given (0 or
        less: none, as openai-agents' Redis, MongoDB and Dapr sessions do)."""
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise InvalidInputError(f"limit must be an integer or None, got {limit!r:.40}")
        with self._lock:
            self._check_open()
            self._catch_up()
            entries = self._entries
            if limit is not None:
                entries = entries[-limit:] if limit > 0 else []
            return copy_items([entry.item for entry in entries])

    def items_as_of(self, version: int) -> list[dict[str, Any]]:
        """The session's items as they were once the event at ``version`` was written."""
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise InvalidInputError(f"version must be an integer >= 0, got {version!r:.40}")
        with self._lock:
            self._check_open()
            if version == 0:
                return []
            entries, head = fold_session(self.store, self.session_id, self.integration, version)
            if head < version:
                raise InvalidInputError(
                    f"session {self.session_id!r} has versions 1 to {head}; it has no version "
                    f"{version} yet"
                )
            return copy_items([entry.item for entry in entries])

    def events(self) -> list[RecordedEvent]:
        """Every event of this session's conversation, oldest first."""
        with self._lock:
            self._check_open()
            return self.store.read(self.session_id)

    def verify(self) -> VerificationReport:
        """Check this session's hash chain (and its fork parent); see ``EventStore.verify``."""
        with self._lock:
            self._check_open()
            return self.store.verify(self.session_id)

    # ----------------------------------------------------------------- writing

    def add(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Append ``items`` (JSON objects) in one event; no event for an empty list."""
        checked = check_items(items, self.noun)
        if not checked:
            with self._lock:
                self._check_open()
            return
        self._write(lambda _entries: ([SessionItemsAdded(items=checked)], None))

    def pop(self) -> dict[str, Any] | None:
        """Take off the last item and return it (None, and no event, when there is none)."""

        def build(entries: list[Entry]) -> tuple[list[EventData], dict[str, Any] | None]:
            if not entries:
                return [], None
            last = entries[-1]
            popped = SessionItemPopped(
                item_version=last.version,
                item_index=last.item_index,
                item_conversation_id=(
                    last.conversation_id if last.conversation_id != self.session_id else None
                ),
            )
            return [popped], copy_items([last.item])[0]

        return self._write(build)

    def clear(self) -> None:
        """Take off every item, with one ``session_cleared`` event (none when the session
        has no events at all)."""
        self._write(
            lambda entries: ([SessionCleared(count=len(entries))] if self._version else [], None)
        )

    def fork(self, new_session_id: str, *, at: int | None = None) -> None:
        """Start session ``new_session_id`` from this one's items at version ``at`` (default:
        now). Nothing is copied: its first event names this conversation, the version and
        that event's hash."""
        validate_conversation_id(new_session_id)
        with self._lock:
            self._check_open()
            self._catch_up()
            version = self._version if at is None else at
            if not isinstance(version, int) or isinstance(version, bool):
                raise InvalidInputError(f"at must be a version number, got {version!r:.40}")
            if not 1 <= version <= self._version:
                raise InvalidInputError(
                    f"session {self.session_id} has versions 1 to {self._version}; cannot fork "
                    f"it at {version}" + ("" if self._version else ": add items first")
                )
            anchor = self.store.read(self.session_id, after_version=version - 1, to_version=version)
            started = ConversationStarted(
                model=self.integration,
                parent=ParentRef(
                    conversation_id=self.session_id, version=version, hash=anchor[0].hash
                ),
            )
            event = NewEvent(data=started, metadata=self._started_metadata())
            try:
                self.store.append(new_session_id, [event], expected_version=0)
            except ConcurrencyError:
                raise InvalidInputError(
                    f"there is already a conversation {new_session_id!r} in {self.store.location}; "
                    "fork to another session id"
                ) from None

    def sibling(self, session_id: str) -> SessionLog:
        """Session ``session_id`` of the same integration in the same store, with the same
        actor (the store stays this session's to close)."""
        return SessionLog(
            self.store, session_id, integration=self.integration, actor=self._actor, noun=self.noun
        )

    def close(self) -> None:
        """Stop using this session; close the store if it was opened here."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._owns_store:
                self.store.close()

    # ----------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise ChatStateError(
                f"the {self.integration} session {self.session_id!r} is closed; open a new one"
            )

    def _actor_now(self) -> str:
        return current_actor() or self._actor

    def _started_metadata(self) -> dict[str, Any]:
        return {
            "actor": self._actor_now(),
            "library": f"chatledger/{__version__}",
            "integration": self.integration,
        }

    def _catch_up(self) -> None:
        if self._version == 0:
            entries, version = fold_session(self.store, self.session_id, self.integration, None)
            self._entries, self._version = entries, version
            return
        for event in self.store.read(self.session_id, after_version=self._version):
            apply_event(self._entries, event)
            self._version = event.version

    def _write(self, build: Callable[[list[Entry]], tuple[list[EventData], T]]) -> T:
        """Read the new events, ``build`` the events to write from the items, append them
        at the version read; read again and rebuild when another writer came first."""
        with self._lock:
            self._check_open()
            for _ in range(_WRITE_ATTEMPTS):
                self._catch_up()
                datas, result = build(self._entries)
                if not datas:
                    return result
                metadata = {"actor": self._actor_now()}
                events = [NewEvent(data=data, metadata=dict(metadata)) for data in datas]
                expected = self._version
                if expected == 0:
                    started = ConversationStarted(model=self.integration)
                    events.insert(0, NewEvent(data=started, metadata=self._started_metadata()))
                try:
                    self.store.append(self.session_id, events, expected_version=expected)
                except ConcurrencyError:
                    continue
                self._catch_up()
                return result
            raise ConversationBusyError(
                f"session {self.session_id!r} is being written by other writers so fast that "
                f"{_WRITE_ATTEMPTS} attempts to append came second; retry later"
            )


def check_items(items: Any, noun: str = "item") -> list[dict[str, Any]]:
    """``items`` as a list of JSON objects the log can store, or InvalidInputError
    naming the bad one (``noun`` is what the caller calls an item)."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise InvalidInputError(
            f"{noun}s must be a list of JSON objects, got {type(items).__name__}"
        )
    if len(items) > MAX_ITEMS_PER_ADD:
        raise InvalidInputError(
            f"{len(items)} {noun}s in one add; add at most {MAX_ITEMS_PER_ADD} at a time"
        )
    checked: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidInputError(
                f"{noun} {index} is a {type(item).__name__}, not a JSON object (a dict)"
            )
        value = dict(item)
        check_json(value, f"{noun} {index}")
        checked.append(value)
    if checked:
        size = len(_encode(checked))
        if size > MAX_ADD_BYTES:
            raise InvalidInputError(
                f"these {noun}s take {size:,} bytes as JSON; one add may hold at most "
                f"{MAX_ADD_BYTES:,}: add them in smaller batches"
            )
    return checked


def apply_event(entries: list[Entry], event: RecordedEvent) -> None:
    """Advance ``entries`` (the items, oldest first) by one event of the session."""
    data = event.data
    if isinstance(data, SessionItemsAdded):
        entries.extend(
            Entry(event.conversation_id, event.version, index, item)
            for index, item in enumerate(data.items)
        )
    elif isinstance(data, SessionItemPopped):
        named = (
            data.item_conversation_id or event.conversation_id,
            data.item_version,
            data.item_index,
        )
        if not entries or entries[-1][:3] != named:
            raise IntegrityError(
                f"{event.conversation_id} v{event.version} pops item {data.item_index} of "
                f"{named[0]} v{named[1]}, which is not the session's last item there: the log "
                "was not written by chatledger's sessions; run verify, and check where it came from"
            )
        entries.pop()
    elif isinstance(data, SessionCleared):
        entries.clear()


def fold_session(
    store: EventStore, session_id: str, integration: str, to_version: int | None
) -> tuple[list[Entry], int]:
    """The items of session ``session_id`` at ``to_version`` (default: its head), and the
    version folded (0 for no session). A fork starts from its parent's items (and so on
    up to the root: iteratively, so a chain of forks of any length folds)."""
    chain: list[list[RecordedEvent]] = []
    seen: set[str] = set()
    current, limit = session_id, to_version
    expected_hash: str | None = None
    while True:
        if current in seen:
            raise IntegrityError(f"session {current} is its own ancestor; run verify")
        seen.add(current)
        events = store.read(current, to_version=limit)
        if not events:
            if chain:
                raise IntegrityError(
                    f"session {chain[-1][0].conversation_id} was forked from {current}, which "
                    f"is not in {store.location}; run verify"
                )
            return [], 0
        if expected_hash is not None and (len(events) != limit or events[-1].hash != expected_hash):
            raise IntegrityError(
                f"session {chain[-1][0].conversation_id} was forked from {current} v{limit}, "
                "which is not in the log as it was then; run verify"
            )
        _check_first(events[0], integration, store)
        chain.append(events)
        first = events[0].data
        assert isinstance(first, ConversationStarted)
        if first.parent is None:
            break
        current, limit, expected_hash = (
            first.parent.conversation_id,
            first.parent.version,
            first.parent.hash,
        )
    entries: list[Entry] = []
    for events in reversed(chain):
        for event in events:
            apply_event(entries, event)
    return entries, chain[0][-1].version


def _check_first(event: RecordedEvent, integration: str, store: EventStore) -> None:
    """Refuse to read a conversation that is not a session of ``integration``."""
    data = event.data
    found = event.metadata.get("integration")
    if isinstance(data, ConversationStarted) and found == integration:
        return
    if isinstance(found, str):
        what = f"{_a(found)} {found:.40} session"
    elif isinstance(data, ConversationStarted):
        what = f"a chat conversation (model {data.model!r:.80})"
    else:
        what = f"not a conversation (its first event is {event.type!r:.40})"
    raise InvalidInputError(
        f"{event.conversation_id!r} in {store.location} is {what}, not {_a(integration)} "
        f"{integration} session; use another session id"
    )


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
