"""Timing statistics, progress lines, and what SQLite says about a database file."""

from __future__ import annotations

import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SYNCHRONOUS",
    "Progress",
    "database_bytes",
    "failure",
    "sqlite_durability",
    "summary",
]

#: PRAGMA synchronous values by number.
SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _quantile(ordered: Sequence[float], q: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, p10, p90 and mean of ``samples`` (seconds), and how many there were."""
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median_s": statistics.median(ordered),
        "p10_s": _quantile(ordered, 0.10),
        "p90_s": _quantile(ordered, 0.90),
        "mean_s": statistics.fmean(ordered),
    }


def sqlite_durability(conn: Any) -> dict[str, str]:
    """``journal_mode`` and ``synchronous`` as read with PRAGMA on a library's own
    connection (a sqlite3 connection or anything with ``execute``)."""
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    return {
        "journal_mode": str(journal).upper(),
        "synchronous": SYNCHRONOUS.get(int(synchronous), str(synchronous)),
    }


def database_bytes(path: Path) -> dict[str, int]:
    """The database's size after a WAL checkpoint: bytes on disk (main file plus -wal)
    and page_count * page_size, through a separate connection."""
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        busy = 0
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        freelist = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    wal = Path(f"{path}-wal")
    return {
        "file_bytes": path.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
        "page_bytes": page_count * page_size,
        "free_page_bytes": freelist * page_size,
        "checkpoint_busy": int(busy),
    }


class Progress:
    """One line per step on stderr, with the time since the run started."""

    def __init__(self, quiet: bool = False) -> None:
        self.started = time.monotonic()
        self.quiet = quiet
        self.figure = ""

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.started
        prefix = f"[{elapsed:7.1f}s]" + (f" {self.figure}:" if self.figure else "")
        print(f"{prefix} {message}", file=sys.stderr, flush=True)


def failure(exc: BaseException) -> str:
    """How a library's failure is recorded in the results (the run goes on)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]
