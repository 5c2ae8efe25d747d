"""Appends per second on PostgreSQL: chatledger's PostgresStore vs eventsourcing's recorder.

Both write the same events (a ~700-byte model reply, one event per append) to the same
server, in the same run, with 1 and with 8 concurrent writer processes, each writer on a
conversation (aggregate) of its own. Each library runs at its default durability: the
server's ``synchronous_commit = on`` with ``fsync = on`` (every append returns after its
commit is flushed to the WAL); neither library changes it.

- chatledger: ``PostgresStore.append`` (per-conversation advisory lock, positions
  allocated with the transaction id; commits run in parallel and share WAL flushes).
- eventsourcing 9.5.6: ``PostgresApplicationRecorder.insert_events`` (``LOCK TABLE ...
  IN EXCLUSIVE MODE`` until commit, so commits are serialised). The recorder, not the
  application layer, is measured: the fastest way to use it.

Run it from the repository root in the benchmark venv (see benchmarks/requirements.txt,
or ``make bench-pg``)::

    .venv-bench/bin/python benchmarks/pg_appends.py --repeat 5

It creates a scratch database (dropped afterwards) on ``--url``'s server and prints a
table of medians and the ratio. Results vary with the machine (cores, fsync latency).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import urllib.parse
import uuid
from typing import Any

import msgspec
import psycopg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WRITERS = (1, 8)
LIBRARIES = ("chatledger", "eventsourcing")
WARMUP = 20


def reply(n: int) -> dict[str, Any]:
    """A model reply of a typical size, as chatledger records it."""
    text = f"Answer {n}: " + "the quick brown fox jumps over the lazy dog " * 12
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": {
            "promptTokenCount": 120,
            "candidatesTokenCount": 96,
            "totalTokenCount": 216,
        },
        "modelVersion": "gemini-2.5-flash",
    }


# ----------------------------------------------------------------------------- writers


def backend_cpu(pid: int) -> float | None:
    """CPU seconds used so far by a server process, when the server runs on this host."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def span(
    began: float, cpu: float, server: float | None, backend: int
) -> tuple[float, float, float, float | None]:
    """(start, end, client CPU s, server CPU s) of one writer's timed appends."""
    after = backend_cpu(backend)
    used = after - server if after is not None and server is not None else None
    return began, time.monotonic(), time.process_time() - cpu, used


def chatledger_writer(url: str, appends: int, start: Any, results: Any) -> None:
    from chatledger.events import ConversationStarted, ModelResponded, NewEvent
    from chatledger.events.postgres import PostgresStore

    store = PostgresStore(url, schema="bench_chatledger", pool_min=1, pool_max=1)
    cid = f"bench-{uuid.uuid4()}"
    store.append(
        cid, [NewEvent(data=ConversationStarted(model="gemini-2.5-flash"))], expected_version=0
    )
    version = 1
    for n in range(WARMUP):
        store.append(
            cid,
            [NewEvent(data=ModelResponded(turn=n, response=reply(n)))],
            expected_version=version,
        )
        version += 1
    events = [NewEvent(data=ModelResponded(turn=n, response=reply(n))) for n in range(appends)]
    backend = store.run_in_transaction(lambda conn: conn.info.backend_pid)  # pool_max=1: the one
    start.wait()
    began, cpu, server = time.monotonic(), time.process_time(), backend_cpu(backend)
    for event in events:
        store.append(cid, [event], expected_version=version)
        version += 1
    results.put(span(began, cpu, server, backend))
    store.close()


def eventsourcing_writer(url: str, appends: int, start: Any, results: Any) -> None:
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder

    datastore = datastore_for(url)
    recorder = PostgresApplicationRecorder(datastore, events_table_name="bench_stored_events")
    originator = uuid.uuid4()
    topic = "benchmarks.pg_appends:ModelResponded"
    for n in range(WARMUP):
        state = msgspec.json.encode({"turn": n, "response": reply(n)})
        recorder.insert_events([StoredEvent(originator, n + 1, topic, state)])
    events = [
        StoredEvent(
            originator,
            WARMUP + n + 1,
            topic,
            msgspec.json.encode({"turn": n, "response": reply(n)}),
        )
        for n in range(appends)
    ]
    with datastore.get_connection() as conn:  # pool_size=1: the one
        backend = conn.info.backend_pid
    start.wait()
    began, cpu, server = time.monotonic(), time.process_time(), backend_cpu(backend)
    for event in events:
        recorder.insert_events([event])
    results.put(span(began, cpu, server, backend))
    datastore.close()


def datastore_for(url: str) -> Any:
    from eventsourcing.postgres import PostgresDatastore

    parts = urllib.parse.urlsplit(url)
    return PostgresDatastore(
        dbname=parts.path.lstrip("/"),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or "",
    )


# ----------------------------------------------------------------------------- runs


def wal_syncs(url: str) -> int:
    """WAL flushes so far, server-wide (pg_stat_wal; other activity on the server counts too)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
        return int(row[0]) if row else 0


def run(
    library: str, url: str, writers: int, appends: int
) -> tuple[float, float, float | None, float]:
    """Appends per second of ``writers`` processes (from the first start to the last
    end), the client and server CPU milliseconds spent per append, and the WAL flushes
    per append (below 1 when commits share flushes)."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(writers + 1)
    results = context.Queue()
    target = chatledger_writer if library == "chatledger" else eventsourcing_writer
    processes = [
        context.Process(target=target, args=(url, appends, start, results)) for _ in range(writers)
    ]
    for process in processes:
        process.start()
    syncs = wal_syncs(url)
    start.wait(timeout=120)
    spans = [results.get(timeout=600) for _ in processes]
    syncs = wal_syncs(url) - syncs
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a {library} writer failed (exit code {process.exitcode})")
    began = min(span[0] for span in spans)
    ended = max(span[1] for span in spans)
    total = writers * appends
    client = sum(span[2] for span in spans) * 1000 / total
    servers = [span[3] for span in spans]
    server = (
        sum(s for s in servers if s is not None) * 1000 / total if None not in servers else None
    )
    return total / (ended - began), client, server, syncs / total


def setup(url: str) -> None:
    """Create both libraries' tables once, before any timed run."""
    from eventsourcing.postgres import PostgresApplicationRecorder

    from chatledger.events.postgres import PostgresStore

    PostgresStore(url, schema="bench_chatledger").close()
    datastore = datastore_for(url)
    PostgresApplicationRecorder(datastore, events_table_name="bench_stored_events").create_table()
    datastore.close()


def server_settings(url: str) -> dict[str, str]:
    names = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "commit_delay")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(names),)
        )
        return dict(rows.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=DEFAULT_URL, help="an admin URL of the server (default: %(default)s)"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs of each configuration (default: 5)"
    )
    parser.add_argument(
        "--appends", type=int, default=300, help="appends per writer per run (default: 300)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one run of 100 appends per writer (a smoke test)"
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the samples and medians as JSON to PATH"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.appends = 1, 100

    name = f"chatledger_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(args.url)
    url = urllib.parse.urlunsplit(parts._replace(path="/" + name))
    try:
        settings = server_settings(url)
        print(
            f"PostgreSQL {settings['server_version']}: fsync={settings['fsync']}, "
            f"synchronous_commit={settings['synchronous_commit']}, "
            f"wal_sync_method={settings['wal_sync_method']}, commit_delay={settings['commit_delay']}; "
            f"{os.cpu_count()} CPUs; {args.appends} appends per writer, {args.repeat} runs each",
            flush=True,
        )
        setup(url)
        samples: dict[tuple[str, int], list[float]] = {
            (lib, w): [] for lib in LIBRARIES for w in WRITERS
        }
        cpu: dict[tuple[str, int], list[tuple[float, float | None]]] = {key: [] for key in samples}
        flushes: dict[tuple[str, int], list[float]] = {key: [] for key in samples}
        for repetition in range(args.repeat):
            for writers in WRITERS:
                # Alternate which library goes first, so neither always meets a warmer server.
                order = LIBRARIES if repetition % 2 == 0 else tuple(reversed(LIBRARIES))
                for library in order:
                    rate, client, server, synced = run(library, url, writers, args.appends)
                    samples[library, writers].append(rate)
                    cpu[library, writers].append((client, server))
                    flushes[library, writers].append(synced)
                    used = f"CPU/append: client {client:.2f} ms" + (
                        f", server {server:.2f} ms" if server is not None else ""
                    )
                    print(
                        f"  run {repetition + 1}: {library:13} {writers} writer(s): {rate:8.0f} appends/s  "
                        f"({used}; WAL flushes/append {synced:.2f})",
                        flush=True,
                    )

        def cpu_median(library: str, writers: int) -> str:
            clients = [c for c, _ in cpu[library, writers]]
            servers = [s for _, s in cpu[library, writers] if s is not None]
            text = f"{statistics.median(clients):.2f}"
            return text + (f" + {statistics.median(servers):.2f}" if servers else "")

        print()
        print(
            "| writers | chatledger (appends/s) | eventsourcing (appends/s) | ratio "
            "| CPU ms/append (client + server): chatledger | eventsourcing "
            "| WAL flushes/append: chatledger | eventsourcing |"
        )
        print(
            "|--------:|-----------------------:|--------------------------:|------:|------:|------:|------:|------:|"
        )
        for writers in WRITERS:
            ours = statistics.median(samples["chatledger", writers])
            theirs = statistics.median(samples["eventsourcing", writers])
            print(
                f"| {writers} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x | "
                f"{cpu_median('chatledger', writers)} | {cpu_median('eventsourcing', writers)} | "
                f"{statistics.median(flushes['chatledger', writers]):.2f} | "
                f"{statistics.median(flushes['eventsourcing', writers]):.2f} |"
            )
        print(f"(medians of {args.repeat} runs)")
        if args.json:
            rows = [
                {
                    "library": library,
                    "writers": writers,
                    "per_second": statistics.median(samples[library, writers]),
                    "samples": samples[library, writers],
                    "cpu_ms_per_append": [
                        {"client": client, "server": server}
                        for client, server in cpu[library, writers]
                    ],
                    "wal_flushes_per_append": flushes[library, writers],
                }
                for writers in WRITERS
                for library in LIBRARIES
            ]
            report = {
                "rows": rows,
                "server": settings,
                "cpus": os.cpu_count(),
                "appends_per_writer": args.appends,
                "runs": args.repeat,
                "durability": "server defaults for both: fsync=on, synchronous_commit=on",
            }
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(report, handle, indent=2)
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
