"""Store faults, **disk full**, at many fill levels, three ways: a small ``tmpfs`` really
filled up (ENOSPC; needs root and ``mount``), SQLite's ``max_page_count`` (its own
SQLITE_FULL, portable), and ``RLIMIT_FSIZE`` in a child process with ``SIGXFSZ`` ignored
(writes fail with EFBIG: SQLite's I/O error path).

What every store fault test measures, and how: :mod:`tests.faults.store_faults`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from chatledger.errors import ChatledgerError, StoreUnavailableError
from tests.faults import ledger
from tests.faults.store_faults import (
    BUSY_TIMEOUT,
    NO_PAGE_LIMIT,
    ROOT,
    ObservedStore,
    Tally,
    count_lost,
    log_of,
    make_client,
    mentions_path,
    send_streamed,
    user_texts,
)
from tests.support.gemini_server import GeminiServer, text_response


@dataclass
class FillResult:
    """One fill level: what was committed, what failed, and what was measured."""

    level: int
    sends_before_full: int = 0
    failed_append: str = ""
    error: str = ""
    tally: Tally = field(default_factory=Tally)


def fill_until_full(
    path: Path,
    server: GeminiServer,
    level: int,
    make_full: Callable[[ObservedStore, int], None],
    free: Callable[[ObservedStore], object],
    *,
    expect: Sequence[str] = ("full",),
) -> FillResult:
    """Chat on ``path`` with the disk made nearly full (``level`` bytes or pages left) until
    an append fails; measure; free the space; and chat on."""
    result = FillResult(level)
    tally = result.tally
    store = ObservedStore(path, busy_timeout=BUSY_TIMEOUT)
    client = make_client(server, store)
    try:
        chat = client.chats.create(model="gemini-test")
        server.reply_echo()
        chat.send_message("first")
        sent = ["first"]
        before = log_of(store)
        committed_before = set(store.committed)
        make_full(store, level)
        raised: ChatledgerError | None = None
        for number in range(200):
            text = f"message {number} " + "x" * (300 + 97 * (number % 13))
            try:
                if number % 3 == 2:
                    server.reply_sse(
                        [text_response(f"echo: {text[:40]}", finish_reason=None), text_response("")]
                    )
                    send_streamed(chat, text)
                else:
                    server.reply_echo()
                    chat.send_message(text)
                sent.append(text)
            except ChatledgerError as exc:
                raised = exc
                break
        result.sends_before_full = len(sent) - 1
        tally.faults += 1
        where = f"fill level {level}"
        if not tally.check(raised is not None, f"{where}: the disk never filled up"):
            return result
        assert raised is not None
        result.error = str(raised)
        result.failed_append = store.failed[0][1] if store.failed else "?"
        tally.check(
            isinstance(raised, StoreUnavailableError)
            and mentions_path(result.error, path)
            and any(word in result.error for word in expect),
            f"{where}: {raised!r}",
        )
        # Measured while the disk is still full: every committed event is readable.
        tally.events_lost += count_lost(before, store.committed - committed_before, log_of(store))
        tally.check(store.verify().ok, f"{where}: the log does not verify while full")
        free(store)
        after = log_of(store)
        tally.events_lost += count_lost(before, store.committed - committed_before, after)
        tally.check(store.verify().ok, f"{where}: the log does not verify after freeing space")
        server.clear()  # the reply of a send that failed before calling the model
        server.reply_echo()
        try:
            reply = chat.send_message("after freeing space").text
        except ChatledgerError as exc:
            reply = f"failed: {exc!r}"
        tally.check(
            reply == "echo: after freeing space", f"{where}: the chat did not go on ({reply})"
        )
        tally.check(
            user_texts(chat) == [*sent, "after freeing space"],
            f"{where}: history {[t[:12] for t in user_texts(chat)]} vs {[t[:12] for t in sent]}",
        )
        with make_client(server, str(path)) as fresh:
            tally.check(
                fresh.chats.get(chat.id).get_history() == chat.get_history(),
                f"{where}: the history rebuilt from the log differs",
            )
        tally.events_lost += count_lost(after, set(), log_of(store))
        tally.check(store.verify().ok, f"{where}: the log does not verify at the end")
    finally:
        client.close()
        store.close()
    return result


def _check_fill_results(results: list[FillResult], fault: str) -> None:
    tally = Tally()
    for result in results:
        tally.add(result.tally)
    tally.record(fault)
    tally.assert_clean()
    # The levels reach the fault at different points of a turn, not just one.
    failed_at = {result.failed_append for result in results}
    assert failed_at, results
    if ledger.full_scale():
        assert {"user_message_added", "model_responded"} <= failed_at, failed_at


def _levels(fast: list[int], full_count: int, top: int, seed: int) -> list[int]:
    """The fill levels to try: ``fast`` (chosen to fail at the user message, at the reply,
    then at the user message again) in the normal suite; under ``make faults`` also
    ``full_count`` random ones below ``top``."""
    if not ledger.full_scale():
        return fast
    rng = random.Random(seed)
    return sorted({*fast, *(rng.randrange(top) for _ in range(full_count))})


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at ``mountpoint``, or skip where mounting is not allowed."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def _fill(filler: Path, leave: int) -> None:
    """Write ``filler`` until only ``leave`` bytes are free on its disk."""
    chunk = b"\0" * 65536
    with open(filler, "wb") as handle:
        while True:
            room = _free_bytes(filler.parent) - leave
            if room <= 0:
                return
            try:
                handle.write(chunk[: min(len(chunk), room)])
                handle.flush()
            except OSError:
                return


def test_disk_full_on_a_real_filesystem_at_many_fill_levels(tmp_path: Path) -> None:
    """A tmpfs filled to ``level`` free bytes (real ENOSPC), a fresh conversation per level."""
    levels = _levels([0, 40_000, 200_000], 40, 400_000, seed=8)
    results = []
    with tmpfs(tmp_path / "disk", "8m") as disk, GeminiServer() as server:
        filler = disk / "filler"
        for level in levels:
            folder = disk / f"level-{level}"
            folder.mkdir()
            results.append(
                fill_until_full(
                    folder / "chatledger.db",
                    server,
                    level,
                    lambda store, leave: _fill(filler, leave),
                    lambda store: filler.unlink(),
                )
            )
            shutil.rmtree(folder)
        # A new log on a full disk: its schema cannot be written; once there is room it can.
        _fill(filler, 0)
        fresh = Tally(faults=1)
        new = disk / "new.db"
        try:
            make_client(server, str(new)).close()
            fresh.check(False, "a new log was created on a full disk")
        except StoreUnavailableError as exc:
            fresh.check(mentions_path(str(exc), new) and "full" in str(exc), f"unclear: {exc}")
        filler.unlink()
        with make_client(server, str(new)) as client:
            chat = client.chats.create(model="gemini-test")
            server.reply_echo()
            fresh.check(chat.send_message("room again").text == "echo: room again", "no go")
            fresh.check(client.store.verify().ok, "the new log does not verify")
        results.append(FillResult(level=0, failed_append="conversation_started", tally=fresh))
    _check_fill_results(results, "disk-full")


def _page_limit(store: ObservedStore, extra_pages: int) -> None:
    def limit(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + extra_pages}")

    store.run_in_transaction(limit)


def test_database_full_by_max_page_count_at_many_fill_levels(tmp_path: Path) -> None:
    """SQLite's own SQLITE_FULL ("database or disk is full"), portable to any machine."""
    levels = _levels([0, 2, 8], 40, 24, seed=9)
    results = []
    with GeminiServer() as server:
        for level in levels:
            results.append(
                fill_until_full(
                    tmp_path / f"pages-{level}.db",
                    server,
                    level,
                    _page_limit,
                    lambda store: store.run_in_transaction(
                        lambda conn: conn.execute(f"PRAGMA max_page_count = {NO_PAGE_LIMIT}")
                    ),
                )
            )
    _check_fill_results(results, "disk-full")


def file_size_limit_child() -> None:
    """Run in a child process: chat with ``RLIMIT_FSIZE`` just above the files' sizes at
    each level (argv: workdir, levels as JSON); print one JSON result per level."""
    import resource

    workdir = Path(sys.argv[1])
    levels = json.loads(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit(store: ObservedStore, extra: int) -> None:
        biggest = max(
            Path(f"{store.path}{suffix}").stat().st_size
            for suffix in ("", "-wal", "-shm")
            if Path(f"{store.path}{suffix}").exists()
        )
        resource.setrlimit(resource.RLIMIT_FSIZE, (biggest + extra, hard))

    def unlimit(store: ObservedStore) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    with GeminiServer() as server:
        for level in levels:
            result = fill_until_full(
                workdir / f"fsize-{level}.db",
                server,
                level,
                limit,
                unlimit,
                expect=("disk", "full", "write"),
            )
            print(json.dumps(asdict(result)), flush=True)


def test_file_size_limit_makes_writes_fail_at_many_fill_levels(tmp_path: Path) -> None:
    """``ulimit -f`` in a child process: SQLite sees EFBIG (its I/O error path, or a short
    write it reports as full)."""
    levels = _levels([0, 30_000, 100_000], 30, 200_000, seed=10)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tests.faults.test_store_faults_disk_full import file_size_limit_child as c; c()",
            str(tmp_path),
            json.dumps(levels),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = []
    for line in done.stdout.splitlines():
        raw = json.loads(line)
        raw["tally"] = Tally(**raw["tally"])
        results.append(FillResult(**raw))
    assert [result.level for result in results] == levels
    _check_fill_results(results, "disk-full")
