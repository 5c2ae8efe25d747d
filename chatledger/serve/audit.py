"""Verification for the audit pages and the API.

:func:`verify_store` is what ``chatledger verify`` runs (every hash chain, gapless
versions and positions, fork parents, and every snapshot against the log). The public
check is the public :func:`chatledger.client.verify_log`, which the CLI runs too.

Checkpoints (signed tree heads) do not exist yet: every result carries ``checkpoint``
(None today), the place where "the checkpoint it was checked against" will go.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from typing import Any

from ..client import verify_log
from ..errors import ChatledgerError
from ..events.store import EventStore, VerificationReport

__all__ = ["StoreAudit", "report_body", "verify_store"]


def verify_store(store: EventStore, conversation_id: str | None = None) -> VerificationReport:
    """Verify one conversation (or the whole store) and the snapshots of what it checks."""
    return verify_log(store, conversation_id)


def report_body(
    report: VerificationReport, *, scope: str, seconds: float, location: str
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
        # Signed checkpoints are not part of the log yet; once they are, this names the
        # one the log was checked against (its size, root hash and signature).
        "checkpoint": None,
    }


class StoreAudit:
    """The whole-store verification, run in the background one at a time (it reads the
    entire log), with its last result kept for the audit page."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
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
        body = report_body(
            report,
            scope="store",
            seconds=time.perf_counter() - started,
            location=self.store.location,
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
