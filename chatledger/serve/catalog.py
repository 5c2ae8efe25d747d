"""Listing and searching conversations: one small interface, :class:`Catalog`.

Today it is implemented by :class:`StoreCatalog` with what every store offers: the
newest-first listing comes from ``store.conversations(limit=...)``; searches by text, id,
model and actor run over an index kept in this process's memory, built once by reading
the whole log in position order (``store.read_all``) and then kept current by reading
the events appended since, by any process, before each search. A conversation-summaries
read model kept by the store (written in the same transaction as the events) can later
implement the same interface without the pages or the API changing.

What the index knows of each conversation: its id, its current model, a title (the
first words of the first message it added; a fork without one yet shows its parent's),
every actor who wrote to it, when it started and was last updated, its version and its
parent. Text search looks at the id and the title, not at every message.

The index follows the log in position order, as every subscriber does: on PostgreSQL an
event becomes readable that way once every older transaction of the server has ended
(so that a reader never skips one), so the index can trail the newest events by the
longest transaction running at the time. A plain listing reads the store's heads and is
never behind; only a brand-new conversation's title may show a moment late.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import msgspec

from ..errors import ChatledgerError, InvalidInputError
from ..events.envelope import RecordedEvent
from ..events.kinds import ConfigChanged, ConversationStarted, UserMessageAdded
from ..events.store import EventStore, StreamInfo

__all__ = [
    "Catalog",
    "CatalogPage",
    "ConversationCard",
    "StoreCatalog",
    "content_text",
]

TITLE_LENGTH = 160
MAX_ACTORS = 32
MAX_QUERY = 200


class ConversationCard(msgspec.Struct, frozen=True, kw_only=True):
    """One conversation as a listing shows it."""

    conversation_id: str
    model: str
    title: str
    #: Who started it, then everyone else who wrote to it (at most 32 names).
    actors: tuple[str, ...]
    created_at: str
    updated_at: str
    #: The version of its last event (how many events it has).
    version: int
    parent_id: str | None = None
    parent_version: int | None = None
    #: Turns in its history, when the catalog knows them cheaply (a read model will).
    turns: int | None = None


class CatalogPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a listing or search, newest first."""

    items: list[ConversationCard]
    page: int
    page_size: int
    has_more: bool
    #: How many conversations match, when known (a plain listing does not count them).
    total: int | None = None
    #: False while the index is still being built (the search saw only part of the log).
    complete: bool = True
    #: How long the query took, in milliseconds (shown on the page and in the API).
    elapsed_ms: float = 0.0


class Catalog(Protocol):
    """What the pages and the API need to list and find conversations."""

    def search(
        self,
        *,
        text: str | None = None,
        model: str | None = None,
        actor: str | None = None,
        page: int = 1,
        page_size: int = 25,
    ) -> CatalogPage:
        """Conversations matching every filter given, most recently updated first (the
        store's order of their last events).

        ``text``: case-insensitive, in the id or the title; ``model``: case-insensitive,
        in the current model's name; ``actor``: exactly one of the actors."""
        ...

    def card(self, conversation_id: str) -> ConversationCard | None:
        """One conversation's card, or None if there is no such conversation."""
        ...

    def start(self) -> None:
        """Begin any background work (building an index)."""
        ...

    def close(self) -> None:
        """Stop background work."""
        ...


def content_text(content: Any) -> str:
    """The text parts of a wire content, joined and with whitespace collapsed."""
    if not isinstance(content, dict):
        return ""
    parts = content.get("parts")
    if not isinstance(parts, list):
        return ""
    texts = [
        part["text"]
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought")
    ]
    return " ".join(" ".join(texts).split())


def _shorten(text: str, length: int = TITLE_LENGTH) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


class _Entry:
    """A conversation in the index (mutable; cards are made from it)."""

    __slots__ = (
        "actors",
        "conversation_id",
        "created_at",
        "haystack",
        "model",
        "model_key",
        "own_title",
        "parent_id",
        "parent_version",
        "position",
        "title",
        "updated_at",
        "version",
    )

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        self.model = ""
        self.model_key = ""  # lowercased, for searches
        self.title = ""
        self.own_title = False
        self.actors: list[str] = []
        self.created_at = ""
        self.updated_at = ""
        self.version = 0
        self.parent_id: str | None = None
        self.parent_version: int | None = None
        #: The store-wide position of its last event: the listing's order.
        self.position = 0
        self.haystack = conversation_id.lower()

    def set_title(self, title: str, *, own: bool) -> None:
        self.title = _shorten(title)
        self.own_title = own
        self.haystack = f"{self.conversation_id}\n{self.title}".lower()

    def card(self, info: StreamInfo | None = None) -> ConversationCard:
        return ConversationCard(
            conversation_id=self.conversation_id,
            model=self.model,
            title=self.title,
            actors=tuple(self.actors),
            created_at=self.created_at,
            updated_at=info.updated_at if info is not None else self.updated_at,
            version=info.version if info is not None else self.version,
            parent_id=self.parent_id,
            parent_version=self.parent_version,
        )


def _position(entry: _Entry) -> int:
    return entry.position


def _apply(entries: dict[str, _Entry], event: RecordedEvent) -> None:
    """Apply one event to the index. In an ``OrderedDict`` the conversation moves to the
    end: the entries stay in the order of their last event, newest last."""
    entry = entries.get(event.conversation_id)
    if entry is None:
        entry = entries[event.conversation_id] = _Entry(event.conversation_id)
    elif isinstance(entries, OrderedDict):
        entries.move_to_end(event.conversation_id)
    data = event.data
    if isinstance(data, ConversationStarted):
        entry.model = data.model
        entry.model_key = data.model.lower()
        entry.created_at = event.recorded_at
        if data.parent is not None:
            entry.parent_id = data.parent.conversation_id
            entry.parent_version = data.parent.version
            parent = entries.get(data.parent.conversation_id)
            if parent is not None and parent.title:
                entry.set_title(parent.title, own=False)
        else:
            first = next(
                (
                    text
                    for c in data.history
                    if (text := content_text(c)) and c.get("role") == "user"
                ),
                "",
            )
            if first:
                entry.set_title(first, own=False)
    elif isinstance(data, UserMessageAdded):
        if not entry.own_title:
            text = content_text(data.content)
            if text:
                entry.set_title(text, own=True)
    elif isinstance(data, ConfigChanged) and data.model is not None:
        entry.model = data.model
        entry.model_key = data.model.lower()
    actor = event.actor
    if actor and actor not in entry.actors and len(entry.actors) < MAX_ACTORS:
        entry.actors.append(actor)
    entry.version = event.version
    entry.updated_at = event.recorded_at
    entry.position = event.position


def _check_filter(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_QUERY or not value.isprintable():
        raise InvalidInputError(f"{name} must be printable text of at most {MAX_QUERY} characters")
    value = value.strip()
    return value or None


def _check_page(page: int, page_size: int) -> None:
    if not isinstance(page, int) or isinstance(page, bool) or not 1 <= page <= 1_000_000:
        raise InvalidInputError("page must be a number from 1 to 1000000")
    if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= 500:
        raise InvalidInputError("page_size must be a number from 1 to 500")


class StoreCatalog:
    """:class:`Catalog` over any :class:`~chatledger.events.store.EventStore`.

    ``start()`` builds the search index in a background thread; a search that arrives
    before it is done waits up to ``build_wait`` seconds, then answers from what has been
    read so far (``complete=False``). Plain listings never wait.
    """

    def __init__(self, store: EventStore, *, build_wait: float = 30.0, batch: int = 2000) -> None:
        self.store = store
        self.build_wait = build_wait
        self.batch = batch
        # In the order of each conversation's last event (store order), newest last: a
        # listing walks it backwards and stops after a page, with no sort.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # The same entries in a plain dict, which a search scans (twice as fast).
        self._by_id: dict[str, _Entry] = {}
        self._position = 0
        self._lock = threading.Lock()  # guards _entries and _position
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: ChatledgerError | None = None
        self._suggestions: tuple[float, list[str], list[str]] | None = None
        #: Seconds the first build took (None until it is done).
        self.build_seconds: float | None = None

    # ----------------------------------------------------------------- the index

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._build, name="chatledger-catalog", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def _build(self) -> None:
        started = time.perf_counter()
        try:
            while not self._stop.is_set():
                if not self._read_batch():
                    break
        except ChatledgerError as exc:  # a damaged log: searches report it
            self._error = exc
        finally:
            self.build_seconds = time.perf_counter() - started
            self._ready.set()

    def _read_batch(self) -> bool:
        """Apply the next batch of events; False when there were none left."""
        with self._lock:
            events = self.store.read_all(after_position=self._position, limit=self.batch)
            for event in events:
                _apply(self._entries, event)
                if event.version == 1 or event.conversation_id not in self._by_id:
                    self._by_id[event.conversation_id] = self._entries[event.conversation_id]
            if events:
                self._position = events[-1].position
            return len(events) == self.batch

    def refresh(self) -> None:
        """Apply the events appended since the last look (by any process)."""
        if not self._ready.is_set():
            return  # the builder thread is reading them
        if self._error is not None:
            raise self._error
        while self._read_batch():
            pass

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        self.start()
        return self._ready.wait(self.build_wait if timeout is None else timeout)

    # ----------------------------------------------------------------- queries

    def card(self, conversation_id: str) -> ConversationCard | None:
        info = self.store.stream_info(conversation_id)
        if info is None:
            return None
        return self._cards([info])[0]

    def _cards(self, infos: Sequence[StreamInfo]) -> list[ConversationCard]:
        if self._ready.is_set() and self._error is None:
            self.refresh()
        cards: list[ConversationCard] = []
        for info in infos:
            with self._lock:
                entry = self._entries.get(info.conversation_id)
                card = entry.card(info) if entry is not None and entry.version else None
            cards.append(card if card is not None else self._card_from_store(info))
        return cards

    def _card_from_store(self, info: StreamInfo) -> ConversationCard:
        """A card read from the conversation's first events (the index is not there yet)."""
        entries: dict[str, _Entry] = {}
        if info.parent_id is not None:
            parent = self._entries.get(info.parent_id)
            if parent is not None:
                entries[info.parent_id] = parent
        for event in self.store.read(info.conversation_id, to_version=min(info.version, 4)):
            _apply(entries, event)
        return entries[info.conversation_id].card(info)

    def search(
        self,
        *,
        text: str | None = None,
        model: str | None = None,
        actor: str | None = None,
        page: int = 1,
        page_size: int = 25,
    ) -> CatalogPage:
        started = time.perf_counter()
        text = _check_filter(text, "text")
        model = _check_filter(model, "model")
        actor = _check_filter(actor, "actor")
        _check_page(page, page_size)
        offset = (page - 1) * page_size
        unfiltered = text is None and model is None and actor is None
        if unfiltered and (not self._ready.is_set() or self._error is not None):
            # The index is being built (or a damaged log stopped it): the store's own
            # listing, fresh and sorted in SQL.
            infos = self.store.conversations(limit=offset + page_size + 1)
            shown = infos[offset : offset + page_size]
            return CatalogPage(
                items=self._cards(shown),
                page=page,
                page_size=page_size,
                has_more=len(infos) > offset + page_size,
                elapsed_ms=(time.perf_counter() - started) * 1000,
            )
        complete = True if unfiltered else self.wait_until_ready()
        if complete:
            self.refresh()
        needle = text.lower() if text else None
        model_needle = model.lower() if model else None
        wanted = offset + page_size + 1  # one more than the page says whether there is more
        with self._lock:
            if unfiltered:
                # Newest first is the index's own order: walk back one page, no sort.
                matches = list(itertools.islice(reversed(self._entries.values()), wanted))
                total = None
            else:
                # A plain dict iterates twice as fast as the ordered one: scan it, then
                # take the newest matches by position.
                entries = self._by_id.values()
                # One comprehension per single filter (the common searches), one for more.
                only: str | None = None
                if needle is not None and model_needle is None and actor is None:
                    only = needle
                    found = [e for e in entries if only in e.haystack]
                elif model_needle is not None and needle is None and actor is None:
                    only = model_needle
                    found = [e for e in entries if only in e.model_key]
                elif actor is not None and needle is None and model_needle is None:
                    only = actor
                    found = [e for e in entries if only in e.actors]
                else:
                    found = [
                        e
                        for e in entries
                        if (needle is None or needle in e.haystack)
                        and (model_needle is None or model_needle in e.model_key)
                        and (actor is None or actor in e.actors)
                    ]
                total = len(found)
                matches = heapq.nlargest(wanted, found, key=_position)
            items = [entry.card() for entry in matches[offset : offset + page_size]]
        return CatalogPage(
            items=items,
            page=page,
            page_size=page_size,
            has_more=len(matches) > offset + page_size,
            total=total,
            complete=complete,
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )

    def suggestions(self) -> tuple[list[str], list[str]]:
        """Up to 100 model names and 100 actor names seen in the log, for the search
        form (recomputed at most every 10 seconds: it walks the whole index)."""
        now = time.monotonic()
        cached = self._suggestions
        if cached is not None and now - cached[0] < 10:
            return cached[1], cached[2]
        models: set[str] = set()
        actors: set[str] = set()
        with self._lock:
            for entry in self._entries.values():
                if len(models) < 100 and entry.model:
                    models.add(entry.model)
                if len(actors) < 100:
                    actors.update(entry.actors)
        result = (sorted(models), sorted(actors)[:100])
        self._suggestions = (now, *result)
        return result


def cards_of(entries: Iterable[ConversationCard]) -> list[dict[str, Any]]:
    """Cards as JSON-ready dicts (the API's shape)."""
    return [msgspec.to_builtins(card) for card in entries]
