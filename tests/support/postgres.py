"""The local PostgreSQL server for tests: scratch databases, raw connections, and the
worker functions that test processes run (importable by ``spawn`` children).

The server is ``CHATLEDGER_TEST_POSTGRES`` (an admin URL), by default the local one with
trust auth. Tests that need it fail, never skip, when it is unreachable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from chatledger.errors import ConcurrencyError
from chatledger.events import NewEvent, UserMessageAdded
from chatledger.events.postgres import PostgresStore

ADMIN_URL = os.environ.get(
    "CHATLEDGER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def connect(url: str = ADMIN_URL) -> psycopg.Connection[tuple[Any, ...]]:
    """A raw autocommit connection, failing the test (not skipping it) if unreachable."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is unreachable at {ADMIN_URL} ({exc}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or set CHATLEDGER_TEST_POSTGRES"
        )


def url_of(database: str) -> str:
    parts = urllib.parse.urlsplit(ADMIN_URL)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


@contextlib.contextmanager
def scratch_database(prefix: str = "chatledger_test") -> Iterator[str]:
    """A new, empty database for the duration of the block; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with connect() as admin:
        admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
    try:
        yield url_of(name)
    finally:
        ensure_server_running()
        with connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ----------------------------------------------------------------------------- the server


def cluster() -> tuple[str, str]:
    """The local cluster's version and name, for pg_ctlcluster."""
    versions = sorted(os.listdir("/etc/postgresql"))
    return versions[-1], "main"


def pg_ctlcluster(action: str) -> None:
    if shutil.which("pg_ctlcluster") is None:
        pytest.fail("pg_ctlcluster is not installed: this test restarts the local server")
    version, name = cluster()
    options = ["-m", "fast"] if action in {"stop", "restart"} else []
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action, *options],
        check=True,
        capture_output=True,
        timeout=120,
    )


def server_is_up() -> bool:
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def ensure_server_running(timeout: float = 60) -> None:
    """Start the local server if it is down, and wait until it accepts connections."""
    if server_is_up():
        return
    with contextlib.suppress(subprocess.CalledProcessError):
        pg_ctlcluster("start")
    deadline = time.monotonic() + timeout
    while not server_is_up():
        if time.monotonic() > deadline:
            pytest.fail("the local PostgreSQL server did not come back up")
        time.sleep(0.2)


# ----------------------------------------------------------------------------- activity


def backend_waiting(
    conn: psycopg.Connection[tuple[Any, ...]], application_name: str, timeout: float = 30
) -> int:
    """The pid of the backend of ``application_name`` once it waits for a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock' ORDER BY backend_start LIMIT 1",
            (application_name,),
        ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.01)
    raise AssertionError(f"no backend of {application_name} waited for a lock")


# ----------------------------------------------------------------------------- workers


def append_to_shared(url: str, conversation_id: str, writer: int, count: int, start: Any) -> int:
    """Append ``count`` one-event appends to one conversation, retrying on conflicts;
    return the number of conflicts met."""
    conflicts = 0
    with PostgresStore(url, pool_max=1) as store:
        start.wait()
        info = store.stream_info(conversation_id)
        version = info.version if info else 0
        for n in range(count):
            event = NewEvent(
                data=UserMessageAdded(
                    turn=n + 1, content={"role": "user", "parts": [{"text": f"{writer}/{n}"}]}
                ),
                metadata={"writer": writer, "n": n},
            )
            while True:
                try:
                    store.append(conversation_id, [event], expected_version=version)
                    version += 1
                    break
                except ConcurrencyError as exc:
                    conflicts += 1
                    version = exc.actual_version
    return conflicts


def append_to_own(url: str, conversation_id: str, appends: int, seed: int, start: Any) -> list[str]:
    """Append ``appends`` batches of 1 to 3 events to a conversation already started;
    return the event ids written, in order."""
    import random

    rng = random.Random(seed)
    written: list[str] = []
    with PostgresStore(url, pool_max=1) as store:
        info = store.stream_info(conversation_id)
        version = info.version if info else 0
        start.wait()
        for n in range(appends):
            events = [
                NewEvent(
                    data=UserMessageAdded(
                        turn=n + 1,
                        content={"role": "user", "parts": [{"text": "x" * rng.randrange(1, 200)}]},
                    )
                )
                for _ in range(rng.randint(1, 3))
            ]
            store.append(conversation_id, events, expected_version=version)
            version += len(events)
            written.extend(event.event_id for event in events)
    return written


def run_projection_until_crash(location: str, crash_after: int, schema: str | None) -> None:
    """Run the usage runner (batches of 50) in this child process; die abruptly,
    mid-transaction, once a batch takes it to ``crash_after`` events."""
    from chatledger.events import open_store
    from chatledger.readmodels import ProjectionRunner, TokenUsageByModel

    class CrashingUsage(TokenUsageByModel):
        handled = 0

        def handle(self, tx: Any, events: Any) -> None:
            super().handle(tx, events)
            CrashingUsage.handled += len(events)
            if CrashingUsage.handled >= crash_after:
                os._exit(17)  # no rollback, no cleanup: the database must cope

    options: dict[str, Any] = {"schema": schema} if schema else {}
    store = open_store(location, **options)
    ProjectionRunner(store, CrashingUsage(), batch=50).run_once()
    raise AssertionError("the runner should have crashed")


class Collector(threading.Thread):
    """Follows ``store.subscribe`` from a position, keeping what it yields."""

    def __init__(self, store: Any, after_position: int) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.after_position = after_position
        self.stop = threading.Event()
        self.events: list[Any] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for event in self.store.subscribe(
                self.after_position, stop=self.stop, poll_interval=0.02
            ):
                self.events.append(event)
        except BaseException as exc:
            self.error = exc


def _call(results: Any, index: int, target: Any, args: tuple[Any, ...]) -> None:
    import traceback

    try:
        results.put((index, "ok", target(*args)))
    except BaseException:
        results.put((index, "error", traceback.format_exc()))


def run_processes(
    target: Any, argument_lists: list[tuple[Any, ...]], timeout: float = 600
) -> list[Any]:
    """Run ``target(*args)`` in one spawned OS process per argument list (a
    ``multiprocessing`` Barrier may be among the args); return their results in order,
    failing the test with a child's traceback if one failed."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=_call, args=(results, index, target, args), daemon=True)
        for index, args in enumerate(argument_lists)
    ]
    for process in processes:
        process.start()
    collected: dict[int, Any] = {}
    try:
        for _ in processes:
            index, status, value = results.get(timeout=timeout)
            if status != "ok":
                pytest.fail(f"worker {index} failed:\n{value}")
            collected[index] = value
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    return [collected[index] for index in range(len(processes))]


def barrier(parties: int) -> Any:
    import multiprocessing

    return multiprocessing.get_context("spawn").Barrier(parties)
