"""Store faults, **damaged files**: truncated at many offsets and corrupted by flipping bits
at many offsets (the header, the schema, b-tree pages, overflow pages, indexes, and inside
event rows); a flipped byte in an event's JSON must be named by ``verify``. The ``-wal`` a
crash leaves behind, cut short or flipped: every commit before the damage survives.

What every store fault test measures, and how: :mod:`tests.faults.store_faults`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chatledger.cli import cli
from chatledger.errors import IntegrityError, NotFoundError, StoreError
from chatledger.events import NewEvent, RecordedEvent, SQLiteStore
from tests.faults import ledger
from tests.faults.store_faults import (
    BUSY_TIMEOUT,
    ROOT,
    ObservedStore,
    Tally,
    Template,
    log_of,
    make_client,
    make_client_without_server,
    mentions_path,
    one_line_error,
    template_fixture,  # noqa: F401 (the fixture "template")
)
from tests.support.gemini_server import GeminiServer


def _write(path: Path, content: bytes) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(content)
    return path


CORRUPT_WORDS = ("corrupt", "damaged", "restore", "verify", "truncated", "not a chatledger")


def inspect_damaged(
    path: Path, template: Template, tally: Tally, where: str, *, empty_ok: bool = False
) -> str:
    """Open, read, verify and append to a damaged file. Returns how the damage showed:
    "refused" (a clear StoreError), "named" (verify named a problem), "intact" (verify
    passes and every event reads as committed: the damage hit no event). Anything else
    (a raw exception, or a clean verify over events that differ) is an invariant broken."""
    stage = "open"
    try:
        with SQLiteStore(path, busy_timeout=BUSY_TIMEOUT) as store:
            stage = "read"
            reads: dict[str, list[RecordedEvent] | StoreError] = {}
            for cid in template.events:
                try:
                    reads[cid] = store.read(cid)
                except StoreError as exc:
                    reads[cid] = exc
            stage = "verify"
            report = store.verify()
            if empty_ok and report.ok and report.streams_checked == 0:
                return "empty"
            # A conversation verify finds nothing wrong with must read exactly as committed.
            named = {problem.conversation_id for problem in report.problems}
            differing = [
                cid
                for cid, events in template.events.items()
                if cid not in named and reads.get(cid) != events
            ]
            if differing:
                for cid in differing:
                    read = reads[cid]
                    if not isinstance(read, list) or len(read) < len(template.events[cid]):
                        tally.events_lost += len(template.events[cid])
                tally.check(False, f"{where}: verify passed {differing}, which read differently")
                return "silent"
            if not report.ok:
                tally.check(
                    all(problem.reason for problem in report.problems),
                    f"{where}: a problem without a reason",
                )
                return "named"
            stage = "append"
            for cid in template.events:
                info = store.stream_info(cid)
                assert info is not None
                store.append(cid, [_note()], expected_version=info.version)
            stage = "verify after append"
            tally.check(store.verify().ok, f"{where}: an append after a clean verify broke the log")
            return "intact"
    except StoreError as exc:
        text = str(exc)
        tally.check(
            any(word in text for word in CORRUPT_WORDS)
            and (mentions_path(text, path) or " v" in text),
            f"{where}: unclear {stage} error {text!r}",
        )
        return "refused"
    except Exception as exc:  # the point of the test: nothing else may escape
        tally.check(False, f"{where}: {stage} raised {exc!r}")
        return "raw"


def _note() -> NewEvent:
    from chatledger.events import TurnRewound

    return NewEvent(data=TurnRewound(turn=1))


def test_truncated_files_are_refused_or_named_never_silently_wrong(
    tmp_path: Path, template: Template
) -> None:
    size = len(template.content)
    page = 4096
    rng = random.Random(81)
    offsets = {
        0,
        1,
        15,
        16,
        50,
        99,
        100,
        page - 1,
        page,
        page + 1,
        size // 2,
        size - page,
        size - 1,
    }
    if ledger.full_scale():
        offsets |= set(range(0, size, page)) | {rng.randrange(size) for _ in range(200)}
    else:
        offsets |= {rng.randrange(size) for _ in range(4)}
    tally = Tally()
    outcomes: dict[str, int] = {}
    for offset in sorted(offsets):
        path = _write(tmp_path / f"truncated-{offset}.db", template.content[:offset])
        tally.faults += 1
        where = f"truncated at {offset} of {size}"
        outcome = inspect_damaged(path, template, tally, where, empty_ok=offset < 100)
        tally.check(outcome != "intact", f"{where}: a truncated file verified as intact")
        if outcome == "empty":
            # Cut inside SQLite's magic string: SQLite opens that as a new, empty database,
            # as it does an empty file. Nothing is silently read from it: every
            # conversation is reported missing, by name and file.
            with make_client_without_server(path) as client:
                for cid in template.events:
                    try:
                        client.chats.get(cid)
                        tally.check(False, f"{where}: {cid} found in an empty file")
                    except NotFoundError as exc:
                        tally.check(cid in str(exc) and mentions_path(str(exc), path), str(exc))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        path.unlink()
    tally.record("truncated")
    tally.assert_clean()
    assert set(outcomes) <= {"refused", "named", "empty"}, outcomes


def _flip(content: bytes, offset: int, rng: random.Random) -> bytes:
    return _flip_bit(content, offset, rng.randrange(8))


def _flip_bit(content: bytes, offset: int, bit: int) -> bytes:
    damaged = bytearray(content)
    damaged[offset] ^= 1 << bit
    return bytes(damaged)


def test_flipped_bits_anywhere_are_refused_or_named_never_silently_wrong(
    tmp_path: Path, template: Template
) -> None:
    """Random single-bit flips: in the 100-byte header, and anywhere in the file."""
    size = len(template.content)
    rng = random.Random(82)
    count = ledger.scale(40, 1500)
    offsets = [rng.randrange(100) for _ in range(count // 4)]
    offsets += [rng.randrange(size) for _ in range(count - len(offsets))]
    tally = Tally()
    outcomes: dict[str, int] = {}
    for number, offset in enumerate(offsets):
        path = _write(tmp_path / f"flipped-{number}.db", _flip(template.content, offset, rng))
        tally.faults += 1
        outcome = inspect_damaged(path, template, tally, f"bit flipped at {offset}")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    tally.record("corrupted")
    tally.assert_clean()
    assert set(outcomes) <= {"refused", "named", "intact"}, outcomes


def _stored_fields(template: Template) -> list[tuple[RecordedEvent, str, int, int]]:
    """(event, column, start, end) of each stored text of an event found exactly once in
    the file, so a byte flipped there damages that event and nothing else."""
    with sqlite3.connect(template.path) as conn:
        rows = conn.execute(
            "SELECT event_id, data, metadata, hash, recorded_at FROM events"
        ).fetchall()
    by_id = {event.event_id: event for events in template.events.values() for event in events}
    found = []
    for event_id, *values in rows:
        for column, value in zip(("data", "metadata", "hash", "recorded_at"), values, strict=True):
            raw = value.encode("utf-8")
            if len(raw) >= 8 and template.content.count(raw) == 1:
                start = template.content.index(raw)
                found.append((by_id[event_id], column, start, start + len(raw)))
    return found


def test_a_flipped_byte_inside_an_event_is_named_by_verify(
    tmp_path: Path, template: Template
) -> None:
    """The hash chain catches a change to an event's data, metadata, hash or time: verify
    names that very event, and every other event still reads exactly as committed."""
    rng = random.Random(83)
    fields = _stored_fields(template)
    # (Metadata repeats from event to event, so it is rarely found just once.)
    assert {"data", "hash", "recorded_at"} <= {column for _, column, _, _ in fields}
    chosen = [rng.choice(fields) for _ in range(ledger.scale(24, 400))]
    tally = Tally()
    for number, (event, column, start, end) in enumerate(chosen):
        offset = rng.randrange(start, end)
        path = _write(tmp_path / f"event-{number}.db", _flip(template.content, offset, rng))
        tally.faults += 1
        where = f"{column} of {event.conversation_id} v{event.version} flipped at {offset}"
        try:
            with SQLiteStore(path) as store:
                report = store.verify()
                named = [
                    (p.conversation_id, p.version, p.event_id)
                    for p in report.problems
                    if p.conversation_id == event.conversation_id
                ]
                named_event = (event.conversation_id, event.version, event.event_id)
                tally.check(named[:1] == [named_event], f"{where}: verify named {report.problems}")
                # Every other event is intact and readable around the damaged one.
                for cid, events in template.events.items():
                    if cid != event.conversation_id:
                        survived = store.read(cid)
                    else:
                        survived = store.read(cid, to_version=event.version - 1) + store.read(
                            cid, after_version=event.version
                        )
                        events = [e for e in events if e.version != event.version]
                    tally.events_lost += sum(1 for e in events if e not in survived)
                # The damaged event is refused or reads as changed. It reads as it was only
                # when the flip left its value the same (the case of a hex digit in a
                # \u escape): reads decode, verify hashes, and verify named it above.
                try:
                    damaged = store.read(
                        event.conversation_id,
                        after_version=event.version - 1,
                        to_version=event.version,
                    )
                    tally.check(
                        damaged != [event] or named[:1] == [named_event],
                        f"{where}: reads as if undamaged",
                    )
                except IntegrityError as exc:
                    tally.check(f"v{event.version}" in str(exc), f"{where}: {exc}")
        except StoreError as exc:
            tally.check(False, f"{where}: {exc!r}")
        if number < ledger.scale(2, 10):
            result = CliRunner().invoke(cli, ["--db", str(path), "verify"])
            tally.check(
                result.exit_code == 1
                and f"Problem: {event.conversation_id} v{event.version}" in result.output
                and "Traceback" not in result.output,
                f"{where}: chatledger verify said {result.output!r}",
            )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    tally.record("corrupted")
    tally.assert_clean()


def _positions_go_back(path: Path) -> bool:
    """Whether paging through the file's events by position (as ``read_all`` does) meets
    a position that is not above the one before (only a damaged b-tree gives that)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        try:
            positions = [
                row[0] for row in conn.execute("SELECT position FROM events ORDER BY position")
            ]
        except sqlite3.Error:
            return False
    return any(
        not isinstance(later, int) or later <= earlier
        for earlier, later in itertools.pairwise(positions)
    )


def test_a_damaged_table_whose_positions_go_back_is_reported_not_read_forever(
    tmp_path: Path, template: Template
) -> None:
    """A bit flipped in the cell count of a b-tree page makes SQLite return rows of
    position 0 after the real ones. Readers follow positions: ``verify`` looped over the
    log forever on such a file (found by the random flips above), and ``subscribe``
    would have. Both must stop and say the file is damaged."""
    last = max(log_of_intact(template), key=lambda event: event.position)
    with sqlite3.connect(template.path) as conn:
        (data,) = conn.execute(
            "SELECT data FROM events WHERE position = ?", (last.position,)
        ).fetchone()
    page = template.content.index(data.encode("utf-8")) // 4096 * 4096
    path = tmp_path / "backwards.db"
    # Bytes 3-4 of a b-tree page header count its cells; a larger count reads past them.
    for offset, bit in ((offset, bit) for offset in (page + 4, page + 3) for bit in range(8)):
        _write(path, _flip_bit(template.content, offset, bit))
        if not _positions_go_back(path):
            continue
        with contextlib.suppress(StoreError), SQLiteStore(path) as store:
            if any("go back" in problem.reason for problem in store.verify().problems):
                break
    else:
        pytest.fail("no flip of the page's cell count made positions go back (layout changed?)")
    tally = Tally(faults=1)
    with SQLiteStore(path) as store:
        try:
            log_of(store)
            tally.check(False, "read_all paged through positions that go back")
        except IntegrityError as exc:
            tally.check("damaged" in str(exc) and "verify" in str(exc), str(exc))
        stop = threading.Event()
        guard = threading.Timer(30, stop.set)  # fail, rather than hang, if it regresses
        guard.start()
        seen = 0
        try:
            for _ in store.subscribe(stop=stop, poll_interval=0.01):
                seen += 1
            tally.check(False, f"subscribe ended without an error after {seen} events")
        except IntegrityError:
            tally.check(seen <= len(log_of_intact(template)), f"subscribe read {seen} events")
        finally:
            guard.cancel()
        # Every conversation still reads as committed (through its index).
        for cid, events in template.events.items():
            tally.events_lost += sum(1 for event in events if event not in store.read(cid))
    tally.record("corrupted")
    tally.assert_clean()


def log_of_intact(template: Template) -> list[RecordedEvent]:
    return [event for events in template.events.values() for event in events]


class WalObservedStore(ObservedStore):
    """Also notes where in the ``-wal`` file each append's commit ends."""

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        super().__init__(path, **options)
        self.commit_ends: list[tuple[int, list[str]]] = []

    def append(
        self, conversation_id: str, events: Sequence[NewEvent], *, expected_version: int
    ) -> list[int]:
        positions = super().append(conversation_id, events, expected_version=expected_version)
        wal = Path(f"{self.path}-wal").stat().st_size
        self.commit_ends.append((wal, [event.event_id for event in events]))
        return positions


def test_a_damaged_wal_keeps_every_commit_before_the_damage(tmp_path: Path) -> None:
    """The state a crash leaves (the file and its ``-wal``, not yet checkpointed), with the
    ``-wal`` cut short or a bit flipped in it. SQLite replays the write-ahead log up to
    its first damaged frame: every commit that ended before the damage must survive, and
    what survives is whole commits, in order, that verify; the chat goes on.

    (Commits after the damage are dropped by SQLite's recovery, whose checksums chain
    from frame to frame, and nothing in the file can tell they existed: a known limit of
    any write-ahead log, counted here as damage, not as events lost.)"""
    live = tmp_path / "live.db"
    with GeminiServer() as server:
        store = WalObservedStore(live)
        try:
            with make_client(server, store) as client:
                chat = client.chats.create(model="gemini-test")
                for number in range(6):
                    server.reply_echo()
                    chat.send_message(f"message {number} " + "words " * (20 * number))
                # A copy taken while the store is open is what a crash leaves on disk.
                content, wal = live.read_bytes(), Path(f"{live}-wal").read_bytes()
                commits = list(store.commit_ends)
        finally:
            store.close()
        with SQLiteStore(_write(tmp_path / "clean.db", content)) as clean:
            before_wal = set(log_of(clean))  # already checkpointed into the file itself
        rng = random.Random(84)
        tally = Tally()
        dropped = 0
        for number in range(ledger.scale(12, 300)):
            offset = rng.randrange(len(wal))
            cut = number % 2 == 0
            damaged_wal = wal[:offset] if cut else _flip(wal, offset, rng)
            path = _write(tmp_path / f"crash-{number}.db", content)
            Path(f"{path}-wal").write_bytes(damaged_wal)
            tally.faults += 1
            where = f"wal {'cut' if cut else 'flipped'} at {offset} of {len(wal)}"
            # The WAL header (32 bytes) is checksummed too: damage there voids every frame.
            survive = set(before_wal)
            for end, event_ids in commits:
                if end <= offset and offset >= 32:
                    survive.update(event_ids)
            try:
                with SQLiteStore(path) as reopened:
                    found = log_of(reopened)
                    tally.events_lost += len(survive - found.keys())
                    whole = [set(ids) <= found.keys() for _, ids in commits]
                    partial = [
                        bool(set(ids) & found.keys()) != ok
                        for (_, ids), ok in zip(commits, whole, strict=True)
                    ]
                    tally.check(not any(partial), f"{where}: a commit survived in part")
                    tally.check(
                        whole == sorted(whole, reverse=True), f"{where}: not a prefix of commits"
                    )
                    dropped += sum(1 for ok in whole if not ok)
                    tally.check(reopened.verify().ok, f"{where}: does not verify")
                with make_client(server, str(path)) as client:
                    server.reply_echo()
                    if whole[0]:
                        resumed = client.chats.get(chat.id)
                    else:  # the damage came before the conversation was started
                        resumed = client.chats.create(model="gemini-test")
                    again = resumed.send_message("after the crash").text
                    tally.check(again == "echo: after the crash", f"{where}: no go ({again})")
                    tally.check(client.store.verify().ok, f"{where}: does not verify at the end")
            except StoreError as exc:
                tally.check(False, f"{where}: {exc!r}")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    tally.record("wal-damaged")
    tally.assert_clean()
    assert dropped > 0  # the sample did reach into the log's commits


def test_the_cli_on_a_damaged_file_exits_with_one_line(tmp_path: Path, template: Template) -> None:
    """``chatledger verify`` / ``log`` / ``ls`` on a truncated or malformed file: exit
    status 1 and ``Error: ...`` on one line, through click and as a real process."""
    cid = next(iter(template.events))
    damaged = {
        "truncated": template.content[: len(template.content) // 2],
        "bad-header": template.content[:16] + b"\xff" * 84 + template.content[100:],
        "garbage": b"not a database at all\n" * 50,
    }
    tally = Tally()
    for name, content in damaged.items():
        path = _write(tmp_path / f"{name}.db", content)
        for command in (["verify"], ["log", cid], ["ls"], ["show", cid]):
            tally.faults += 1
            result = CliRunner().invoke(cli, ["--db", str(path), *command])
            tally.check(
                result.exit_code == 1
                and one_line_error(result.output)
                and mentions_path(result.output, path),
                f"{name} {command}: exit {result.exit_code}: {result.output!r}",
            )
        tally.check(path.read_bytes() == content, f"{name}: the CLI changed the damaged file")
        if name != "truncated" and not ledger.full_scale():
            continue  # one real process is enough in the normal suite
        done = subprocess.run(
            [sys.executable, "-m", "chatledger.cli", "--db", str(path), "verify"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        tally.faults += 1
        tally.check(
            done.returncode == 1 and one_line_error(done.stderr) and not done.stdout,
            f"{name}: exit {done.returncode}: {done.stderr!r}",
        )
    tally.record("corrupted")
    tally.assert_clean()
