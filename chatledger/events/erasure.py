"""Erasable content: salted commitments in the hash chain, the content kept beside it.

See ``docs/erasure.md``. For an event written with a content salt (every event with
content written by this version), the hash chain covers the event's data with each
*content value* (:data:`CONTENT_PATHS`) replaced by a commitment::

    {"$commit": sha256(salt || canonical_json([path, value])).hexdigest()}

The salt (32 random bytes, hex, one per event) is stored beside the event, in the
``content_salt`` column, never in the hashed object. Erasing the event replaces each
content value by ``{"$erased": <its commitment>}`` and empties the salt: the hashed
object, and so the event hash, is unchanged. An event whose ``content_salt`` is NULL was
written before this (or has no content): its hash covers its data as stored.

``content_salt`` values: ``None`` (hashed as stored), 64 hex digits (live, committed),
``""`` (erased: every content value is a placeholder).

Pure functions of stored JSON: the stores, ``verify``, exports and the standalone
``examples/verify_export.py`` all apply the same rules.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from typing import Any

from ..errors import InvalidInputError
from .envelope import canonical_json

__all__ = [
    "COMMIT",
    "CONTENT_PATHS",
    "ERASED",
    "ERASED_TEXT",
    "commitment",
    "content_locations",
    "display_data",
    "erase_data",
    "has_content",
    "hashed_data",
    "is_placeholder",
    "new_salt",
    "valid_salt",
]

#: The key of a placeholder left where content was erased.
ERASED = "$erased"
#: The key of a commitment in the hashed object (never stored).
COMMIT = "$commit"
#: What histories show in place of erased text.
ERASED_TEXT = "[erased]"

#: The erasable content of each event kind: paths into its data, ``*`` for every item of
#: an array. Whatever a person said or a model produced: message parts, histories, model
#: replies and partial replies, function call arguments and results, items of another
#: framework's session. Listed on docs/erasure.md (keep the two in step).
CONTENT_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "conversation_started": (("history", "*", "parts"),),
    "user_message_added": (("content", "parts"),),
    "model_call_started": (("contents_sha256",),),
    "model_responded": (("response", "candidates", "*", "content", "parts"),),
    "model_call_failed": (("partial", "candidates", "*", "content", "parts"),),
    "function_called": (("args",),),
    "function_responded": (("response",), ("error",)),
    "history_replaced": (("history", "*", "parts"),),
    "session_items_added": (("items", "*"),),
}

_SALT = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{64}")


def new_salt() -> str:
    """32 random bytes, as 64 lowercase hex digits."""
    return secrets.token_hex(32)


def valid_salt(salt: object) -> bool:
    """Whether ``salt`` is a value the ``content_salt`` column may hold."""
    return salt is None or salt == "" or (isinstance(salt, str) and bool(_SALT.fullmatch(salt)))


def is_placeholder(value: object) -> bool:
    """Whether ``value`` is ``{"$erased": <64 hex digits>}``."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    commit = value.get(ERASED)
    return isinstance(commit, str) and bool(_HEX.fullmatch(commit))


def commitment(salt: str, path: str, value: Any) -> str:
    """``sha256(salt || canonical_json([path, value]))`` as hex (salt: its 32 bytes)."""
    return hashlib.sha256(bytes.fromhex(salt) + canonical_json([path, value])).hexdigest()


def content_locations(type_name: str, data: Any) -> Iterator[tuple[str, Any, Any]]:
    """``(path, container, key)`` of each content value present in ``data`` (not None),
    in a fixed order. ``path`` is the dotted path with array indexes (``history.0.parts``).
    Shapes that do not fit a path (a response without candidates...) are skipped."""
    found: list[tuple[str, Any, Any]] = []
    for path in CONTENT_PATHS.get(type_name, ()):
        _walk(data, path, 0, "", found)
    return iter(found)


def _walk(
    node: Any, path: tuple[str, ...], depth: int, done: str, found: list[tuple[str, Any, Any]]
) -> None:
    step = path[depth]
    last = depth == len(path) - 1
    if step == "*":
        if not isinstance(node, list):
            return
        for index, item in enumerate(node):
            where = f"{done}.{index}" if done else str(index)
            if last:
                found.append((where, node, index))
            else:
                _walk(item, path, depth + 1, where, found)
    elif isinstance(node, dict):
        value = node.get(step)
        if value is None:
            return
        where = f"{done}.{step}" if done else step
        if last:
            found.append((where, node, step))
        else:
            _walk(value, path, depth + 1, where, found)


def has_content(type_name: str, data: Any) -> bool:
    """Whether ``data`` holds any content value (so the event needs a salt)."""
    return next(content_locations(type_name, data), None) is not None


def _copy_along(data: Any, type_name: str) -> Any:
    """A copy of ``data`` in which every container on a content path is new (so values
    can be replaced without touching ``data``)."""

    def copy(node: Any, path: tuple[str, ...]) -> Any:
        if not path:
            return node
        step, rest = path[0], path[1:]
        if step == "*":
            if not isinstance(node, list):
                return node
            return [copy(item, rest) for item in node]
        if not isinstance(node, dict) or node.get(step) is None:
            return node
        new = dict(node)
        new[step] = copy(node[step], rest)
        return new

    for path in CONTENT_PATHS.get(type_name, ()):
        data = copy(data, path)
    return data


def hashed_data(type_name: str, data: Any, salt: str | None) -> Any:
    """What the hash chain covers for an event's stored ``data`` and ``content_salt``.

    Raises ValueError when they disagree: an erased event (salt ``""``) holding content
    that is not a placeholder, or a salt that is not one the log writes.
    """
    if salt is None:
        return data
    if not valid_salt(salt):
        raise ValueError("its content_salt is not 64 hex digits")
    if type_name not in CONTENT_PATHS:
        raise ValueError(f"it has a content_salt, but {type_name} events hold no content")
    out = _copy_along(data, type_name)
    found = False
    for path, container, key in list(content_locations(type_name, out)):
        found = True
        value = container[key]
        if salt == "":
            if not is_placeholder(value):
                raise ValueError(
                    f"it is erased (no content_salt), but {path} holds content, not a placeholder"
                )
            container[key] = {COMMIT: value[ERASED]}
        else:
            container[key] = {COMMIT: commitment(salt, path, value)}
    if not found:
        raise ValueError("it has a content_salt but holds no content")
    return out


def erase_data(type_name: str, data: Any, salt: str) -> Any:
    """``data`` with each content value replaced by its placeholder (``salt``: the live
    event's)."""
    if not salt or not valid_salt(salt):
        raise InvalidInputError("only an event with a content salt can be erased in place")
    out = _copy_along(data, type_name)
    for path, container, key in list(content_locations(type_name, out)):
        container[key] = {ERASED: commitment(salt, path, container[key])}
    return out


def display_data(type_name: str, data: Any, *, in_place: bool = False) -> Any:
    """An erased event's stored ``data`` as readers see it: parts become one text part
    ``[erased]``, text becomes ``[erased]``, an object becomes its placeholder, and a
    session item the placeholder itself (docs/erasure.md lists them). ``in_place``:
    change ``data`` itself (the caller just decoded it) rather than a copy."""
    out = data if in_place else _copy_along(data, type_name)
    for path, container, key in content_locations(type_name, out):
        value = container[key]
        if not is_placeholder(value):
            continue
        if path.endswith("parts"):
            container[key] = [{"text": ERASED_TEXT}]
        elif path in ("contents_sha256", "error"):
            container[key] = ERASED_TEXT
    return out
