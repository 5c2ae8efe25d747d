"""Verification for the audit pages and the API.

:func:`verify_store` is what ``chatledger verify`` runs (every hash chain, gapless
versions and positions, fork parents, and every snapshot against the log). The public
check is the public :func:`chatledger.client.verify_log`, which the CLI runs too.

With ``chatledger serve --checkpoint FILE --verifier-key KEY`` the whole-store audit also
proves, as ``chatledger verify --checkpoint`` does, that the log extends every signed
checkpoint in FILE (re-read on every run: ``chatledger checkpoint -o FILE`` appends to
it): the Merkle tree is recomputed from the events, never read from the store. Each
result carries ``checkpoint``: the newest checkpoint checked, and whether the log
extends it (docs/proofs.md).
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..client import verify_log
from ..errors import ChatledgerError, InvalidInputError
from ..events.store import EventStore, VerificationReport
from ..events.verification import Problem
from ..proofs.checkpoint import (
    MAX_CHECKPOINT_FILE_BYTES,
    SignedCheckpoint,
    read_checkpoint_file,
)
from ..proofs.note import Verifier, load_verifiers
from ..proofs.tree import verify_checkpoints

__all__ = ["CheckpointFile", "StoreAudit", "report_body", "verify_store"]


class CheckpointFile:
    """Signed checkpoints the whole-store audit checks the log against: a file that
    ``chatledger checkpoint -o FILE`` appends to, and the verifier keys to trust.

    Made when the server starts, so that a missing file or a bad key is an error then,
    not at the first audit. The file is read again on every audit.
    """

    def __init__(self, path: str | os.PathLike[str], verifier_key: str) -> None:
        self.path = Path(path)
        self.verifiers: list[Verifier] = load_verifiers(verifier_key)
        self.load()

    def load(self) -> list[SignedCheckpoint]:
        """Every checkpoint in the file, oldest first, each signature checked."""
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read the checkpoint file {self.path}: {exc.strerror or exc}"
            ) from None
        if size > MAX_CHECKPOINT_FILE_BYTES:
            raise InvalidInputError(
                f"the checkpoint file {self.path} is larger than {MAX_CHECKPOINT_FILE_BYTES} "
                "bytes: give the server a file holding the recent checkpoints"
            )
        return read_checkpoint_file(self.path, self.verifiers)


def check_checkpoints(
    store: EventStore, source: CheckpointFile, report: VerificationReport
) -> dict[str, Any]:
    """Prove the log extends each checkpoint of ``source``; add a problem to ``report``
    for each it does not extend. Returns the ``checkpoint`` field of the result."""
    signed = source.load()
    check, verdicts = verify_checkpoints(store, signed)
    failed = 0
    for _, problem in verdicts:
        if problem is not None:
            failed += 1
            report.problems.append(
                Problem(conversation_id="(checkpoint)", version=None, reason=problem)
            )
    newest = signed[-1].checkpoint
    return {
        "file": str(source.path),
        "origin": newest.origin,
        "size": newest.size,
        "root_hash": newest.root_hash.hex(),
        "signed_at": newest.time.isoformat() if newest.time is not None else None,
        "checkpoints_checked": len(signed),
        "checkpoints_not_extended": failed,
        "extends": failed == 0,
        "log_size": check.size,
    }


def verify_store(store: EventStore, conversation_id: str | None = None) -> VerificationReport:
    """Verify one conversation (or the whole store) and the snapshots of what it checks."""
    return verify_log(store, conversation_id)


def report_body(
    report: VerificationReport,
    *,
    scope: str,
    seconds: float,
    location: str,
    checkpoint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A verification report as the API returns it."""
    return {
        "scope": scope,
        "store": location,
        "ok": report.ok,
        "conversations_checked": report.streams_checked,
        "events_checked": report.events_checked,
        "snapshots_checked": report.snapshots_checked,
        "problems": [
            {
                "conversation_id": problem.conversation_id,
                "version": problem.version,
                "position": problem.position,
                "event_id": problem.event_id,
                "reason": problem.reason,
                "text": str(problem),
            }
            for problem in report.problems
        ],
        "checked_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        # The newest signed checkpoint the log was checked against (CheckpointFile), or
        # None when the server was started without --checkpoint.
        "checkpoint": checkpoint,
    }


class StoreAudit:
    """The whole-store verification, run in the background one at a time (it reads the
    entire log), with its last result kept for the audit page."""

    def __init__(self, store: EventStore, checkpoints: CheckpointFile | None = None) -> None:
        self.store = store
        self.checkpoints = checkpoints
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last: dict[str, Any] | None = None
        self.error: str | None = None
        self.started_at: float | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start a run unless one is running; returns whether this call started it."""
        with self._lock:
            if self.running:
                return False
            self.started_at = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="chatledger-audit", daemon=True)
            self._thread.start()
            return True

    def run_now(self) -> dict[str, Any]:
        """Run in this thread and return the result (the API's synchronous check)."""
        started = time.perf_counter()
        report = verify_store(self.store)
        checkpoint = (
            check_checkpoints(self.store, self.checkpoints, report)
            if self.checkpoints is not None
            else None
        )
        body = report_body(
            report,
            scope="store",
            seconds=time.perf_counter() - started,
            location=self.store.location,
            checkpoint=checkpoint,
        )
        self.last = body
        return body

    def _run(self) -> None:
        try:
            self.run_now()
            self.error = None
        except ChatledgerError as exc:
            self.error = exc.message
        except Exception:  # reported on the page; the log has the traceback
            self.error = "the verification failed; see the server's log"
            raise

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
