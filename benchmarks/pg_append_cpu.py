"""Client and server CPU per PostgreSQL append, one writer: the diagnostic behind goal 6.

One process appends ``--appends`` model replies (the events of ``pg_appends.py``) to one
conversation and prints the CPU its own process and its server backend used per append
(the backend's from /proc, so the server must run on this host). CPU time is far less
sensitive to a shared machine's load than a rate; to compare two versions of chatledger,
run this from each checkout in turn, interleaved, and compare medians::

    .venv-bench/bin/python benchmarks/pg_append_cpu.py --appends 400 --label mine
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pg_appends import backend_cpu, reply

from chatledger.events import ConversationStarted, ModelResponded, NewEvent
from chatledger.events.postgres import PostgresStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--appends", type=int, default=400)
    parser.add_argument("--label", default="chatledger")
    args = parser.parse_args()
    schema = f"cpu_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(args.url, schema=schema, pool_min=1, pool_max=1)
    try:
        cid = f"cpu-{uuid.uuid4()}"
        store.append(
            cid, [NewEvent(data=ConversationStarted(model="gemini-2.5-flash"))], expected_version=0
        )
        version = 1
        for n in range(20):  # warm-up: plans cached, the head and state remembered
            store.append(
                cid,
                [NewEvent(data=ModelResponded(turn=n, response=reply(n)))],
                expected_version=version,
            )
            version += 1
        events = [
            NewEvent(data=ModelResponded(turn=n, response=reply(n))) for n in range(args.appends)
        ]
        backend = store.run_in_transaction(lambda conn: conn.info.backend_pid)
        server, client, began = backend_cpu(backend), time.process_time(), time.monotonic()
        for event in events:
            store.append(cid, [event], expected_version=version)
            version += 1
        used = (time.process_time() - client) * 1000 / args.appends
        after = backend_cpu(backend)
        on_server = (after - server) * 1000 / args.appends if after and server else float("nan")
        wall = (time.monotonic() - began) * 1000 / args.appends
        print(
            f"{args.label}: client {used:.3f} ms, server {on_server:.3f} ms, "
            f"wall {wall:.2f} ms per append"
        )
    finally:
        store.run_in_transaction(lambda conn: conn.execute(f"DROP SCHEMA {schema} CASCADE"))
        store.close()


if __name__ == "__main__":
    main()
