"""Counting what the fault suite did, for the table ``make faults`` prints.

Tests call :func:`record` with what they exercised and what they found, or keep a
:class:`Tally` while they work and record it at the end; when the environment names a
report file (``CHATLEDGER_FAULTS_REPORT``), each record appends one JSON line to it, and
``python -m tests.faults.report FILE`` sums the lines into the table. Outside ``make
faults`` recording is a no-op, so the same tests run in the normal suite.

:func:`scale` is how many cases a test should try: the small figure in the normal suite
(and CI), the large one under ``make faults`` (``CHATLEDGER_FAULTS_SCALE=full``).
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Tally", "full_scale", "record", "scale"]

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


@dataclass
class Tally:
    """What one test tried and what it found, counted as it goes, for the ledger.

    The one tally of the fault suite: :meth:`check` counts a broken invariant and goes on
    (so a test can report every problem it finds), :meth:`expect` counts it and fails at
    once; :meth:`answered` notes how an input was answered (printed with ``pytest -s``,
    to see what a run exercised). :meth:`record` writes the row, then fails the test if
    anything was lost or broken.
    """

    area: str
    faults: int = 0
    inputs: int = 0
    kill_points: int = 0
    events_lost: int = 0
    invariants_broken: int = 0
    notes: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)

    def check(self, ok: bool, note: str) -> bool:
        """Count a broken invariant (with ``note``) unless ``ok``; return ``ok``."""
        if not ok:
            self.invariants_broken += 1
            self.notes.append(note)
        return ok

    def expect(self, ok: bool, note: str) -> None:
        """As :meth:`check`, but fail the test at once."""
        if not self.check(ok, note):
            raise AssertionError(note)

    def answered(self, error: BaseException | None) -> str:
        """Note how one input was answered: accepted, or refused with which error."""
        answer = "accepted" if error is None else f"refused: {type(error).__name__}"
        self.answers[answer] += 1
        return answer

    def add(self, other: Tally) -> None:
        """Add the counts of another tally (of the same area) to this one."""
        self.faults += other.faults
        self.inputs += other.inputs
        self.kill_points += other.kill_points
        self.events_lost += other.events_lost
        self.invariants_broken += other.invariants_broken
        self.notes.extend(other.notes)
        self.answers.update(other.answers)

    def record(self, operation: str) -> None:
        """Write this tally as one row of ``operation``, then fail the test if an event
        was lost or an invariant broken (the row is written either way)."""
        if self.answers:
            print(f"\n{operation}: {self.inputs} inputs, {dict(self.answers.most_common())}")
        record(
            self.area,
            operation,
            kill_points=self.kill_points,
            faults=self.faults,
            inputs=self.inputs,
            events_lost=self.events_lost,
            invariants_broken=self.invariants_broken,
        )
        assert self.events_lost == 0, self.notes[:20]
        assert self.invariants_broken == 0, "\n".join(self.notes[:20])
