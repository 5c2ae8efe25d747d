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

import functools
import json
import random
import statistics
import sys
import tempfile
import threading
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
                    ms, response = timed(functools.partial(served.http.get, url, timeout=120))
                    assert response.status_code == 200, response.text
                    results[f"{name}_ms"] = round(ms, 2)
    return results


def _served_first_chunk(served: Any, cid: str, message: str) -> float:
    started = time.perf_counter()
    with served.http.stream(
        "POST",
        f"/api/conversations/{cid}/messages",
        json={"message": message, "stream": True},
        timeout=httpx.Timeout(300),
    ) as response:
        events = sse_events(response.iter_lines())
        first = next(events)
        elapsed = (time.perf_counter() - started) * 1000
        assert first[0] == "chunk", first
        for _ in events:
            pass
    return elapsed


def _direct_first_chunk(chat: Any, message: str) -> float:
    started = time.perf_counter()
    stream = chat.send_message_stream(message)
    next(iter(stream))
    elapsed = (time.perf_counter() - started) * 1000
    for _ in stream:
        pass
    return elapsed


def _in_thread(work: Callable[[], float]) -> float:
    """``work()`` in a worker thread, as the server runs every send."""
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join()
    return result[0]


def _summary(direct: list[float], served: list[float]) -> dict[str, Any]:
    return {
        "direct_ms": [round(x, 1) for x in direct],
        "served_ms": [round(x, 1) for x in served],
        "direct_median_ms": round(statistics.median(direct), 1),
        "served_median_ms": round(statistics.median(served), 1),
        "median_paired_difference_ms": round(
            statistics.median(s - d for s, d in zip(served, direct, strict=True)), 2
        ),
    }


def measure_first_token(runs: int = 5, overhead_runs: int = 40) -> dict[str, Any]:
    """Milliseconds from sending to the first streamed chunk: the library in process,
    then through the server (HTTP, a send thread, server-sent events).

    ``local``: the real offline model, alternating which goes first, every prompt
    distinct. ``overhead``: a model server that answers at once (the loopback
    Gemini-protocol server), so the difference is the server's own cost."""
    from tests.support.gemini_server import GeminiServer, text_response

    config = {"max_output_tokens": 16, "temperature": 0.0}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch, GeminiServer() as gemini:
        chunks = [
            text_response("Hel", finish_reason=None),
            text_response("lo", finish_reason="STOP"),
        ]
        client = chatledger.Client(
            api_key="measure-key-0000000000",
            http_options={"base_url": gemini.base_url},
            store=str(Path(scratch) / "overhead.db"),
        )
        direct: list[float] = []
        served_ms: list[float] = []
        with serve_in_thread(client) as served:
            chat = client.chats.create(model="gemini-2.5-flash")
            cid = served.api_post("/api/conversations", {"model": "gemini-2.5-flash"}).json()[
                "conversation_id"
            ]
            for run in range(overhead_runs + 3):
                gemini.reply_sse(chunks)
                d = _direct_first_chunk(chat, f"hello {run}")
                gemini.reply_sse(chunks)
                s = _served_first_chunk(served, cid, f"hello {run}")
                if run >= 3:  # the first runs warm connections up
                    direct.append(d)
                    served_ms.append(s)
        client.close()
        results["overhead"] = {"runs": overhead_runs, **_summary(direct, served_ms)}

        if runs == 0:
            return results
        client = chatledger.Client(store=str(Path(scratch) / "ttft.db"))
        client.chats.create(model="local", config=config).send_message("Hello")  # load it
        direct, served_ms, main_thread = [], [], []
        with serve_in_thread(client) as served:
            for run in range(runs):
                chat = client.chats.create(model="local", config=config)
                cid = served.api_post(
                    "/api/conversations", {"model": "local", "config": config}
                ).json()["conversation_id"]
                first_direct = run % 2 == 0
                message = f"Name a colour ({run} a)."
                if first_direct:
                    direct.append(_in_thread(functools.partial(_direct_first_chunk, chat, message)))
                served_ms.append(_served_first_chunk(served, cid, f"Name a colour ({run} b)."))
                if not first_direct:
                    direct.append(_in_thread(functools.partial(_direct_first_chunk, chat, message)))
                # The same call from the main thread (see the docs: llama.cpp's threads).
                other = client.chats.create(model="local", config=config)
                main_thread.append(_direct_first_chunk(other, f"Name a colour ({run} c)."))
        client.close()
        results["local"] = {
            "runs": runs,
            **_summary(direct, served_ms),
            "direct_main_thread_ms": [round(x, 1) for x in main_thread],
        }
    return results


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
