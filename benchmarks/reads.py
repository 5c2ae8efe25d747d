"""Figure 1: read a 1,000-message conversation (500 turns).

"Fresh" opens the file with a new handle and gets the messages, as a new process or request
resuming the conversation does: for chatledger a new ``Client(store=path)``,
``chats.get(id)`` and ``get_history()``; for each peer its own constructor and its natural
"get the messages" call. "Open handle" repeats only the get on an already-open handle, as a
server that keeps its store open does for each request: for chatledger
``client.chats.get(id).get_history()`` on an open client (the same google-genai-shaped
``Content`` objects as the fresh read); for each peer the same call on its open handle.
Every library's conversation holds the same 500 turns; chatledger's was written by real
sends (a ScriptedTransport answering), so its log has 1,501 events; the peers' were written
with their bulk calls. Rows not counted for the goal, for reference: chatledger's raw
``store.read(id)`` of every event on the open store (typed, validated events, no
projection), chatledger's open chat and google-genai's chat (in memory).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import corpus
from .measure import Progress, failure, summary
from .peers import PEERS, ChatledgerStore, Library

NAME = "reads"
TITLE = "1. Read a 1,000-message conversation"
GOAL = "<= 0.5x the best peer's time"


def _genai_chat(turns: int) -> Any:
    from google import genai
    from google.genai import types

    history = []
    for turn in range(turns):
        history.append(types.Content(role="user", parts=[types.Part(text=corpus.user_text(turn))]))
        history.append(
            types.Content(role="model", parts=[types.Part(text=corpus.model_text(turn))])
        )
    client = genai.Client(api_key="bench-key", http_options={"base_url": "http://127.0.0.1:9"})
    return client.chats.create(model=corpus.MODEL, history=history)


class _Closing(Library):
    """Closes a chatledger client with the libraries."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def close(self) -> None:
        self.client.close()


def run(sizes: dict[str, Any], workdir: Path, progress: Progress) -> dict[str, Any]:
    turns, rounds = sizes["read_turns"], sizes["read_rounds"]
    rows: list[dict[str, Any]] = []
    # (row, timed call) pairs, interleaved across rounds.
    timed: list[tuple[dict[str, Any], Callable[[], int]]] = []
    libraries: list[Library] = []

    def add(row: dict[str, Any], call: Callable[[], int]) -> None:
        rows.append(row)
        timed.append((row, call))

    # chatledger: built through real sends.
    progress(f"chatledger: {turns} sends (ScriptedTransport) to build the conversation")
    try:
        ledger = ChatledgerStore(workdir / "reads-chatledger.db")
        libraries.append(ledger)
        for turn in range(turns):
            ledger.write_turn(turn)
        chat = ledger.chat()
        import chatledger

        open_client = chatledger.Client(store=str(ledger.path))
        libraries.append(_Closing(open_client))
        conversation_id = ledger.conversation_id
        base = {
            "library": "chatledger",
            "version": ledger.version(),
            "durability": ledger.durability(),
        }
        add(
            {
                **base,
                "variant": "fresh: Client(store=path).chats.get(id).get_history()",
                "mode": "fresh",
                "counted": True,
            },
            ledger.read_fresh,
        )
        add(
            {
                **base,
                "variant": "open handle: client.chats.get(id).get_history()",
                "mode": "warm",
                "counted": True,
            },
            lambda: len(open_client.chats.get(conversation_id).get_history()),
        )
        add(
            {
                **base,
                "variant": "open handle: store.read(id), every event (events, not Contents)",
                "mode": "store",
                "counted": False,
            },
            ledger.read_warm,
        )
        add(
            {
                **base,
                "variant": "in memory: open chat.get_history()",
                "mode": "memory",
                "counted": False,
            },
            lambda: len(chat.get_history()),
        )
    except Exception as exc:
        rows.append(
            {
                "library": "chatledger",
                "variant": "fresh",
                "mode": "fresh",
                "counted": True,
                "error": failure(exc),
            }
        )
        progress(f"chatledger failed: {rows[-1]['error']}")

    for peer in PEERS:
        progress(f"{peer.key}: building {turns} turns")
        try:
            library = peer(workdir / f"reads-{peer.key}.db")
            libraries.append(library)
            library.new_conversation()
            library.add_turns(0, turns)
            base = {
                "library": peer.key,
                "version": peer.version(),
                "durability": library.durability(),
            }
            add(
                {
                    **base,
                    "variant": f"fresh: {peer.api.split(' / ')[-1]}",
                    "mode": "fresh",
                    "counted": True,
                },
                library.read_fresh,
            )
            add(
                {**base, "variant": "open handle", "mode": "warm", "counted": True},
                library.read_warm,
            )
        except Exception as exc:
            rows.append(
                {
                    "library": peer.key,
                    "variant": "fresh",
                    "mode": "fresh",
                    "counted": True,
                    "error": failure(exc),
                }
            )
            progress(f"{peer.key} failed: {rows[-1]['error']}")

    try:
        from importlib import metadata

        genai_chat = _genai_chat(turns)
        add(
            {
                "library": "google-genai",
                "version": metadata.version("google-genai"),
                "variant": "in memory: chat.get_history()",
                "mode": "memory",
                "counted": False,
            },
            lambda: len(genai_chat.get_history()),
        )
    except Exception as exc:
        rows.append(
            {
                "library": "google-genai",
                "variant": "in memory",
                "mode": "memory",
                "counted": False,
                "error": failure(exc),
            }
        )

    samples: dict[int, list[float]] = {id(row): [] for row, _ in timed}
    for row, call in timed:  # warm-up, and check every call reads the whole conversation
        try:
            row["messages_read"] = call()
        except Exception as exc:
            row["error"] = failure(exc)
    for round_number in range(rounds):
        if round_number % max(1, rounds // 5) == 0:
            progress(f"round {round_number + 1}/{rounds}")
        shift = round_number % max(1, len(timed))
        for row, call in timed[shift:] + timed[:shift]:
            if "error" in row:
                continue
            started = time.perf_counter()
            call()
            samples[id(row)].append(time.perf_counter() - started)
    for library in libraries:
        with contextlib.suppress(Exception):
            library.close()
    for row, _ in timed:
        if samples[id(row)]:
            row.update(summary(samples[id(row)]))

    goals = []
    for mode, label in (("fresh", "fresh open + read"), ("warm", "read on an open handle")):
        subject = next(
            (r for r in rows if r["library"] == "chatledger" and r.get("mode") == mode), None
        )
        peers = [
            r
            for r in rows
            if r["library"] != "chatledger" and r.get("mode") == mode and r.get("median_s")
        ]
        goal: dict[str, Any] = {"goal": "1", "text": f"{label}: {GOAL}", "target": 0.5}
        if subject and subject.get("median_s") and peers:
            best = min(peers, key=lambda r: r["median_s"])
            ratio = subject["median_s"] / best["median_s"]
            goal.update(
                ratio=ratio,
                met=ratio <= 0.5,
                best_peer=best["library"],
                detail=(
                    f"chatledger {subject['median_s'] * 1e3:.2f} ms vs {best['library']} "
                    f"{best['median_s'] * 1e3:.2f} ms = {ratio:.2f}x"
                ),
            )
            for row in rows:
                if row.get("mode") == mode and row.get("median_s"):
                    row["vs_best_peer"] = row["median_s"] / best["median_s"]
        else:
            goal.update(met=None, detail="not measured")
        goals.append(goal)
    return {
        "name": NAME,
        "title": TITLE,
        "unit": "ms",
        "rows": rows,
        "goals": goals,
        "notes": [
            f"{turns} turns = {2 * turns} messages (user {corpus.USER_CHARS} chars, model "
            f"{corpus.MODEL_CHARS} chars); {rounds} interleaved rounds",
            "What each call returns differs: chatledger pydantic Content objects, LangChain/"
            "LangGraph message objects, llm Message objects, openai-agents and eventsourcing "
            "JSON-decoded dicts (eventsourcing: its recorder's StoredEvents, state decoded)",
        ],
    }
