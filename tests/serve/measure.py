"""Measure what chatledger serve costs: listing and search at N conversations, and the
first streamed token through the server against the library directly.

    python -m tests.serve.measure catalog 1000 100000     # listing and search
    python -m tests.serve.measure catalog 100000 --keep /tmp   # keep (and reuse) the db
    python -m tests.serve.measure first-token             # the local model, 5 runs

Conversations are written through the store's public append (one conversation_started,
user_message_added, model_call_started and model_responded each, as a one-turn chat
records them), with ten actors, five models and messages drawn from a word list.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import chatledger
from chatledger.events import (
    ConversationStarted,
    ModelCallStarted,
    ModelResponded,
    NewEvent,
    UserMessageAdded,
)
from chatledger.events.store import EventStore
from chatledger.serve.catalog import StoreCatalog

from .support import serve_in_thread, sse_events

WORDS = [
    "ledger",
    "order",
    "refund",
    "invoice",
    "shipping",
    "account",
    "password",
    "reset",
    "delivery",
    "tracking",
    "billing",
    "upgrade",
    "cancel",
    "subscription",
    "warranty",
    "return",
    "exchange",
    "discount",
    "coupon",
    "address",
    "payment",
    "card",
    "bank",
    "transfer",
    "receipt",
    "complaint",
    "manager",
    "schedule",
    "meeting",
]
MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "local", "openai/gpt-4o-mini", "smollm2")
ACTORS = tuple(f"agent-{n}" for n in range(10))


def populate(store: EventStore, count: int, seed: int = 7) -> None:
    """Write ``count`` one-turn conversations."""
    rng = random.Random(seed)
    for index in range(count):
        actor = ACTORS[index % len(ACTORS)]
        model = MODELS[index % len(MODELS)]
        text = " ".join(rng.choice(WORDS) for _ in range(8)) + f" #{index}"
        content = {"role": "user", "parts": [{"text": text}]}
        reply = {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}
            ]
        }
        metadata = {"actor": actor}
        store.append(
            f"conv-{index:07d}-{rng.getrandbits(32):08x}",
            [
                NewEvent(data=ConversationStarted(model=model), metadata=metadata),
                NewEvent(data=UserMessageAdded(turn=1, content=content), metadata=metadata),
                NewEvent(
                    data=ModelCallStarted(turn=1, model=model, contents_count=1),
                    metadata=metadata,
                ),
                NewEvent(data=ModelResponded(turn=1, response=reply), metadata=metadata),
            ],
            expected_version=0,
        )


def timed(work: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    """The median milliseconds of ``repeat`` runs, and the last result."""
    times = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def measure_catalog(count: int, directory: str | None = None) -> dict[str, Any]:
    """Listing and search times at ``count`` conversations (the database is kept in
    ``directory`` when given, and reused by the next run)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = str(Path(directory or scratch) / f"catalog-{count}.db")
        results: dict[str, Any] = {"conversations": count}
        if not Path(path).exists():
            started = time.perf_counter()
            with chatledger.SQLiteStore(path) as store:
                populate(store, count)
            results["write_s"] = round(time.perf_counter() - started, 1)
        with chatledger.SQLiteStore(path) as store:
            catalog = StoreCatalog(store, build_wait=600)
            ms, _ = timed(lambda: catalog.search(page=1), repeat=5)
            results["list_page_1_before_index_ms"] = round(ms, 2)
            started = time.perf_counter()
            catalog.start()
            catalog.wait_until_ready()
            results["index_build_s"] = round(time.perf_counter() - started, 2)
            queries: dict[str, Callable[[], Any]] = {
                "list_page_1": lambda: catalog.search(page=1),
                "list_page_40": lambda: catalog.search(page=40),
                "search_text_common": lambda: catalog.search(text="refund"),
                "search_text_rare": lambda: catalog.search(text=f"#{count - 3}"),
                "search_id_prefix": lambda: catalog.search(text="conv-0000042"),
                "search_model": lambda: catalog.search(model="pro"),
                "search_actor": lambda: catalog.search(actor="agent-3"),
                "search_all_three": lambda: catalog.search(
                    text="refund", model="flash", actor="agent-5"
                ),
            }
            for name, work in queries.items():
                ms, page = timed(work)
                results[f"{name}_ms"] = round(ms, 2)
                if page.total is not None:
                    results[f"{name}_matches"] = page.total
            print(json.dumps(results), file=sys.stderr, flush=True)
            catalog.close()
            client = chatledger.Client(store=store)
            with serve_in_thread(client) as served:
                served.state.catalog.wait_until_ready(600)  # the server's own index
                served.http.get("/api/conversations")  # warm
                for name, url in (
                    ("http_list", "/api/conversations"),
                    ("http_search", "/api/conversations?text=refund&actor=agent-5"),
                    ("http_list_page", "/"),
                    ("http_search_page", "/?q=refund"),
                ):
                    ms, response = timed(lambda u=url: served.http.get(u, timeout=120))
                    assert response.status_code == 200, response.text
                    results[f"{name}_ms"] = round(ms, 2)
    return results


def measure_first_token(runs: int = 5) -> dict[str, Any]:
    """Milliseconds from sending to the first streamed chunk, on the real local model:
    the library in process, then through the server (HTTP + SSE), alternating."""
    config = {"max_output_tokens": 16, "temperature": 0.0}
    direct: list[float] = []
    served_ms: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        client = chatledger.Client(store=str(Path(scratch) / "ttft.db"))
        warm = client.chats.create(model="local", config=config)
        warm.send_message("Hello")  # loads the model once
        with serve_in_thread(client) as served:
            for run in range(runs):
                chat = client.chats.create(model="local", config=config)
                started = time.perf_counter()
                stream = chat.send_message_stream(f"Name a colour ({run}).")
                next(iter(stream))
                direct.append((time.perf_counter() - started) * 1000)
                for _ in stream:
                    pass
                cid = served.api_post(
                    "/api/conversations", {"model": "local", "config": config}
                ).json()["conversation_id"]
                started = time.perf_counter()
                with served.http.stream(
                    "POST",
                    f"/api/conversations/{cid}/messages",
                    json={"message": f"Name a colour ({run}).", "stream": True},
                    timeout=httpx.Timeout(120),
                ) as response:
                    events = sse_events(response.iter_lines())
                    first = next(events)
                    served_ms.append((time.perf_counter() - started) * 1000)
                    assert first[0] == "chunk"
                    for _ in events:
                        pass
        client.close()
    return {
        "runs": runs,
        "direct_ms": [round(x, 1) for x in direct],
        "served_ms": [round(x, 1) for x in served_ms],
        "direct_median_ms": round(statistics.median(direct), 1),
        "served_median_ms": round(statistics.median(served_ms), 1),
        "median_difference_ms": round(
            statistics.median(s - d for s, d in zip(served_ms, direct, strict=True)), 1
        ),
    }


def main(argv: list[str]) -> None:
    if argv and argv[0] == "first-token":
        print(json.dumps(measure_first_token(int(argv[1]) if len(argv) > 1 else 5), indent=2))
        return
    directory = None
    if "--keep" in argv:
        directory = argv[argv.index("--keep") + 1]
        argv = [arg for arg in argv if arg not in ("--keep", directory)]
    counts = [int(arg) for arg in argv[1:]] if argv and argv[0] == "catalog" else [1000]
    for count in counts:
        print(json.dumps(measure_catalog(count, directory), indent=2), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
