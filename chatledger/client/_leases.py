"""Who holds an open turn, and when another writer may close it.

A turn is open from its ``user_message_added`` event until a response or a failure ends
it (see docs/chat-api.md, "Turns never interleave"). A writer that finds another's turn
open must tell a writer still at work from one that is gone, without trusting anything a
clock or a file could get wrong:

* **The writer's process.** The first event of a turn records ``host`` (this process's
  :data:`HOST`: the host name, the kernel's boot id and the inode of its PID namespace)
  and ``pid``. Only when ``host`` is exactly this process's does the ``pid`` name a process
  this one can see: then a turn whose process is gone is closed at once. Another machine,
  another boot, another PID namespace (containers on one host commonly share a host
  name), a record written before namespaces were recorded, or a platform where the
  identity cannot be established (anything but Linux): the pid says nothing here, and the
  lease decides.
* **The lease.** The writer asks others to wait ``lease_seconds`` after the turn's last
  event, bounded here by :data:`MAX_TURN_LEASE` (a value of ``1e300`` in a file waits an
  hour, not forever). The time since that event is measured twice, and the larger
  measure counts: by the wall clock from the event's ``recorded_at``, a time in the future
  counting as now (so a writer whose clock runs ahead, or a time in the year 2999, cannot
  stretch the lease), and by this process's monotonic clock from when it first saw the
  turn as it is now. A turn recorded by a clock ten years ahead is therefore taken over
  once this process has watched it sit idle for the lease.

A reader whose own clock runs *ahead* can still take a live turn over early: nothing in
the log can tell it its clock is wrong. Keep clocks synchronised (NTP).
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from typing import Any

from ..events.times import parse_utc_time
from ..projections.history import PendingTurn

__all__ = [
    "HOST",
    "MAX_TURN_LEASE",
    "HostIdentity",
    "InFlight",
    "LeaseWatch",
    "bounded_lease",
    "judge_turn",
    "pid_alive",
]

#: The longest a turn's lease is honoured, in seconds, whatever its event says.
MAX_TURN_LEASE = 3600.0


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


class HostIdentity:
    """Where a process runs, as precisely as pids can be compared: two processes may
    compare pids only when their identities are equal and :attr:`certain`."""

    def __init__(self, hostname: str, boot_id: str, pid_namespace: str) -> None:
        self.hostname = hostname
        self.boot_id = boot_id
        self.pid_namespace = pid_namespace

    @classmethod
    def current(cls) -> HostIdentity:
        if not sys.platform.startswith("linux"):
            return cls(socket.gethostname(), "", "")
        return cls(
            socket.gethostname(), _read_text("/proc/sys/kernel/random/boot_id"), _pid_namespace()
        )

    @property
    def certain(self) -> bool:
        """Whether this identity names one PID namespace of one boot of one machine."""
        return bool(self.boot_id and self.pid_namespace)

    def __str__(self) -> str:
        if not self.certain:
            return self.hostname
        return f"{self.hostname}/{self.boot_id}/{self.pid_namespace}"


_IDENTITY = HostIdentity.current()
#: This process's ``host`` as recorded on the first event of each turn it opens.
HOST = str(_IDENTITY)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists in this PID namespace (one we may not signal
    counts as alive)."""
    if pid <= 0:
        return True  # 0 and negative pids name process groups: never "gone"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def bounded_lease(lease_seconds: object) -> float:
    """A recorded ``lease_seconds``, within 0 and :data:`MAX_TURN_LEASE` (anything that is
    not a finite number counts as the maximum)."""
    if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, int | float):
        return MAX_TURN_LEASE
    if math.isnan(lease_seconds):
        return MAX_TURN_LEASE
    return min(max(float(lease_seconds), 0.0), MAX_TURN_LEASE)


def _timestamp(text: str) -> float | None:
    try:
        moment = parse_utc_time(text)
    except (TypeError, ValueError):
        return None
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


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


class LeaseWatch:
    """When this process first saw each open turn as it is now (a monotonic time that no
    other clock can move). Shared by every chat of the process, so a conversation watched
    by one send keeps its count for the next."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[int, int, float]] = {}
        self._lock = threading.Lock()

    def idle(self, key: tuple[str, str], turn: int, version: int) -> float:
        """Seconds since this process first saw turn ``turn`` open at ``version`` (0 the
        first time; a new event in the turn starts the count again)."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or seen[:2] != (turn, version):
                if seen is None and len(self._seen) >= self.LIMIT:
                    self._seen.pop(next(iter(self._seen)))
                self._seen[key] = (turn, version, now)
                return 0.0
            return now - seen[2]

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._seen.pop(key, None)


IN_FLIGHT = InFlight()
WATCH = LeaseWatch()


def judge_turn(
    pending: PendingTurn,
    *,
    location: str,
    conversation_id: str,
    version: int,
    in_flight: InFlight = IN_FLIGHT,
    watch: LeaseWatch = WATCH,
) -> str | None:
    """Why ``pending`` (the open turn of a conversation at ``version``) may be taken
    over, or None while its writer may still be at it."""
    owner: dict[str, Any] = pending.owner
    owner_pid = owner.get("pid")
    if (
        _IDENTITY.certain
        and owner.get("host") == HOST
        and isinstance(owner_pid, int)
        and not isinstance(owner_pid, bool)
    ):
        if owner_pid == os.getpid():
            if (location, conversation_id, pending.turn) in in_flight:
                return None
            return "left open by this process, which is no longer running it"
        if not pid_alive(owner_pid):
            return f"its writer process {owner_pid} on this host is gone"
    lease = bounded_lease(pending.lease_seconds)
    watched = watch.idle((location, conversation_id), pending.turn, version)
    recorded = _timestamp(pending.last_event_at or pending.opened_at)
    now = time.time()
    # A time in the future (a clock running ahead, a forged file) counts as now.
    by_clock = now - min(recorded, now) if recorded is not None else 0.0
    if by_clock > lease:
        return f"its lease of {lease:g} s ran out"
    if watched > lease:
        ahead = (
            f"; its events are dated {recorded - now:,.0f} s in the future"
            if (recorded is not None and recorded > now)
            else ""
        )
        return f"its lease of {lease:g} s ran out (watched by this process{ahead})"
    return None
