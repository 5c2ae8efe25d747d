#!/usr/bin/env python3
"""Verify a chatledger export with the Python standard library only.

    python verify_export.py conversation.jsonl
    python verify_export.py conversation.jsonl --checkpoint HEAD --verifier-key KEY [--accept-unproven]

Checks, for every conversation in the file: versions run 1, 2, 3 ... without gaps; each
event's hash is the SHA-256 of its canonical envelope chained to the previous event's
hash; a forked conversation's parent event is in the file with the hash it names.

With ``--checkpoint`` (a file `chatledger checkpoint` wrote; its last checkpoint is
used) and ``--verifier-key`` (the log's ``<name>+<id>+<key>``), an export made with
``chatledger export ID --proofs --checkpoint HEAD`` is also checked against the signed
checkpoint: its Ed25519 signature (this needs the ``cryptography`` package), and each
event's RFC 9162 inclusion proof from the event's hash to the checkpoint's root. That
proves the events are the very ones the log held when the checkpoint was signed, which
the hash chains alone cannot (whoever holds the database can rewrite a chain). Every
event must then carry a valid proof: an event without one is a problem ("not proven by
the checkpoint"), since nothing in an export shows that it came after the checkpoint
(whoever edits the file can drop proofs). Export again after a newer checkpoint, or pass
``--accept-unproven`` to accept events without a proof that follow every proven event of
their conversation: they are counted and reported as NOT proven.

An event with a ``content_salt`` (docs/erasure.md) is hashed with each content value
replaced by its commitment ``{"$commit": sha256(salt || canonical([path, value]))}``; an
erased one (``content_salt`` is ``""``) holds placeholders ``{"$erased": commitment}``
instead, and must be covered by a later ``content_erased`` event of its conversation.

Prints each problem and exits 1 if there is any, else prints a summary and exits 0.
See docs/proofs.md.
"""

import base64
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Iterator
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

#: The erasable content of each event kind: paths into its data, "*" for every item of
#: an array (the same table as chatledger/events/erasure.py and docs/erasure.md).
CONTENT_PATHS: dict[str, list[tuple[str, ...]]] = {
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


def canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"an object repeats a key ({sorted(keys)[:5]}): JSON readers differ")
    return dict(pairs)


def load_line(line: str) -> Any:
    """One export line; a repeated key is refused (readers would disagree on its value)."""
    return json.loads(line, object_pairs_hook=_no_repeated_keys)


def locations(
    node: Any, path: tuple[str, ...], done: tuple[str, ...] = ()
) -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, container, key) of each value present (not None) at ``path``."""
    step, rest = path[0], path[1:]
    if step == "*":
        keys: list[Any] = list(range(len(node))) if isinstance(node, list) else []
    else:
        keys = [step] if isinstance(node, dict) and node.get(step) is not None else []
    for key in keys:
        where = (*done, str(key))
        if rest:
            yield from locations(node[key], rest, where)
        else:
            yield ".".join(where), node, key


def hashed_data(event_type: str, data: Any, salt: Any) -> Any:
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


def event_hash(event: dict[str, Any], prev_hash: str) -> str:
    envelope = {key: event[key] for key in ENVELOPE}
    envelope["data"] = hashed_data(event["type"], event["data"], event.get("content_salt"))
    envelope["prev_hash"] = prev_hash
    return hashlib.sha256(canonical(envelope)).hexdigest()


def verify(lines: Iterable[str]) -> tuple[int, int, list[str]]:
    """(conversations, events, problems) of the export's ``lines``."""
    streams: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line.strip():
            event = load_line(line)
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
    event_count = sum(len(events) for events in streams.values())
    return len(streams), event_count, problems


def streams_of(lines: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The export's events by conversation."""
    streams: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line.strip():
            event = load_line(line)
            streams.setdefault(event["conversation_id"], []).append(event)
    return streams


def open_checkpoint(note: str, verifier_key: str) -> tuple[str, int, bytes]:
    """Check the note's signature by the trusted key; return (origin, size, root)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name, key_id, key = verifier_key.split("+", 2)
    raw = base64.b64decode(key, validate=True)
    if len(raw) != 33 or raw[0] != 1:
        raise ValueError("not an Ed25519 verifier key")
    if hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() != key_id:
        raise ValueError("the verifier key's id does not match its name and key")
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    for line in signatures.splitlines():
        signer, _, signature = line.removeprefix("\u2014 ").partition(" ")
        blob = base64.b64decode(signature, validate=True)
        if signer == name and blob[:4].hex() == key_id:
            Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[4:], text.encode())
            origin, size, root = text.splitlines()[:3]
            return origin, int(size), base64.b64decode(root, validate=True)
    raise ValueError("the checkpoint is not signed by the trusted key")


def last_note(text: str) -> str:
    """The last signed note of a checkpoint file (notes separated by blank lines)."""
    notes: list[str] = []
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if current and current[-1].startswith("\u2014 ") and not line.startswith("\u2014 "):
            notes.append("".join(current))
            current = []
        if current or line.strip():
            current.append(line)
    if current:
        notes.append("".join(current))
    if not notes:
        raise ValueError("the checkpoint file holds no checkpoint")
    return notes[-1]


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(
    leaf_input: bytes, index: int, size: int, path: list[bytes], root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, hashlib.sha256(b"\x00" + leaf_input).digest()
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def check_proofs(
    streams: dict[str, list[dict[str, Any]]],
    checkpoint: tuple[str, int, bytes],
    accept_unproven: bool = False,
) -> tuple[int, int, list[str]]:
    """(proven, unproven, problems): each event's inclusion proof must lead from its hash
    to the checkpoint's root. An event without a proof is a problem, unless
    ``accept_unproven`` and it follows every proven event of its conversation (then it
    is only counted as unproven)."""
    _, size, root = checkpoint
    problems: list[str] = []
    proven = unproven = 0
    for conversation_id, events in streams.items():
        events = sorted(events, key=lambda event: event["version"])
        last_proof = max(
            (at for at, event in enumerate(events) if event.get("proof") is not None),
            default=-1,
        )
        for at, event in enumerate(events):
            where = f"{conversation_id} v{event['version']}"
            proof = event.get("proof")
            if proof is None:
                if not accept_unproven:
                    problems.append(
                        f"{where}: not proven by the checkpoint: export again after a "
                        "newer checkpoint (or pass --accept-unproven to accept events "
                        "after it without proof)"
                    )
                elif at < last_proof:
                    problems.append(
                        f"{where}: has no proof, but a later event of its conversation "
                        "has one, so it is not after the checkpoint"
                    )
                else:
                    unproven += 1
                continue
            if not isinstance(proof, dict) or not isinstance(proof.get("path"), list):
                problems.append(f"{where}: its proof is malformed")
                continue
            if proof.get("tree_size") != size:
                problems.append(f"{where}: its proof is for another checkpoint")
                continue
            try:
                path = [base64.b64decode(h, validate=True) for h in proof["path"]]
                leaf = bytes.fromhex(event["hash"])
                index = proof["leaf_index"]
                included = isinstance(index, int) and verify_inclusion(
                    leaf, index, size, path, root
                )
            except (TypeError, ValueError):
                included = False
            if included:
                proven += 1
            else:
                problems.append(f"{where}: not in the log the checkpoint signed")
    return proven, unproven, problems


def main(argv: list[str]) -> int:
    args = list(argv)
    accept_unproven = "--accept-unproven" in args
    if accept_unproven:
        args.remove("--accept-unproven")
    options: dict[str, str] = {}
    for flag in ("--checkpoint", "--verifier-key"):
        if flag in args:
            at = args.index(flag)
            options[flag] = args[at + 1] if at + 1 < len(args) else ""
            del args[at : at + 2]
    if len(args) != 1 or len(options) == 1 or (accept_unproven and not options):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    checkpoint = None
    if options:
        with open(options["--checkpoint"], encoding="utf-8") as handle:
            note = last_note(handle.read())
        try:
            checkpoint = open_checkpoint(note, options["--verifier-key"])
        except Exception as exc:  # a bad signature, key or checkpoint: say so, exit 1
            print("PROBLEM the checkpoint:", type(exc).__name__, exc)
            return 1
    with open(args[0], encoding="utf-8") as handle:
        lines = handle.readlines()
    try:
        conversations, events, problems = verify(lines)
    except ValueError as exc:  # a line that is not JSON, or repeats a key
        print("PROBLEM the export:", exc)
        return 1
    summary = ""
    unproven = 0
    if checkpoint is not None:
        proven, unproven, found = check_proofs(streams_of(lines), checkpoint, accept_unproven)
        problems.extend(found)
        summary = f", {proven} proven in the checkpoint of {checkpoint[1]} events"
        if accept_unproven:
            summary += f", {unproven} after it NOT proven (accepted by --accept-unproven)"
    for problem in problems:
        print("PROBLEM", problem)
    if checkpoint is not None and accept_unproven and unproven:
        print(
            f"WARNING {unproven} events are NOT proven by the checkpoint: whoever can edit "
            "the export could have changed them; export again after a newer checkpoint"
        )
    print(f"{conversations} conversations, {events} events{summary}, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
