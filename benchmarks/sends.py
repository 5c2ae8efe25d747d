"""Figures 8 and 9 (goals of an earlier round, kept as checks): client-side time per send,
and time to the first streamed chunk,
against a loopback Gemini-protocol server that answers at once (loopback.py).

8. chatledger's ``chat.send_message`` on a durable SQLite file (its defaults) vs
   google-genai 3.3.0's unpersisted chat: same server, same replies, both clients in this
   process, sends alternating between them; each round starts a fresh chat on both sides
   and sends ``turns`` messages, so both send the same histories. Median per send; nothing
   is subtracted.
9. chatledger's ``send_message_stream`` until its first chunk vs a raw httpx stream read of
   the same request body (POST, read lines until the first ``data:`` line, decode it),
   alternating. Added = median(chatledger) - median(raw); the median of the paired
   differences is in the JSON too. google-genai's stream is shown for reference.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

from . import corpus
from .loopback import LoopbackServer
from .measure import Progress, failure, summary

API_KEY = "bench-key"


def _genai_client(base_url: str) -> Any:
    from google import genai

    return genai.Client(
        api_key=API_KEY, http_options={"base_url": base_url, "api_version": "v1beta"}
    )


def _ledger_client(base_url: str, path: Path) -> Any:
    import chatledger

    return chatledger.Client(
        api_key=API_KEY, http_options={"base_url": base_url}, store=str(path), actor="bench"
    )


def run_send(sizes: dict[str, Any], workdir: Path, progress: Progress) -> dict[str, Any]:
    rounds, turns = sizes["send_rounds"], sizes["send_turns"]
    ledger_row: dict[str, Any] = {
        "library": "chatledger",
        "variant": "chat.send_message, SQLite file (defaults)",
        "counted": True,
    }
    genai_row: dict[str, Any] = {
        "library": "google-genai",
        "variant": "chat.send_message, in memory",
        "counted": True,
    }
    rows = [ledger_row, genai_row]
    goal: dict[str, Any] = {"goal": "earlier", "text": "chatledger <= 1.0x google-genai"}
    try:
        ledger_row["version"] = metadata.version("chatledger")
        genai_row["version"] = metadata.version("google-genai")
        with LoopbackServer() as server:
            ledger = _ledger_client(server.base_url, workdir / "send-chatledger.db")
            genai_client = _genai_client(server.base_url)
            ledger_row["durability"] = _store_durability(ledger)
            samples: dict[str, list[float]] = {"chatledger": [], "google-genai": []}
            by_turn: dict[str, dict[int, list[float]]] = {"chatledger": {}, "google-genai": {}}
            for round_number in range(rounds + 1):  # round 0 warms up both clients
                if round_number % max(1, rounds // 4) == 0:
                    progress(f"round {round_number}/{rounds} ({turns} sends each)")
                chats = {
                    "chatledger": ledger.chats.create(model=corpus.MODEL),
                    "google-genai": genai_client.chats.create(model=corpus.MODEL),
                }
                for turn in range(turns):
                    order = ["chatledger", "google-genai"]
                    if (round_number + turn) % 2:
                        order.reverse()
                    for name in order:
                        message = corpus.user_text(turn)
                        started = time.perf_counter()
                        response = chats[name].send_message(message)
                        elapsed = time.perf_counter() - started
                        if not response.text:
                            raise RuntimeError(f"{name} got an empty reply")
                        if round_number:
                            samples[name].append(elapsed)
                            by_turn[name].setdefault(turn, []).append(elapsed)
            ledger.close()
            genai_client.close()
        ledger_row.update(summary(samples["chatledger"]))
        genai_row.update(summary(samples["google-genai"]))
        for row, name in ((ledger_row, "chatledger"), (genai_row, "google-genai")):
            row["median_by_history_turns_s"] = {
                turn: summary(values)["median_s"] for turn, values in sorted(by_turn[name].items())
            }
        ratio = ledger_row["median_s"] / genai_row["median_s"]
        ledger_row["vs_best_peer"] = ratio
        genai_row["vs_best_peer"] = 1.0
        goal.update(
            ratio=ratio,
            met=ratio <= 1.0,
            detail=(
                f"chatledger {ledger_row['median_s'] * 1e3:.3f} ms vs google-genai "
                f"{genai_row['median_s'] * 1e3:.3f} ms per send = {ratio:.2f}x; first send of a chat: "
                f"{ledger_row['median_by_history_turns_s'][0] * 1e3:.3f} vs "
                f"{genai_row['median_by_history_turns_s'][0] * 1e3:.3f} ms"
            ),
        )
    except Exception as exc:
        ledger_row.setdefault("error", failure(exc))
        goal.update(met=None, detail=f"not measured: {failure(exc)}")
        progress(f"failed: {failure(exc)}")
    return {
        "name": "send",
        "title": "8. Client-side time per send_message, loopback server",
        "unit": "ms",
        "rows": rows,
        "goals": [goal],
        "notes": [
            f"{rounds} rounds x {turns} sends per client (a fresh chat each round, so histories "
            f"of 0 to {turns - 1} turns); replies of {corpus.MODEL_CHARS} chars; the server runs in "
            "its own process with TCP_NODELAY",
        ],
    }


def _store_durability(client: Any) -> dict[str, str]:
    from .measure import sqlite_durability

    return sqlite_durability(client.store._conn)


def _raw_first_chunk(http: Any, url: str, body: bytes) -> float:
    """Seconds to the first decoded SSE event of a raw httpx stream read; the rest of the
    stream is read untimed so the connection goes back to the pool."""
    headers = {"Content-Type": "application/json", "x-goog-api-key": API_KEY}
    started = time.perf_counter()
    first = None
    with http.stream("POST", url, content=body, headers=headers) as response:
        for line in response.iter_lines():
            if first is None and line.startswith("data:"):
                msgspec.json.decode(line[5:])
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the raw stream had no data line")
    return first


def run_stream(sizes: dict[str, Any], workdir: Path, progress: Progress) -> dict[str, Any]:
    import httpx

    rounds, turns = sizes["send_rounds"], sizes["send_turns"]
    ledger_row: dict[str, Any] = {
        "library": "chatledger",
        "variant": "send_message_stream: first chunk",
        "counted": True,
    }
    raw_row: dict[str, Any] = {
        "library": "httpx (raw)",
        "variant": "stream read: first data line, decoded",
        "counted": True,
    }
    genai_row: dict[str, Any] = {
        "library": "google-genai",
        "variant": "send_message_stream: first chunk (reference)",
        "counted": False,
    }
    rows = [ledger_row, raw_row, genai_row]
    goal: dict[str, Any] = {
        "goal": "earlier",
        "text": "< 1 ms added to a raw httpx SSE read (median)",
    }
    try:
        ledger_row["version"] = metadata.version("chatledger")
        raw_row["version"] = metadata.version("httpx")
        genai_row["version"] = metadata.version("google-genai")
        with LoopbackServer() as server:
            ledger = _ledger_client(server.base_url, workdir / "stream-chatledger.db")
            genai_client = _genai_client(server.base_url)
            http = httpx.Client(timeout=httpx.Timeout(None, connect=30.0))
            url = f"{server.base_url}/v1beta/models/{corpus.MODEL}:streamGenerateContent?alt=sse"
            streamed_reply = {
                "role": "model",
                "parts": [
                    {
                        "text": "".join(
                            chunk["candidates"][0]["content"]["parts"][0]["text"]
                            for chunk in corpus.stream_chunks(3)
                        )
                    }
                ],
            }
            samples: dict[str, list[float]] = {"chatledger": [], "raw": [], "google-genai": []}
            paired: list[float] = []
            for round_number in range(rounds + 1):
                if round_number % max(1, rounds // 4) == 0:
                    progress(f"round {round_number}/{rounds} ({turns} streams each)")
                chat = ledger.chats.create(model=corpus.MODEL)
                genai_chat = genai_client.chats.create(model=corpus.MODEL)
                contents: list[dict[str, Any]] = []
                for turn in range(turns):
                    message = corpus.user_text(turn)
                    body = msgspec.json.encode({"contents": [*contents, corpus.user_content(turn)]})
                    timings = {}
                    for name in (
                        ("chatledger", "raw")
                        if (round_number + turn) % 2
                        else ("raw", "chatledger")
                    ):
                        if name == "raw":
                            timings["raw"] = _raw_first_chunk(http, url, body)
                        else:
                            started = time.perf_counter()
                            stream = chat.send_message_stream(message)
                            next(stream)
                            timings["chatledger"] = time.perf_counter() - started
                            for _ in stream:
                                pass
                    started = time.perf_counter()
                    genai_stream = genai_chat.send_message_stream(message)
                    next(genai_stream)
                    timings["google-genai"] = time.perf_counter() - started
                    for _ in genai_stream:
                        pass
                    contents += [corpus.user_content(turn), streamed_reply]
                    if round_number:
                        for name, value in timings.items():
                            samples[name].append(value)
                        paired.append(timings["chatledger"] - timings["raw"])
            http.close()
            ledger.close()
            genai_client.close()
        ledger_row.update(summary(samples["chatledger"]))
        raw_row.update(summary(samples["raw"]))
        genai_row.update(summary(samples["google-genai"]))
        added = ledger_row["median_s"] - raw_row["median_s"]
        ledger_row["added_s"] = added
        ledger_row["paired_added"] = summary(paired)
        genai_row["added_s"] = genai_row["median_s"] - raw_row["median_s"]
        goal.update(
            ratio=added * 1e3,
            met=added < 0.001,
            detail=(
                f"chatledger {ledger_row['median_s'] * 1e3:.3f} ms - raw httpx "
                f"{raw_row['median_s'] * 1e3:.3f} ms = {added * 1e3:.3f} ms added "
                f"(median of paired differences {ledger_row['paired_added']['median_s'] * 1e3:.3f} ms)"
            ),
        )
        goal["ratio_unit"] = "ms"
    except Exception as exc:
        ledger_row.setdefault("error", failure(exc))
        goal.update(met=None, detail=f"not measured: {failure(exc)}")
        progress(f"failed: {failure(exc)}")
    return {
        "name": "stream",
        "title": "9. Time to first streamed chunk vs a raw httpx SSE read",
        "unit": "ms",
        "rows": rows,
        "goals": [goal],
        "notes": [
            f"{rounds} rounds x {turns} streams; {corpus.STREAM_CHUNKS} SSE chunks per reply; the "
            "raw read posts the same contents chatledger sends (encoded before timing)",
        ],
    }
