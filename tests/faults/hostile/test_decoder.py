"""Hostile stored rows: random bytes and random JSON through the event decoder, and
through a real SQLite file read, verified and resumed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import chatledger
from chatledger.cli import cli
from chatledger.errors import ChatledgerError
from chatledger.events import SQLiteStore
from chatledger.events.kinds import KINDS, NewerSchemaError, data_to_builtins, decode_data
from chatledger.events.rows import RawRow, row_to_event
from tests.faults import ledger
from tests.faults.hostile.support import (
    ANY_CHARS,
    HYPOTHESIS,
    JSON_VALUES,
    MODEL,
    Tally,
    mutate,
    outcome,
)
from tests.support.gemini_server import text_response

# --------------------------------------------------------------------------- (b) decoder


def kind_data(name: str) -> dict[str, Any]:
    """Valid data of each kind, to mutate."""
    content = {"role": "user", "parts": [{"text": "hi"}]}
    response = text_response("a")
    every_kind: dict[str, dict[str, Any]] = {
        "conversation_started": {
            "model": MODEL,
            "config": {"temperature": 1},
            "history": [content],
        },
        "user_message_added": {"turn": 1, "content": content},
        "model_call_started": {
            "turn": 1,
            "model": MODEL,
            "config": {"tools": [{"functionDeclarations": [{"name": "f"}]}]},
        },
        "model_responded": {"turn": 1, "response": response},
        "model_call_failed": {
            "turn": 1,
            "error": {"kind": "ServerError", "message": "x", "code": 500},
            "partial": response,
        },
        "function_called": {"turn": 1, "name": "f", "args": {"x": 1}},
        "function_responded": {"turn": 1, "name": "f", "response": {"result": 1}},
        "turn_rewound": {"turn": 1},
        "turn_abandoned": {"turn": 1, "reason": "r"},
        "config_changed": {"config": {"temperature": 1}, "model": MODEL},
        "history_replaced": {"history": [content]},
        "session_items_added": {"items": [{"role": "user", "content": "hi"}]},
        "session_item_popped": {"item_version": 2, "item_index": 0},
        "session_cleared": {"count": 1},
        "content_erased": {"reason": "asked", "up_to_version": 1, "count": 1},
    }
    return every_kind[name]


STORED_DATA = st.one_of(
    st.binary(max_size=40),
    st.text(ANY_CHARS, max_size=40),
    JSON_VALUES.map(lambda v: json.dumps(v)),
    st.tuples(st.sampled_from(sorted(KINDS)), st.randoms(use_true_random=False), JSON_VALUES).map(
        lambda t: json.dumps(mutate(kind_data(t[0]), t[1], t[2]))
    ),
    st.sampled_from(
        [
            "[" * 5000 + "]" * 5000,
            '{"a":' * 3000 + "1" + "}" * 3000,
            '"\\ud800"',
            "1e999",
            "9" * 5000,
        ]
    ),
)


def test_the_event_decoder_on_random_rows() -> None:
    """A stored row of random bytes or JSON decodes to an event that re-encodes to the
    same data, or raises a chatledger error naming the event; ``decode_data`` itself
    raises only the msgspec errors it documents (and NewerSchemaError)."""
    tally = Tally()

    @settings(HYPOTHESIS, max_examples=ledger.scale(300, 5000))
    @given(
        type_name=st.one_of(st.sampled_from(sorted(KINDS)), st.text(max_size=10)),
        schema_version=st.one_of(st.integers(-3, 3), st.integers()),
        data=STORED_DATA,
        metadata=st.one_of(STORED_DATA, st.just(""), st.just(b"")),
        # Erased rows (""), committed ones, and damage (docs/erasure.md).
        content_salt=st.one_of(st.none(), st.just(""), st.just("0" * 64), st.text(max_size=5)),
    )
    def one(
        type_name: str, schema_version: int, data: Any, metadata: Any, content_salt: Any
    ) -> None:
        tally.inputs += 1
        row = RawRow(
            "c",
            1,
            1,
            "e",
            type_name,
            schema_version,
            data,
            metadata,
            "2025-01-01T00:00:00.000000Z",
            "0" * 64,
            content_salt,
        )
        decoded, error = outcome(lambda: row_to_event(row))
        tally.note(error)
        if error is not None:
            tally.check(isinstance(error, ChatledgerError), f"row_to_event: {error!r:.300}")
        else:
            tally.check(isinstance(decoded.metadata, dict), "metadata is not a dict")
            tally.check(
                (decoded.type, decoded.schema_version) == (type_name, schema_version),
                "the envelope changed",
            )
            again = decode_data(
                type_name, schema_version, msgspec.json.encode(data_to_builtins(decoded.data))
            )
            tally.check(again == decoded.data, "the decoded data does not re-encode to itself")
        _, error = outcome(lambda: decode_data(type_name, schema_version, data))
        tally.check(
            error is None or isinstance(error, (msgspec.DecodeError, NewerSchemaError)),
            f"decode_data: {error!r:.300}",
        )

    one()
    tally.record("event decoder/random rows")


def poisoned_snapshots() -> list[bytes]:
    """Snapshot states a hand-edited database may hold: nested deeper than the stack,
    indexes out of range, the wrong format."""
    from chatledger.client._fold import _SNAPSHOT_ENCODER, SNAPSHOT_FORMAT, _Snapshot
    from chatledger.projections.history import HistoryState
    from chatledger.projections.usage import UsageState

    marker = "PLACEHOLDER-0123"
    valid = _SNAPSHOT_ENCODER.encode(
        _Snapshot(
            SNAPSHOT_FORMAT, "0" * 64, HistoryState(), UsageState(), [{"a": marker}], [0], [], []
        )
    )
    return [
        valid.replace(msgspec.msgpack.encode(marker), b"\x91" * 100_000 + b"\xc0"),
        _SNAPSHOT_ENCODER.encode(
            _Snapshot(SNAPSHOT_FORMAT, "0" * 64, HistoryState(), UsageState(), [], [7, -1], [], [])
        ),
        _SNAPSHOT_ENCODER.encode(
            _Snapshot(SNAPSHOT_FORMAT + 1, "0" * 64, HistoryState(), UsageState(), [], [], [], [])
        ),
        valid,
    ]


POISONED_SNAPSHOTS = poisoned_snapshots()


def insert_raw(db_path: Path, rows: list[tuple[Any, ...]]) -> None:
    """Write rows straight into the events table, as damage or a hand-made file would
    (text with lone surrogates goes in as the invalid UTF-8 bytes it stands for)."""
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            for row in rows:
                row = tuple(
                    value.encode("utf-8", "surrogatepass")
                    if isinstance(value, str)
                    and not value.isascii()
                    and any(0xD800 <= ord(c) <= 0xDFFF for c in value)
                    else value
                    for value in row
                )
                conn.execute(
                    "INSERT INTO events (conversation_id, version, event_id, type, schema_version, "
                    "data, metadata, recorded_at, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            for cid, version in {(row[0], row[1]) for row in rows}:
                conn.execute(
                    "INSERT INTO streams (conversation_id, version, head_hash, created_at, updated_at) "
                    "VALUES (?, ?, '', 'x', 'x') ON CONFLICT (conversation_id) DO UPDATE SET version = "
                    "max(version, excluded.version)",
                    (cid, version),
                )
    finally:
        conn.close()


def test_random_rows_in_a_real_sqlite_file(tmp_path: Path) -> None:
    """Rows of random bytes and JSON written into the SQLite file behind the library's
    back: reading, verifying, resuming, listing, the CLI's log and show all answer with a
    result or a clear error; verify reports problems rather than raising."""
    tally = Tally()
    runner = CliRunner()
    counter = iter(range(10**9))

    @settings(HYPOTHESIS, max_examples=ledger.scale(25, 250))
    @given(
        rows=st.lists(
            st.tuples(
                st.one_of(st.sampled_from(sorted(KINDS)), st.text(max_size=6)),
                st.integers(-2, 4),
                STORED_DATA,
                st.one_of(STORED_DATA, st.just("{}")),
                st.one_of(st.just("2025-01-01T00:00:00.000000Z"), st.text(max_size=10)),
            ),
            min_size=1,
            max_size=4,
        ),
        bad_utf8=st.booleans(),
        snapshot=st.one_of(st.none(), st.binary(max_size=64), st.sampled_from(POISONED_SNAPSHOTS)),
    )
    def one(
        rows: list[tuple[str, int, Any, Any, str]], bad_utf8: bool, snapshot: bytes | None
    ) -> None:
        tally.inputs += 1
        db = tmp_path / f"raw{next(counter)}.db"
        SQLiteStore(db).close()
        cid = "raw"
        insert_raw(
            db,
            [
                (cid, version, f"e{version}", t, sv, d, m, at, "0" * 64)
                for version, (t, sv, d, m, at) in enumerate(rows, 1)
            ],
        )
        with sqlite3.connect(db) as conn:
            if bad_utf8:
                conn.execute("UPDATE streams SET created_at = CAST(x'ff' AS TEXT)")
            if snapshot is not None:
                conn.execute(
                    "INSERT INTO snapshots (conversation_id, name, version, state) VALUES (?, 'conversation', ?, ?)",
                    (cid, len(rows), snapshot),
                )
        with SQLiteStore(db) as store:
            for what, action in (
                ("read", lambda: store.read(cid)),
                ("read_all", lambda: store.read_all()),
                ("conversations", lambda: store.conversations()),
                ("chats.get", lambda: chatledger.Client(store=store).chats.get(cid).get_history()),
                ("chats.list", lambda: chatledger.Client(store=store).chats.list()),
            ):
                _, error = outcome(action)
                tally.check(
                    error is None or isinstance(error, ChatledgerError), f"{what}: {error!r:.300}"
                )
            report, error = outcome(store.verify)
            tally.check(
                error is None or isinstance(error, ChatledgerError), f"verify: {error!r:.300}"
            )
            tally.check(report is None or not report.ok, "verify passed rows with made-up hashes")
        for command in (["log", cid], ["show", cid], ["verify"], ["ls"]):
            result = runner.invoke(cli, ["--db", str(db), *command])
            tally.check(
                result.exit_code in (0, 1)
                and (result.exception is None or isinstance(result.exception, SystemExit)),
                f"{command}: {result.exception!r:.300}",
            )

    one()
    tally.record("stored rows/random bytes in a SQLite file")
