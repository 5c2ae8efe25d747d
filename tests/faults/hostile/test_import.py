"""Hostile imports: random lines, forged exports (a field changed, lines reordered,
dropped, duplicated, spliced, a hash changed, a truncated line) and forgers who
recompute the whole chain, through ``import_lines`` and ``chatledger import``."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import chatledger
from chatledger.cli import cli
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.errors import ChatledgerError
from chatledger.events import (
    ConversationStarted,
    MemoryStore,
    NewEvent,
    ParentRef,
    SQLiteStore,
    event_hash,
)
from chatledger.events.audit import export_conversation, import_lines
from chatledger.events.erasure import hashed_data
from chatledger.events.store import EventStore
from tests.conftest import API_KEY
from tests.faults import ledger
from tests.faults.hostile.support import (
    ANY_CHARS,
    AREA,
    ENVELOPE,
    HYPOTHESIS,
    JSON_VALUES,
    JSONISH,
    MODEL,
    SQL,
    Tally,
    clear_replies,
    log_state,
    mutate_event,
    outcome,
    wires,
)
from tests.support.gemini_server import GeminiServer, text_response

# --------------------------------------------------------------------------- (c) importer


@pytest.fixture(scope="module")
def family(
    module_server: GeminiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[chatledger.Client, dict[str, chatledger.Chat]]]:
    """Real conversations to export: a root with text, a function call turn and a stream,
    a fork of it with a turn of its own, and an unrelated conversation. (Built once for
    the module: the tests only read them.)"""
    gemini_server = module_server
    clear_replies(gemini_server)
    with chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": gemini_server.base_url},
        store=str(tmp_path_factory.mktemp("family") / "origin.db"),
        actor="origin",
    ) as client:

        def lookup(city: str) -> str:
            """Look a city up."""
            return f"{city}: sunny"

        root = client.chats.create(
            model=MODEL, config={"system_instruction": "be brief", "tools": [lookup]}
        )
        gemini_server.reply_text("one")
        root.send_message("first")
        gemini_server.reply_json(
            text_response(parts=[{"functionCall": {"name": "lookup", "args": {"city": "Oslo"}}}])
        )
        gemini_server.reply_text("sunny")
        root.send_message("weather?")
        gemini_server.reply_sse([text_response("str", finish_reason=None), text_response("eamed")])
        list(root.send_message_stream("stream"))
        fork = root.fork(turn=1)
        gemini_server.reply_text("forked")
        fork.send_message("fork question")
        other = client.chats.create(model=MODEL)
        gemini_server.reply_text("other")
        other.send_message("unrelated")
        yield client, {"root": root, "fork": fork, "other": other}


def export_events(
    client: chatledger.Client, chat: chatledger.Chat, *, forks: bool = False
) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in export_conversation(client.store, chat.id, include_forks=forks)
    ]


def recompute(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a forger does: rehash every conversation's chain in version order, and point
    each fork at its parent's new hash."""
    events = [json.loads(json.dumps(event)) for event in events]
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_stream.setdefault(event["conversation_id"], []).append(event)
    new_hash: dict[tuple[str, int], str] = {}
    pending = list(by_stream)
    while pending:
        progressed = False
        for cid in list(pending):
            stream = sorted(by_stream[cid], key=lambda e: e["version"])
            parent = (
                stream[0]["data"].get("parent") if isinstance(stream[0].get("data"), dict) else None
            )
            if (
                isinstance(parent, dict)
                and parent.get("conversation_id") in pending
                and parent.get("conversation_id") != cid
            ):
                continue
            if (
                isinstance(parent, dict)
                and (parent.get("conversation_id"), parent.get("version")) in new_hash
            ):
                parent["hash"] = new_hash[(parent["conversation_id"], parent["version"])]
            prev = ""
            for event in stream:
                envelope = {k: event[k] for k in ENVELOPE}
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    # Content committed under the event's salt (docs/erasure.md).
                    envelope["data"] = hashed_data(
                        event["type"], event["data"], event.get("content_salt")
                    )
                event["hash"] = event_hash(**envelope, prev_hash=prev)
                prev = event["hash"]
                new_hash[(cid, event["version"])] = event["hash"]
            pending.remove(cid)
            progressed = True
        if not progressed:
            break
    return events


def lines_of(events: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(event, ensure_ascii=False) for event in events]


def try_import(
    store: EventStore, db_path: Path | None, lines: list[Any], tally: Tally, what: str
) -> Any:
    """Import; a refusal must be clear and change nothing. Returns the report or None."""
    before = log_state(store, db_path)
    report, error = outcome(lambda: import_lines(store, lines))
    tally.note(error)
    if error is not None:
        tally.refused(error, before, log_state(store, db_path), what)
        return None
    tally.check(store.verify().ok, f"{what}: accepted, but the store does not verify")
    return report


def read_everything(
    store: EventStore, db_path: Path, tally: Tally, what: str, only: list[str] | None = None
) -> None:
    """Every conversation of ``store`` reads back (or says clearly why not): histories,
    context, last response, config, usage, tree; and the CLI's log and show."""
    runner = CliRunner()
    client = chatledger.Client(store=store)
    transport = ScriptedTransport()
    sender = chatledger.Client(store=store, transport=transport, busy_timeout=0)
    for info in store.conversations():
        if only is not None and info.conversation_id not in only:
            continue
        for name, action in (
            ("get_history", lambda i=info: client.chats.get(i.conversation_id).get_history()),
            (
                "curated",
                lambda i=info: client.chats.get(i.conversation_id).get_history(curated=True),
            ),
            ("context", lambda i=info: client.chats.get(i.conversation_id).get_context()),
            ("last", lambda i=info: client.chats.get(i.conversation_id).last),
            ("config", lambda i=info: client.chats.get(i.conversation_id).config),
            ("tree", lambda i=info: client.chats.tree(i.conversation_id)),
            ("as_of", lambda i=info: client.chats.get(i.conversation_id).get_history(as_of=1)),
        ):
            _, error = outcome(action)
            tally.check(
                error is None or isinstance(error, ChatledgerError),
                f"{what}: {name}: {error!r:.300}",
            )
        # And the conversation goes on (or says clearly why it cannot): a send, a fork,
        # a re-run of its messages, a rewind.
        for _ in range(4):
            transport.enqueue("more")
        for name, goes_on in (
            ("send", lambda i=info: sender.chats.get(i.conversation_id).send_message("go on")),
            ("fork", lambda i=info: sender.chats.get(i.conversation_id).fork(turn=0)),
            ("rerun", lambda i=info: sender.chats.get(i.conversation_id).rerun()),
            ("rewind", lambda i=info: sender.chats.get(i.conversation_id).rewind()),
        ):
            _, error = outcome(goes_on)
            tally.check(
                error is None or isinstance(error, ChatledgerError),
                f"{what}: {name}: {error!r:.300}",
            )
        for command in ("log", "show", "tree", "replay"):
            result = runner.invoke(cli, ["--db", str(db_path), command, info.conversation_id])
            tally.check(
                result.exception is None or isinstance(result.exception, SystemExit),
                f"{what}: {command}: {result.exception!r:.300}",
            )
    _, error = outcome(lambda: client.chats.list())
    tally.check(
        error is None or isinstance(error, ChatledgerError), f"{what}: list: {error!r:.300}"
    )


RANDOM_LINES = st.lists(
    st.one_of(
        st.text(ANY_CHARS, max_size=30),
        st.binary(max_size=30),
        JSONISH.map(lambda v: json.dumps(v, default=repr)),
        st.dictionaries(
            st.sampled_from(
                [
                    "conversation_id",
                    "version",
                    "event_id",
                    "type",
                    "schema_version",
                    "data",
                    "metadata",
                    "recorded_at",
                    "hash",
                    "position",
                ]
            ),
            JSON_VALUES,
        ).map(json.dumps),
        st.sampled_from(
            ["[" * 10_000, "{" * 50_000 + "}" * 50_000, '{"a":"\\ud800"}', "\x00", "1e999"]
        ),
    ),
    max_size=5,
)


def test_random_import_lines(
    family: tuple[chatledger.Client, dict[str, chatledger.Chat]], tmp_path: Path
) -> None:
    """Random lines, and real export lines with one random value changed, mixed: an import
    is refused with a clear error and no change, or the result verifies and reads back."""
    client, chats = family
    real = export_events(client, chats["root"], forks=True)
    tally = Tally()
    target_path = tmp_path / "target.db"
    with SQLiteStore(target_path) as target:
        import_lines(target, lines_of(export_events(client, chats["other"])))

        @settings(HYPOTHESIS, max_examples=ledger.scale(60, 600))
        @given(
            noise=st.one_of(st.just([]), RANDOM_LINES),
            keep=st.one_of(
                st.just([True] * len(real)),
                st.lists(
                    st.sampled_from([True, True, True, False]),
                    min_size=len(real),
                    max_size=len(real),
                ),
            ),
            rng=st.randoms(use_true_random=False),
            replacement=JSONISH,
        )
        def one(noise: list[Any], keep: list[bool], rng: random.Random, replacement: Any) -> None:
            tally.inputs += 1
            events = [event for event, kept in zip(real, keep, strict=True) if kept]
            if events and rng.random() < 0.7:
                index = rng.randrange(len(events))
                events[index] = mutate_event(events[index], rng, replacement)
            lines: list[Any] = [
                json.dumps(e, default=repr, ensure_ascii=rng.random() < 0.5) for e in events
            ]
            for item in noise:
                lines.insert(rng.randrange(len(lines) + 1), item)
            report = try_import(target, target_path, lines, tally, f"lines {lines!r:.300}")
            if report is not None:
                # Only what this file brought: the target keeps every earlier import.
                read_everything(
                    target, target_path, tally, "random lines", only=report.conversations
                )

        one()
    tally.record("import/random and mutated lines")


def difference(old: Any, new: Any, path: str = "") -> str:
    """Where two JSON values first differ, for failure messages."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            if old.get(key, "<absent>") != new.get(key, "<absent>"):
                return difference(
                    old.get(key, "<absent>"), new.get(key, "<absent>"), f"{path}.{key}"
                )
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                return difference(a, b, f"{path}[{index}]")
    return f"{path}: {old!r:.100} -> {new!r:.100}"


def _swap_versions(events: list[dict[str, Any]], root: str) -> None:
    mine = [e for e in events if e["conversation_id"] == root]
    mine[1]["version"], mine[2]["version"] = mine[2]["version"], mine[1]["version"]


def forgeries(
    root: str, fork: str, other: str
) -> dict[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]]:
    """Tampering that must be refused, by what it does to a root+fork export."""

    def first(events: list[dict[str, Any]], cid: str, kind: str) -> dict[str, Any]:
        return next(e for e in events if e["conversation_id"] == cid and e["type"] == kind)

    def edit(
        change: Callable[[list[dict[str, Any]]], None],
    ) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
        def apply(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            change(events)
            return events

        return apply

    def text(events: list[dict[str, Any]]) -> None:
        first(events, root, "user_message_added")["data"]["content"]["parts"][0]["text"] = "forged"

    return {
        "edit message text": edit(text),
        "edit actor": edit(
            lambda es: first(es, root, "user_message_added")["metadata"].update(actor="mallory")
        ),
        "edit recorded_at": edit(
            lambda es: first(es, root, "model_responded").update(
                recorded_at="2020-01-01T00:00:00.000000Z"
            )
        ),
        "edit event_id": edit(
            lambda es: first(es, root, "model_responded").update(event_id="forged-id")
        ),
        "edit type": edit(
            lambda es: first(es, root, "model_call_started").update(type="model_call_failed")
        ),
        "edit schema_version": edit(
            lambda es: first(es, root, "model_responded").update(schema_version=2)
        ),
        "edit function args": edit(
            lambda es: first(es, root, "function_called")["data"]["args"].update(city="Paris")
        ),
        "edit model answer": edit(
            lambda es: first(es, root, "model_responded")["data"]["response"]["candidates"][0][
                "content"
            ]["parts"].append({"text": "!"})
        ),
        "change a hash": edit(lambda es: first(es, root, "model_responded").update(hash="f" * 64)),
        "change a hash's case": edit(
            lambda es: first(es, root, "model_responded").update(
                hash=first(es, root, "model_responded")["hash"].upper()
            )
        ),
        "swap two versions": edit(lambda es: _swap_versions(es, root)),
        "drop the first line": lambda es: es[1:],
        "drop a middle line": lambda es: [
            e for e in es if not (e["conversation_id"] == root and e["version"] == 3)
        ],
        "duplicate a line": lambda es: [*es, dict(es[2])],
        "duplicate a line, next version": lambda es: [
            *es,
            dict(
                es[2],
                version=max(
                    e["version"] for e in es if e["conversation_id"] == es[2]["conversation_id"]
                )
                + 1,
            ),
        ],
        "splice from another conversation": lambda es: [
            *es,
            dict(first(es, root, "user_message_added"), conversation_id=fork, version=99),
        ],
        "splice as the next event": lambda es: [
            *es,
            dict(
                first(es, root, "user_message_added"),
                conversation_id=fork,
                version=sum(e["conversation_id"] == fork for e in es) + 1,
            ),
        ],
        "move an event to another conversation": edit(
            lambda es: first(es, fork, "user_message_added").update(conversation_id=other)
        ),
        "fork points at another parent hash": edit(
            lambda es: first(es, fork, "conversation_started")["data"]["parent"].update(
                hash="0" * 64
            )
        ),
        "fork points past its parent": edit(
            lambda es: first(es, fork, "conversation_started")["data"]["parent"].update(version=999)
        ),
        "parent edited, chain recomputed, fork kept": lambda es: _recompute_only(es, root, text),
        "event ids used twice in the file": lambda es: recompute(
            [
                *es,
                *(
                    dict(e, conversation_id="copy-" + fork[:8])
                    for e in es
                    if e["conversation_id"] == fork
                ),
            ]
        ),
        "recomputed, bad recorded_at": lambda es: recompute(
            edit(lambda e: first(e, root, "model_responded").update(recorded_at="yesterday"))(es)
        ),
        "recomputed, parts not an array": lambda es: recompute(
            edit(lambda e: first(e, root, "user_message_added")["data"]["content"].update(parts=5))(
                es
            )
        ),
        "recomputed, history role system": lambda es: recompute(
            edit(
                lambda e: first(e, root, "conversation_started")["data"].update(
                    history=[{"role": "system", "parts": []}]
                )
            )(es)
        ),
        "recomputed, negative parent version": lambda es: recompute(
            edit(
                lambda e: first(e, fork, "conversation_started")["data"]["parent"].update(
                    version=-1
                )
            )(es)
        ),
        "recomputed, content not an object": lambda es: recompute(
            edit(lambda e: first(e, root, "user_message_added")["data"].update(content=[1]))(es)
        ),
        "recomputed, metadata not an object": lambda es: recompute(
            edit(lambda e: first(e, root, "user_message_added").update(metadata=[1]))(es)
        ),
        "recomputed, type not a name": lambda es: recompute(
            edit(lambda e: e[-1].update(type=SQL))(es)
        ),
        "truncated last line": lambda es: es,  # cut in test_forged_exports
    }


def _recompute_only(
    events: list[dict[str, Any]], cid: str, change: Callable[[list[dict[str, Any]]], None]
) -> list[dict[str, Any]]:
    """Edit the parent and rehash its chain only: the fork still names the old hash."""
    change(events)
    mine = recompute([e for e in events if e["conversation_id"] == cid])
    return [*mine, *(e for e in events if e["conversation_id"] != cid)]


FORGERY_NAMES = list(forgeries("root", "fork", "other"))


@pytest.mark.parametrize("forgery", FORGERY_NAMES)
def test_forged_exports_are_refused_and_write_nothing(
    family: tuple[chatledger.Client, dict[str, chatledger.Chat]], tmp_path: Path, forgery: str
) -> None:
    client, chats = family
    forge = forgeries(chats["root"].id, chats["fork"].id, chats["other"].id)[forgery]
    events = forge(export_events(client, chats["root"], forks=True))
    lines = lines_of(events)
    if forgery == "truncated last line":
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
    tally = Tally()
    target_path = tmp_path / "target.db"
    with SQLiteStore(target_path) as target:
        import_lines(target, lines_of(export_events(client, chats["other"])))
        tally.inputs += 1
        report = try_import(target, target_path, lines, tally, forgery)
        tally.check(report is None, f"{forgery}: accepted")
        # The CLI refuses the same file the same way.
        path = tmp_path / "forged.jsonl"
        path.write_text(
            "".join(line + "\n" for line in lines), encoding="utf-8", errors="surrogatepass"
        )
        before = log_state(target, target_path)
        result = CliRunner().invoke(cli, ["--db", str(target_path), "import", str(path)])
        tally.inputs += 1
        tally.check(
            result.exit_code == 1 and "Error:" in result.output,
            f"CLI: {result.output!r:.300} {result.exception!r}",
        )
        tally.check(log_state(target, target_path) == before, "CLI: the log changed")
    tally.record(f"import/forged export: {forgery}")


def test_what_a_recomputed_chain_can_and_cannot_hide(
    family: tuple[chatledger.Client, dict[str, chatledger.Chat]], tmp_path: Path
) -> None:
    """A forger who edits events and recomputes every hash (the chain is self-certifying):

    - into a store that already holds the conversation: refused (an anchor);
    - into a store holding the parent of a fork whose parent prefix was edited: refused;
    - into an empty store: accepted, and the result is a consistent, verifiable log that
      reads back (it proves nothing about its author: see chatledger.events.audit);
    - reordered lines (versions kept) and a file cut at a line boundary are valid files:
      the same events, and a shorter prefix of the conversation.
    """
    client, chats = family
    tally = Tally()
    original = export_events(client, chats["root"], forks=True)
    forged = json.loads(json.dumps(original))
    next(e for e in forged if e["type"] == "user_message_added")["data"]["content"]["parts"][0][
        "text"
    ] = "forged"
    forged = recompute(forged)
    holder_path = tmp_path / "holder.db"
    with SQLiteStore(holder_path) as holder:
        import_lines(holder, lines_of(original))
        tally.inputs += 1
        tally.check(
            try_import(holder, holder_path, lines_of(forged), tally, "recomputed over the original")
            is None,
            "a recomputed chain replaced a stored conversation",
        )
    parent_only_path = tmp_path / "parent.db"
    with SQLiteStore(parent_only_path) as parent_only:
        import_lines(parent_only, lines_of(export_events(client, chats["root"])))
        fork_lines = [e for e in forged if e["conversation_id"] == chats["fork"].id]
        tally.inputs += 1
        tally.check(
            try_import(
                parent_only,
                parent_only_path,
                lines_of(fork_lines),
                tally,
                "fork of an edited parent",
            )
            is None,
            "a fork of a forged parent was accepted",
        )
    empty_path = tmp_path / "empty.db"
    with SQLiteStore(empty_path) as empty:
        tally.inputs += 1
        report = try_import(
            empty, empty_path, lines_of(forged), tally, "recomputed into an empty store"
        )
        tally.check(report is not None, "a consistent recomputed file was refused")
        tally.check(
            reopen_text(empty, chats["root"].id) == "forged",
            "the forged text is not what was imported",
        )
        read_everything(empty, empty_path, tally, "recomputed")
        # The imported conversation goes on like any other.
        tally.check(empty.verify().ok, "the store does not verify")
    # Reordering lines (versions kept) changes nothing; cutting at a line boundary is a prefix.
    shuffled = list(original)
    random.Random(3).shuffle(shuffled)
    with SQLiteStore(tmp_path / "shuffled.db") as target:
        tally.inputs += 1
        import_lines(target, lines_of(shuffled))
        tally.check(
            [e.hash for e in target.read(chats["root"].id)]
            == [e.hash for e in chats["root"].events()],
            "reordered lines imported differently",
        )
    with SQLiteStore(tmp_path / "prefix.db") as target:
        tally.inputs += 1
        root_only = [e for e in original if e["conversation_id"] == chats["root"].id]
        import_lines(target, lines_of(root_only[:-2]))
        imported = target.read(chats["root"].id)
        # A prefix that ends inside a turn is imported with that turn closed (a recorded
        # turn_abandoned after the file's events): an import never leaves a turn open.
        tally.check(
            target.verify().ok
            and [e.hash for e in imported[: len(root_only) - 2]]
            == [e["hash"] for e in root_only[:-2]]
            and [e.type for e in imported[len(root_only) - 2 :]] in ([], ["turn_abandoned"]),
            "a prefix did not import as a prefix",
        )
    tally.record("import/recomputed chains (anchors)")


def reopen_text(store: EventStore, conversation_id: str) -> str | None:
    history = chatledger.Client(store=store).chats.get(conversation_id).get_history()
    return history[0].parts[0].text if history and history[0].parts else None


def test_random_forgeries_with_a_recomputed_chain(
    family: tuple[chatledger.Client, dict[str, chatledger.Chat]], tmp_path: Path
) -> None:
    """One random value changed anywhere in a real export, with or without rehashing:

    - not rehashed: refused, unless nothing hashed changed (then the same events);
    - rehashed, into the store holding the original: refused, unless nothing changed;
    - rehashed, into an empty store: refused clearly, or imported as a log that verifies
      and reads back through the API and the CLI without any other exception.
    """
    client, chats = family
    original = export_events(client, chats["root"], forks=True)
    tally = Tally()
    holder_path = tmp_path / "holder.db"
    counter = iter(range(10**9))
    with SQLiteStore(holder_path) as holder:
        import_lines(holder, lines_of(original))

        @settings(HYPOTHESIS, max_examples=ledger.scale(80, 1000))
        @given(rng=st.randoms(use_true_random=False), replacement=JSON_VALUES, rehash=st.booleans())
        def one(rng: random.Random, replacement: Any, rehash: bool) -> None:
            tally.inputs += 1
            index = rng.randrange(len(original))
            events = [dict(e) for e in original]
            events[index] = mutate_event(original[index], rng, replacement)
            if not isinstance(events[index], dict):
                events[index] = {"value": events[index]}
            if rehash:
                _, error = outcome(lambda: recompute(events))
                if error is not None:  # a mutation that leaves no envelope to hash
                    return
                events = recompute(events)
            # Whether the file still says the same: what an import reads of each line is
            # the hashed envelope and the hash ("position" and unknown keys are not read).
            # (A rehash may undo the change, say of a hash, or change other lines.)
            hashed_same = all(
                isinstance(event, dict)
                and all(event.get(k, "<absent>") == before[k] for k in (*ENVELOPE, "hash"))
                for event, before in zip(events, original, strict=True)
            )
            lines = lines_of(events)
            report = try_import(holder, holder_path, lines, tally, "into the holder")
            if not hashed_same:
                tally.check(
                    report is None,
                    f"a changed event was accepted over the original: {difference(original[index], events[index])}",
                )
            if not rehash and not hashed_same:
                empty_path = tmp_path / f"e{next(counter)}.db"
                with SQLiteStore(empty_path) as empty:
                    tally.check(
                        try_import(empty, empty_path, lines, tally, "unhashed into empty") is None,
                        f"an unhashed change was accepted: {events[index]!r:.300}",
                    )
            if rehash:
                empty_path = tmp_path / f"e{next(counter)}.db"
                with SQLiteStore(empty_path) as empty:
                    if (
                        try_import(empty, empty_path, lines, tally, "rehashed into empty")
                        is not None
                    ):
                        read_everything(
                            empty, empty_path, tally, f"rehashed {events[index]!r:.200}"
                        )

        one()
    tally.record("import/random forgeries, rehashed or not")


def test_an_import_is_atomic_across_conversations(
    family: tuple[chatledger.Client, dict[str, chatledger.Chat]], tmp_path: Path
) -> None:
    """A file with a sound new conversation and a forged one whose event ids are already
    used in the target store by another conversation: refused before anything is
    written (conversations are written one transaction each)."""
    client, chats = family
    tally = Tally()
    target_path = tmp_path / "target.db"
    with SQLiteStore(target_path) as target:
        import_lines(target, lines_of(export_events(client, chats["other"])))
        taken = [e.event_id for e in target.read(chats["other"].id)]
        sound = export_events(client, chats["root"])
        thief = [
            dict(e, conversation_id="thief", event_id=taken[i % len(taken)])
            for i, e in enumerate(export_events(client, chats["root"]))
        ]
        for name, lines in (
            ("sound first", [*sound, *recompute(thief)]),
            ("thief first", [*recompute(thief), *sound]),
        ):
            tally.inputs += 1
            tally.check(
                try_import(target, target_path, lines_of(lines), tally, name) is None,
                f"{name}: accepted",
            )
            tally.check(
                target.stream_info(chats["root"].id) is None,
                f"{name}: the sound conversation was written",
            )
    tally.record("import/atomic over conversations (event id collisions)")


def test_a_chain_of_a_thousand_forks_imports_and_reads(tmp_path: Path) -> None:
    """A file holding a fork of a fork of ... 1,500 deep (more than Python's recursion
    limit): imported, resumed, listed as a tree and shown by the CLI without recursion."""
    depth = ledger.scale(1_200, 3_000)
    source = MemoryStore()
    parent_id, parent_hash = "c0", ""
    source.append(
        parent_id,
        [
            NewEvent(
                data=ConversationStarted(
                    model=MODEL,
                    history=[
                        {"role": "user", "parts": [{"text": "root"}]},
                        {"role": "model", "parts": [{"text": "ok"}]},
                    ],
                )
            )
        ],
        expected_version=0,
    )
    parent_hash = source.read(parent_id)[0].hash
    for index in range(1, depth):
        cid = f"c{index}"
        source.append(
            cid,
            [
                NewEvent(
                    data=ConversationStarted(
                        model=MODEL,
                        parent=ParentRef(conversation_id=parent_id, version=1, hash=parent_hash),
                    )
                )
            ],
            expected_version=0,
        )
        parent_id, parent_hash = cid, source.read(cid)[0].hash
    lines = list(export_conversation(source, parent_id))
    assert len(lines) == depth
    db = tmp_path / "deep.db"
    with SQLiteStore(db) as store:
        report = import_lines(store, reversed(lines))
        assert report.events == depth and store.verify().ok
        client = chatledger.Client(store=store)
        assert wires(client.chats.get(parent_id).get_history()) == [
            {"role": "user", "parts": [{"text": "root"}]},
            {"role": "model", "parts": [{"text": "ok"}]},
        ]
        assert sum(1 for _ in client.chats.tree(parent_id).walk()) == depth
    result = CliRunner().invoke(cli, ["--db", str(db), "show", parent_id])
    assert result.exit_code == 0, result.output
    ledger.record(AREA, f"import/fork chain {depth} deep", inputs=depth)
