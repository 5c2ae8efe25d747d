"""Listing and searching conversations (the Catalog) on real stores: newest first, paged,
by text, id, model and actor, and current with what other processes append."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import chatledger
from chatledger.client.transports import ScriptedTransport
from chatledger.errors import InvalidInputError
from chatledger.events.store import EventStore
from chatledger.serve.catalog import StoreCatalog
from tests.support.postgres import scratch_database

from .measure import populate


def make(store: EventStore) -> tuple[chatledger.Client, ScriptedTransport]:
    scripted = ScriptedTransport()
    return chatledger.Client(store=store, transport=scripted, actor="carol"), scripted


def fill(client: chatledger.Client, scripted: ScriptedTransport) -> dict[str, str]:
    ids = {}
    for name, model, actor, message in (
        ("refund", "gemini-2.5-flash", "alice", "I want a Refund for order 7"),
        ("invoice", "gemini-2.5-pro", "bob", "Where is my invoice?"),
        ("poem", "local", "alice", "Write a poem about ledgers"),
    ):
        scripted.enqueue("ok")
        with chatledger.acting_as(actor):
            chat = client.chats.create(model=model)
            chat.send_message(message)
        ids[name] = chat.id
    with chatledger.acting_as("dave"):
        scripted.enqueue("sure")
        client.chats.get(ids["refund"]).send_message("and quickly")  # now the newest
        fork = client.chats.get(ids["invoice"]).fork()
    ids["fork"] = fork.id
    return ids


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "sqlite":
        with chatledger.SQLiteStore(str(tmp_path / "catalog.db")) as sqlite:
            yield sqlite
        return
    from chatledger.events.postgres import PostgresStore

    with scratch_database("chatledger_serve") as url, PostgresStore(url) as postgres:
        yield postgres


def settled(catalog: StoreCatalog, store: EventStore) -> None:
    """Wait until the index has applied every event the store has.

    On PostgreSQL a reader following positions sees an event only once every
    transaction older than it has ended, cluster-wide (so it never skips one), and the
    server is shared with other tests: the index may trail for a moment."""
    catalog.start()
    assert catalog.wait_until_ready(30)
    total = sum(info.version for info in store.conversations())
    deadline = time.monotonic() + 30
    while True:
        catalog.refresh()
        with catalog._lock:
            applied = sum(entry.version for entry in catalog._entries.values())
        if applied == total or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert applied == total


def ids_of(page: object) -> list[str]:
    return [card.conversation_id for card in page.items]  # type: ignore[attr-defined]


def test_listing_is_newest_first_and_paged(store: EventStore) -> None:
    client, scripted = make(store)
    ids = fill(client, scripted)
    catalog = StoreCatalog(store)
    first = catalog.search(page=1, page_size=2)
    assert ids_of(first) == [ids["fork"], ids["refund"]] and first.has_more
    second = catalog.search(page=2, page_size=2)
    assert ids_of(second) == [ids["poem"], ids["invoice"]] and not second.has_more
    # The same order as the store's own listing, before and after the index exists.
    settled(catalog, store)
    assert ids_of(catalog.search(page_size=10)) == [
        info.conversation_id for info in store.conversations()
    ]
    card = catalog.card(ids["refund"])
    assert card is not None
    assert card.title == "I want a Refund for order 7"
    assert card.actors == ("alice", "dave") and card.model == "gemini-2.5-flash"
    assert card.version == 7
    fork = catalog.card(ids["fork"])
    assert fork is not None and fork.parent_id == ids["invoice"]
    assert fork.title == "Where is my invoice?"  # a fork without messages shows its parent's
    assert catalog.card("nope") is None
    catalog.close()


def test_search_by_text_id_model_and_actor(store: EventStore) -> None:
    client, scripted = make(store)
    ids = fill(client, scripted)
    catalog = StoreCatalog(store)
    settled(catalog, store)

    def found(**filters: str) -> set[str]:
        page = catalog.search(page_size=50, **filters)  # type: ignore[arg-type]
        assert page.complete and page.total == len(page.items)
        return set(ids_of(page))

    assert found(text="refund") == {ids["refund"]}  # case-insensitive, in the title
    assert found(text="INVOICE") == {ids["invoice"], ids["fork"]}
    assert found(text=ids["poem"][:8]) == {ids["poem"]}  # an id prefix
    assert found(model="gemini") == {ids["refund"], ids["invoice"], ids["fork"]}
    assert found(model="LOCAL") == {ids["poem"]}
    assert found(actor="alice") == {ids["refund"], ids["poem"]}
    assert found(actor="dave") == {ids["refund"], ids["fork"]}
    assert found(actor="Alice") == set()  # actors match exactly
    assert found(text="order", model="flash", actor="alice") == {ids["refund"]}
    assert found(text="no such words") == set()
    catalog.close()


def test_the_index_follows_what_another_client_appends(tmp_path: Path) -> None:
    path = str(tmp_path / "follow.db")
    writer, scripted = make(chatledger.SQLiteStore(path))
    first = fill(writer, scripted)
    with chatledger.SQLiteStore(path) as reader:
        catalog = StoreCatalog(reader)
        catalog.start()
        assert catalog.wait_until_ready(10)
        assert catalog.search(text="weather").total == 0
        scripted.enqueue("sunny")
        with chatledger.acting_as("erin"):
            chat = writer.chats.create(model="gemini-2.5-flash")
            chat.send_message("What's the weather?")
        later = catalog.search(text="weather")
        assert ids_of(later) == [chat.id] and later.items[0].actors == ("erin",)
        assert ids_of(catalog.search(page_size=1)) == [chat.id]
        scripted.enqueue("x")
        writer.chats.get(first["poem"]).send_message("more")
        assert catalog.card(first["poem"]).version == 7  # type: ignore[union-attr]
        catalog.close()
    writer.close()


def test_filters_are_validated(tmp_path: Path) -> None:
    with chatledger.SQLiteStore(str(tmp_path / "v.db")) as store:
        catalog = StoreCatalog(store)
        for bad in ({"text": "x" * 201}, {"model": "a\x00b"}, {"page": 0}, {"page_size": 501}):
            with pytest.raises(InvalidInputError):
                catalog.search(**bad)
        assert catalog.search(text="   ").items == []  # blank is no filter


def test_a_search_on_many_conversations_stays_bounded(tmp_path: Path) -> None:
    with chatledger.SQLiteStore(str(tmp_path / "many.db")) as store:
        populate(store, 3000)
        catalog = StoreCatalog(store)
        catalog.start()
        assert catalog.wait_until_ready(60)
        page = catalog.search(actor="agent-3", page=2, page_size=25)
        assert page.total == 300 and len(page.items) == 25 and page.has_more
        dates = [card.updated_at for card in page.items]
        assert dates == sorted(dates, reverse=True)
        rare = catalog.search(text="#2999")
        assert [card.title.endswith("#2999") for card in rare.items] == [True]
        catalog.close()


def test_the_api_and_page_list_through_the_catalog(tmp_path: Path) -> None:
    from .support import serve_in_thread

    client, scripted = make(chatledger.SQLiteStore(str(tmp_path / "api.db")))
    ids = fill(client, scripted)
    with client, serve_in_thread(client) as served:
        listing = served.http.get("/api/conversations?page_size=2").json()
        assert [c["conversation_id"] for c in listing["conversations"]] == [
            ids["fork"],
            ids["refund"],
        ]
        assert listing["has_more"] is True and listing["total"] is None
        search = served.http.get("/api/conversations?text=refund&actor=dave").json()
        assert [c["conversation_id"] for c in search["conversations"]] == [ids["refund"]]
        assert search["total"] == 1 and search["complete"] is True
        page = served.http.get("/?q=refund")
        assert ids["refund"] in page.text and ids["poem"] not in page.text
        bad = served.http.get("/api/conversations?page=0")
        assert bad.status_code == 400


def test_a_damaged_log_still_lists_and_says_so_on_search(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "damaged.db"
    client, scripted = make(chatledger.SQLiteStore(str(path)))
    ids = fill(client, scripted)
    client.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute(
            'UPDATE events SET data = \'{"turn": "x"}\' WHERE conversation_id = ? AND version = 2',
            (ids["poem"],),
        )
    with chatledger.SQLiteStore(str(path)) as store:
        catalog = StoreCatalog(store)
        catalog.start()
        assert catalog.wait_until_ready(10)
        listing = catalog.search(page_size=2)
        assert ids_of(listing) == [ids["fork"], ids["refund"]]
        with pytest.raises(chatledger.IntegrityError, match="run verify"):
            catalog.search(text="refund")
        catalog.close()
