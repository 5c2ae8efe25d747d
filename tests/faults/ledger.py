"""Counting what the fault suite did, for the table ``make faults`` prints.

Tests call :func:`record` with what they exercised and what they found; when the
environment names a report file (``CHATLEDGER_FAULTS_REPORT``), each call appends one JSON
line to it, and ``python -m tests.faults.report FILE`` sums the lines into the table.
Outside ``make faults`` recording is a no-op, so the same tests run in the normal suite.

:func:`scale` is how many cases a test should try: the small figure in the normal suite
(and CI), the large one under ``make faults`` (``CHATLEDGER_FAULTS_SCALE=full``).
"""

from __future__ import annotations

import json
import os
import threading

__all__ = ["full_scale", "record", "scale"]

_lock = threading.Lock()


def full_scale() -> bool:
    """True under ``make faults`` (``CHATLEDGER_FAULTS_SCALE=full``)."""
    return os.environ.get("CHATLEDGER_FAULTS_SCALE", "").lower() == "full"


def scale(fast: int, full: int) -> int:
    """``full`` under ``make faults``, else ``fast``."""
    return full if full_scale() else fast


def record(
    area: str,
    operation: str,
    *,
    kill_points: int = 0,
    faults: int = 0,
    inputs: int = 0,
    events_lost: int = 0,
    invariants_broken: int = 0,
) -> None:
    """Add one row's worth of counts: ``area`` (crashes, server, store, input, secrets),
    ``operation`` (what was exercised, e.g. ``send_message/sqlite``), and the numbers.

    Call it only after the test's assertions have passed, with what was really tried, so
    the table never counts work that did not happen. ``events_lost`` and
    ``invariants_broken`` are what the test measured before asserting they are zero;
    a test that finds a nonzero figure records it and then fails.
    """
    path = os.environ.get("CHATLEDGER_FAULTS_REPORT")
    if not path:
        return
    line = json.dumps(
        {
            "area": area,
            "operation": operation,
            "kill_points": kill_points,
            "faults": faults,
            "inputs": inputs,
            "events_lost": events_lost,
            "invariants_broken": invariants_broken,
        }
    )
    with _lock, open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
