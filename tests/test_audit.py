"""The audit trail: exports verify with a stand-alone script and without chatledger;
tampered exports do not; imports verify before writing; verify names bad events."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chatledger
from chatledger.client.transports.scripted import ScriptedTransport
from chatledger.errors import IntegrityError, InvalidInputError
from chatledger.events.audit import export_conversation, import_lines
from chatledger.events.envelope import canonical_json, event_hash, spliced_event_hash
from tests.support.narrow import stream_version

VERIFIER = Path(__file__).resolve().parents[1] / "examples" / "verify_export.py"


@pytest.fixture
def client(db_path: Path) -> Iterator[chatledger.Client]:
    transport = ScriptedTransport()
    for index in range(20):
        transport.enqueue(f"reply {index} ünïcode ✓")
    with chatledger.Client(store=str(db_path), transport=transport, actor="auditor") as client:
        yield client


@pytest.fixture
def family(client: chatledger.Client) -> dict[str, chatledger.Chat]:
    root = client.chats.create(model="m", config={"temperature": 0.5})
    for question in ("first", "second", "third"):
        root.send_message(question)
    fork = root.fork(turn=1)
    fork.send_message("fork question")
    deeper = fork.fork()
    deeper.send_message("deeper question")
    return {"root": root, "fork": fork, "deeper": deeper}


def run_verifier(path: Path) -> subprocess.CompletedProcess[str]:
    # -I: isolated mode, so the script runs with the standard library only (no site-packages
    # and not this checkout): a third party does not need chatledger installed.
    return subprocess.run(
        [sys.executable, "-I", str(VERIFIER), str(path)], capture_output=True, text=True
    )


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_an_export_verifies_without_chatledger(
    client: chatledger.Client, family: dict[str, chatledger.Chat], tmp_path: Path
) -> None:
    lines = list(export_conversation(client.store, family["deeper"].id))
    # A fork's export carries its ancestors up to the fork points, so it stands alone.
    conversations = {json.loads(line)["conversation_id"] for line in lines}
    assert conversations == {chat.id for chat in family.values()}
    result = run_verifier(write(tmp_path / "export.jsonl", lines))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 conversations" in result.stdout and "0 problems" in result.stdout


@pytest.mark.parametrize(
    "tamper",
    [
        "edit_text",
        "edit_actor",
        "edit_time",
        "drop_middle",
        "drop_first",
        "swap_data",
        "insert_forged",
        "edit_parent_hash",
    ],
)
def test_a_tampered_export_does_not_verify(
    client: chatledger.Client, family: dict[str, chatledger.Chat], tmp_path: Path, tamper: str
) -> None:
    lines = list(export_conversation(client.store, family["root"].id, include_forks=True))
    events = [json.loads(line) for line in lines]
    root_id = family["root"].id
    root_events = [e for e in events if e["conversation_id"] == root_id]
    target = next(e for e in root_events if e["type"] == "user_message_added")
    if tamper == "edit_text":
        target["data"]["content"]["parts"][0]["text"] = "something else"
    elif tamper == "edit_actor":
        target["metadata"]["actor"] = "mallory"
    elif tamper == "edit_time":
        target["recorded_at"] = "2020-01-01T00:00:00.000000Z"
    elif tamper == "drop_middle":
        events.remove(root_events[3])
    elif tamper == "drop_first":
        events.remove(root_events[0])
    elif tamper == "swap_data":
        a, b = root_events[1], root_events[4]
        a["data"], b["data"] = b["data"], a["data"]
    elif tamper == "insert_forged":
        forged = dict(root_events[1], event_id="forged", version=len(root_events) + 1)
        events.append(forged)
    elif tamper == "edit_parent_hash":
        fork_start = next(e for e in events if e["conversation_id"] == family["fork"].id)
        fork_start["data"]["parent"]["hash"] = "0" * 64
    path = write(tmp_path / "tampered.jsonl", [json.dumps(e) for e in events])
    result = run_verifier(path)
    assert result.returncode == 1, result.stdout
    assert "PROBLEM" in result.stdout
    # chatledger's import refuses the same file and writes nothing.
    with chatledger.SQLiteStore(tmp_path / "target.db") as target_store:
        with pytest.raises(IntegrityError):
            import_lines(target_store, path.read_text().splitlines())
        assert target_store.conversations() == []


def test_import_round_trip_preserves_everything(
    client: chatledger.Client, family: dict[str, chatledger.Chat], tmp_path: Path
) -> None:
    lines = list(export_conversation(client.store, family["root"].id, include_forks=True))
    with chatledger.SQLiteStore(tmp_path / "copy.db") as copy:
        report = import_lines(copy, lines)
        assert sorted(report.conversations) == sorted(chat.id for chat in family.values())
        assert report.events == len(lines)
        assert copy.verify().ok
        for chat in family.values():
            original = [
                (e.event_id, e.version, e.hash, e.recorded_at, e.actor) for e in chat.events()
            ]
            assert [
                (e.event_id, e.version, e.hash, e.recorded_at, e.actor) for e in copy.read(chat.id)
            ] == original
        # Importing again changes nothing.
        again = import_lines(copy, lines)
        assert again.events == 0 and sorted(again.already_present) == sorted(report.conversations)
    # A chat resumed from the copy has the same histories and can go on.
    transport = ScriptedTransport().enqueue("after import")
    with chatledger.Client(store=str(tmp_path / "copy.db"), transport=transport) as other:
        deeper = other.chats.get(family["deeper"].id)
        assert deeper.get_history() == family["deeper"].get_history()
        deeper.send_message("continue")
        assert other.store.verify().ok


def test_a_forks_export_then_the_full_parent_import_extends_the_prefix(
    client: chatledger.Client, family: dict[str, chatledger.Chat], tmp_path: Path
) -> None:
    with chatledger.SQLiteStore(tmp_path / "copy.db") as copy:
        import_lines(copy, list(export_conversation(client.store, family["fork"].id)))
        root_id = family["root"].id
        assert stream_version(copy, root_id) < stream_version(client.store, root_id)
        report = import_lines(copy, list(export_conversation(client.store, root_id)))
        assert report.conversations == [root_id]
        assert [e.hash for e in copy.read(root_id)] == [e.hash for e in client.store.read(root_id)]
        assert copy.verify().ok


def test_an_import_that_conflicts_with_the_store_writes_nothing(
    client: chatledger.Client, family: dict[str, chatledger.Chat], tmp_path: Path
) -> None:
    lines = list(export_conversation(client.store, family["root"].id))
    with chatledger.SQLiteStore(tmp_path / "copy.db") as copy:
        import_lines(copy, lines)
        other = chatledger.Client(store=copy, transport=ScriptedTransport().enqueue("diverged"))
        other.chats.get(family["root"].id).send_message("only in the copy")
        before = len(copy.read_all(limit=1000))
        # The original went on differently: the same conversation, other events.
        family["root"].send_message("only in the original")
        with pytest.raises(IntegrityError, match="already in"):
            import_lines(copy, list(export_conversation(client.store, family["root"].id)))
        assert len(copy.read_all(limit=1000)) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe not utf-8\n", "not UTF-8"),
        (b"{not json\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"conversation_id": "x"}\n', "has no 'version'"),
        (b"\n\n", "no events"),
    ],
)
def test_malformed_imports_are_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    with chatledger.SQLiteStore(tmp_path / "copy.db") as copy:
        with pytest.raises(InvalidInputError, match=message):
            import_lines(copy, content.splitlines(keepends=True))
        assert copy.conversations() == []


def test_verify_names_the_first_bad_event_in_the_database(
    client: chatledger.Client, family: dict[str, chatledger.Chat], db_path: Path
) -> None:
    import sqlite3

    chat = family["fork"]
    with sqlite3.connect(db_path) as conn:
        (trigger,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'events_no_update'"
        ).fetchone()
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute(
            "UPDATE events SET metadata = ? WHERE conversation_id = ? AND version = 2",
            ('{"actor":"mallory"}', chat.id),  # stored as chatledger writes it
        )
        conn.execute(trigger)  # and puts the trigger back (verify checks the triggers too)
    report = client.store.verify()
    problems: list[Any] = report.problems
    assert [(p.conversation_id, p.version) for p in problems] == [(chat.id, 2)]
    assert "hash mismatch" in problems[0].reason


TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    conversation_id=TEXT,
    version=st.integers(1, 2**62),
    event_id=TEXT,
    type=TEXT,
    schema_version=st.integers(1, 1000),
    data=JSON,
    metadata=st.dictionaries(TEXT, JSON, max_size=3),
    recorded_at=TEXT,
    prev_hash=TEXT,
)
def test_the_spliced_hash_is_the_documented_hash(**envelope: Any) -> None:
    """Appends hash from data and metadata encoded once (spliced_event_hash); a third
    party hashes the whole envelope with json.dumps (event_hash): byte for byte equal."""
    spliced = spliced_event_hash(
        **{k: v for k, v in envelope.items() if k not in ("data", "metadata")},
        canonical_data=canonical_json(envelope["data"]),
        canonical_metadata=canonical_json(envelope["metadata"]),
    )
    assert spliced == event_hash(**envelope)
