"""A fork's chain of parents, damaged: every walk over parent links ends with a clear
error instead of looping or reading a wrong history (docs/branching.md).

A fork's first event names its parent conversation, version and hash. The store accepts
such an event as written (an import or a writer may name anything); ``verify`` names a
parent that is missing, cut short or different. Here each walk is tried on those logs,
on SQLite and PostgreSQL: replay (``replay_conversation``, ``recorded_calls``), opening
the chat (the fold), the tree of forks, export, and the CLI's ``tree`` and ``diff``.
A walk still running after ``HANG`` seconds fails the test: it would never have ended.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import chatledger
from chatledger.cli import cli
from chatledger.client import recorded_calls, replay_conversation
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.errors import IntegrityError
from chatledger.events import ConversationStarted, EventStore, NewEvent, ParentRef
from chatledger.events.audit import export_conversation
from tests.faults import ledger
from tests.faults.store_faults import Backend, backend_for
from tests.store_contract import new_id
from tests.support.postgres import scratch_database

#: How long a walk may take before the test calls it a hang (it takes milliseconds).
HANG = 30.0
NO_HASH = "0" * 64


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with scratch_database("chatledger_lineage") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return backend_for(request.param, tmp_path, url)


def outcome_of(walk: Callable[[], object]) -> BaseException | None:
    """Run ``walk`` in a thread; the exception it raised, or None. Still running after
    ``HANG`` seconds fails the test."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            walk()
        except BaseException as exc:
            result.append(exc)
        else:
            result.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert result, f"a walk over parent links was still running after {HANG:g} s: it loops"
    return result[0]


def fork_of(store: EventStore, parent: ParentRef, conversation_id: str | None = None) -> str:
    """A conversation whose first event names ``parent`` (what an import could write)."""
    cid = conversation_id or new_id()
    started = ConversationStarted(model="gemini-test", parent=parent)
    store.append(cid, [NewEvent(data=started)], expected_version=0)
    return cid


def a_parent(store: EventStore) -> str:
    """A real conversation of three events (a turn answered) to fork from."""
    transport = ScriptedTransport().enqueue("hello back")
    client = chatledger.Client(store=store, transport=transport, actor="lineage")
    chat = client.chats.create(model="gemini-test")
    chat.send_message("hello")
    return chat.id


def damaged(store: EventStore, damage: str) -> tuple[str, str]:
    """A fork with its chain of parents damaged as ``damage`` says; (fork id, what an
    error about it must say)."""
    if damage == "missing":  # its parent is not in the log
        ghost = new_id()
        return fork_of(store, ParentRef(conversation_id=ghost, version=1, hash=NO_HASH)), ghost
    if damage == "cut-short":  # the parent ends before the fork point
        parent = a_parent(store)
        return fork_of(store, ParentRef(conversation_id=parent, version=9, hash=NO_HASH)), parent
    if damage == "self":  # its own parent
        cid = new_id()
        fork_of(store, ParentRef(conversation_id=cid, version=1, hash=NO_HASH), cid)
        return cid, "its own ancestor"
    assert damage == "cycle"  # two conversations, each the other's parent
    first, second = new_id(), new_id()
    fork_of(store, ParentRef(conversation_id=second, version=1, hash=NO_HASH), first)
    anchor = store.read(first)[0].hash
    fork_of(store, ParentRef(conversation_id=first, version=1, hash=anchor), second)
    return second, "its own ancestor"


def walks(store: EventStore, cid: str) -> dict[str, Callable[[], object]]:
    client = chatledger.Client(store=store, transport=ScriptedTransport(), actor="lineage")
    return {
        "replay": lambda: replay_conversation(store, cid),
        "recorded_calls": lambda: recorded_calls(store, cid),
        "open": lambda: client.chats.get(cid).get_history(),
        "tree": lambda: client.chats.tree(cid),
        "export": lambda: list(export_conversation(store, cid)),
    }


@pytest.mark.parametrize("damage", ["missing", "cut-short", "self", "cycle"])
def test_every_walk_over_a_damaged_chain_of_parents_raises_a_clear_error(
    backend: Backend, damage: str
) -> None:
    with backend.open() as store:
        cid, named = damaged(store, damage)
        for name, walk in walks(store, cid).items():
            error = outcome_of(walk)
            assert isinstance(error, IntegrityError), f"{name}: {error!r}"
            assert named in str(error) and "run verify" in str(error), f"{name}: {error}"
        assert not store.verify().ok  # verify names the damage too
    ledger.record("store", f"damaged-lineage-{damage}/{backend.name}", faults=1)


@pytest.mark.parametrize("damage", ["missing", "cycle"])
def test_the_cli_tree_and_diff_say_what_is_wrong(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "lineage.db"
    with chatledger.SQLiteStore(path) as store:
        cid, named = damaged(store, damage)
        other = a_parent(store)
    runner = CliRunner()
    for args in (["tree", cid], ["diff", cid, other]):
        result = runner.invoke(cli, ["--db", str(path), *args])
        assert result.exit_code == 1, (args, result.output)
        assert "Error:" in result.output and named in result.output, (args, result.output)
        assert "Traceback" not in result.output


@pytest.mark.parametrize("damage", ["missing", "cycle"])
def test_chatledger_serve_answers_with_the_error(tmp_path: Path, damage: str) -> None:
    """The server's pages and API walk the same parents: a clear 500 naming the damage,
    never a request that hangs."""
    from tests.serve.support import serve_in_thread

    with chatledger.SQLiteStore(tmp_path / "served.db") as store:
        cid, named = damaged(store, damage)
        client = chatledger.Client(store=store, transport=ScriptedTransport(), actor="lineage")
        with serve_in_thread(client) as served:
            for path in (
                f"/api/conversations/{cid}",
                f"/api/conversations/{cid}/history",
                f"/api/conversations/{cid}/tree",
                f"/api/conversations/{cid}/export",
            ):
                response = served.http.get(path, timeout=HANG)
                assert response.status_code == 500, (path, response.text)
                error = response.json()["error"]
                assert error["type"] == "IntegrityError" and named in error["message"], path
    ledger.record("store", f"damaged-lineage-{damage}/serve", faults=4)
