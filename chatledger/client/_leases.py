"""Who holds an open turn, and when another writer may close it.

A turn is open from its ``user_message_added`` event until a response or a failure ends
it. Its first event records the writer's ``host`` (:data:`HOST`) and ``pid``: a turn whose
writer process on this host is gone is closed at once; any other turn once its lease
(``lease_seconds`` after its last event) has run out.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import threading
import time
from typing import Any

from ..projections.history import PendingTurn

__all__ = ["HOST", "IN_FLIGHT", "InFlight", "judge_turn", "pid_alive"]


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()[:8]
    except OSError:
        return ""


#: This process's ``host`` as recorded on the first event of each turn it opens.
HOST = f"{socket.gethostname()}/{_boot_id()}"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _timestamp(text: str) -> float:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class InFlight:
    """The turns this process is running now, by (store location, conversation, turn)."""

    def __init__(self) -> None:
        self._turns: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()

    def add(self, key: tuple[str, str, int]) -> None:
        with self._lock:
            self._turns.add(key)

    def discard(self, key: tuple[str, str, int]) -> None:
        with self._lock:
            self._turns.discard(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._turns


IN_FLIGHT = InFlight()


def judge_turn(
    pending: PendingTurn, *, location: str, conversation_id: str, in_flight: InFlight = IN_FLIGHT
) -> str | None:
    """Why ``pending`` (the open turn of a conversation) may be taken over, or None while
    its writer may still be at it."""
    owner: dict[str, Any] = pending.owner
    owner_host = owner.get("host")
    owner_pid = owner.get("pid")
    if owner_host == HOST and isinstance(owner_pid, int):
        if owner_pid == os.getpid():
            if (location, conversation_id, pending.turn) in in_flight:
                return None
            return "left open by this process, which is no longer running it"
        if not pid_alive(owner_pid):
            return f"its writer process {owner_pid} on this host is gone"
    last = pending.last_event_at or pending.opened_at
    if time.time() - _timestamp(last) > pending.lease_seconds:
        return f"its lease of {pending.lease_seconds:g} s ran out"
    return None
