#!/usr/bin/env python3
"""Verify a chatledger export with the Python standard library only.

    python verify_export.py conversation.jsonl

Checks, for every conversation in the file: versions run 1, 2, 3 ... without gaps; each
event's hash is the SHA-256 of its canonical envelope chained to the previous event's
hash; a forked conversation's parent event is in the file with the hash it names.
Prints each problem and exits 1 if there is any, else prints a summary and exits 0.
"""

import hashlib
import json
import sys
from collections.abc import Iterable
from typing import Any

ENVELOPE = (
    "conversation_id",
    "version",
    "event_id",
    "type",
    "schema_version",
    "data",
    "metadata",
    "recorded_at",
)


def canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def verify(lines: Iterable[str]) -> tuple[int, int, list[str]]:
    """(conversations, events, problems) of the export's ``lines``."""
    streams: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line.strip():
            event = json.loads(line)
            streams.setdefault(event["conversation_id"], []).append(event)
    problems: list[str] = []
    for conversation_id, events in streams.items():
        events.sort(key=lambda event: event["version"])
        prev_hash = ""
        for expected, event in enumerate(events, start=1):
            where = f"{conversation_id} v{event['version']}"
            if event["version"] != expected:
                problems.append(f"{where}: expected version {expected}")
                break
            envelope = {key: event[key] for key in ENVELOPE}
            envelope["prev_hash"] = prev_hash
            if hashlib.sha256(canonical(envelope)).hexdigest() != event["hash"]:
                problems.append(f"{where}: hash mismatch (modified, reordered or forged)")
                break
            prev_hash = event["hash"]
        parent = (
            events[0]["data"].get("parent") if events[0]["type"] == "conversation_started" else None
        )
        if parent:
            found = [
                e
                for e in streams.get(parent["conversation_id"], [])
                if e["version"] == parent["version"]
            ]
            if not found or found[0]["hash"] != parent["hash"]:
                problems.append(f"{conversation_id} v1: its parent event is missing or differs")
    event_count = sum(len(events) for events in streams.values())
    return len(streams), event_count, problems


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        conversations, events, problems = verify(handle)
    for problem in problems:
        print("PROBLEM", problem)
    print(f"{conversations} conversations, {events} events, {len(problems)} problems")
    sys.exit(1 if problems else 0)
