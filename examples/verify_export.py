#!/usr/bin/env python3
"""Verify a chatledger export with the Python standard library only.

    python verify_export.py conversation.jsonl

Checks, for every conversation in the file: versions run 1, 2, 3 ... without gaps; each
event's hash is the SHA-256 of its canonical envelope chained to the previous event's
hash; a forked conversation's parent event is in the file with the hash it names.

An event with a ``content_salt`` (docs/erasure.md) is hashed with each content value
replaced by its commitment ``{"$commit": sha256(salt || canonical([path, value]))}``; an
erased one (``content_salt`` is ``""``) holds placeholders ``{"$erased": commitment}``
instead, and must be covered by a later ``content_erased`` event of its conversation.
Prints each problem and exits 1 if there is any, else prints a summary and exits 0.
"""

import hashlib
import json
import re
import sys

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

#: The erasable content of each event kind: paths into its data, "*" for every item of
#: an array (the same table as chatledger/events/erasure.py and docs/erasure.md).
CONTENT_PATHS = {
    "conversation_started": [("history", "*", "parts")],
    "user_message_added": [("content", "parts")],
    "model_call_started": [("contents_sha256",)],
    "model_responded": [("response", "candidates", "*", "content", "parts")],
    "model_call_failed": [("partial", "candidates", "*", "content", "parts")],
    "function_called": [("args",)],
    "function_responded": [("response",), ("error",)],
    "history_replaced": [("history", "*", "parts")],
    "session_items_added": [("items", "*")],
}
HEX64 = re.compile(r"[0-9a-f]{64}")


def canonical(value):
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def locations(node, path, done=()):
    """(dotted path, container, key) of each value present (not None) at ``path``."""
    step, rest = path[0], path[1:]
    if step == "*":
        keys = list(range(len(node))) if isinstance(node, list) else []
    else:
        keys = [step] if isinstance(node, dict) and node.get(step) is not None else []
    for key in keys:
        where = (*done, str(key))
        if rest:
            yield from locations(node[key], rest, where)
        else:
            yield ".".join(where), node, key


def hashed_data(event_type, data, salt):
    """The data the hash covers; raises ValueError when data and salt disagree."""
    if salt is None:
        return data
    if salt != "" and not (isinstance(salt, str) and HEX64.fullmatch(salt)):
        raise ValueError("its content_salt is not 64 hex digits")
    data = json.loads(json.dumps(data))  # a copy to replace values in
    found = False
    for path in CONTENT_PATHS.get(event_type, []):
        for where, container, key in list(locations(data, path)):
            found = True
            value = container[key]
            if salt == "":
                if not (
                    isinstance(value, dict)
                    and list(value) == ["$erased"]
                    and isinstance(value["$erased"], str)
                    and HEX64.fullmatch(value["$erased"])
                ):
                    raise ValueError(f"it is erased, but {where} holds content")
                container[key] = {"$commit": value["$erased"]}
            else:
                digest = hashlib.sha256(bytes.fromhex(salt) + canonical([where, value]))
                container[key] = {"$commit": digest.hexdigest()}
    if not found:
        raise ValueError("it has a content_salt but holds no content")
    return data


def event_hash(event, prev_hash):
    envelope = {key: event[key] for key in ENVELOPE}
    envelope["data"] = hashed_data(event["type"], event["data"], event.get("content_salt"))
    envelope["prev_hash"] = prev_hash
    return hashlib.sha256(canonical(envelope)).hexdigest()


def verify(lines):
    streams = {}
    for line in lines:
        if line.strip():
            event = json.loads(line)
            streams.setdefault(event["conversation_id"], []).append(event)
    problems = []
    for conversation_id, events in streams.items():
        events.sort(key=lambda event: event["version"])
        prev_hash = ""
        for expected, event in enumerate(events, start=1):
            where = f"{conversation_id} v{event['version']}"
            if event["version"] != expected:
                problems.append(f"{where}: expected version {expected}")
                break
            try:
                digest = event_hash(event, prev_hash)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                break
            if digest != event["hash"]:
                problems.append(f"{where}: hash mismatch (modified, reordered or forged)")
                break
            if event.get("content_salt") == "" and not any(
                later["type"] == "content_erased"
                and later["version"] > event["version"]
                and later["data"].get("up_to_version", 0) >= event["version"]
                for later in events
            ):
                problems.append(f"{where}: erased, but no content_erased event records it")
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
    return len(streams), sum(len(events) for events in streams.values()), problems


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        conversations, events, problems = verify(handle)
    for problem in problems:
        print("PROBLEM", problem)
    print(f"{conversations} conversations, {events} events, {len(problems)} problems")
    sys.exit(1 if problems else 0)
