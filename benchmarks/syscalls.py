"""What one append costs the disk: syncs and bytes written per append, per file, by library.

    .venv-bench/bin/python benchmarks/syscalls.py [--appends 200]

Runs each library's single-event append (figure 5's ``append_message``) in a child process
under ``strace -f -y``, after a warm-up, and counts per append: fsync/fdatasync calls, and
the bytes written to the database file, its -wal and its -journal. A synced commit costs a
sync of the log file (and, at a checkpoint, of the database file); the bytes show how many
pages each commit rewrites. Needs strace (Linux).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MARK = b"chatledger-bench-syscalls-start"
CONTENDERS = {
    "chatledger (synchronous=FULL)": ("chatledger", "FULL"),
    "chatledger (defaults: NORMAL)": ("chatledger", None),
    "eventsourcing": ("eventsourcing", None),
    "openai-agents": ("openai-agents", None),
}
_CALL = re.compile(r"^\d+\s+(\w+)\((\d+)<([^>]*)>(.*)\)\s+=\s+(-?\d+)")


def child(key: str, synchronous: str | None, path: str, appends: int) -> None:
    from benchmarks.peers import PEERS, ChatledgerStore

    if key == "chatledger":
        library = ChatledgerStore(Path(path), synchronous=synchronous)
    else:
        library = next(peer for peer in PEERS if peer.key == key)(Path(path))
    library.new_conversation()
    library.append_timed(range(20))
    with open(os.devnull, "wb") as null:
        null.write(MARK)
        null.flush()
        library.append_timed(range(20, 20 + appends))
    library.close()


def measure(label: str, key: str, synchronous: str | None, appends: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="chatledger-syscalls-"))
    trace = folder / "trace"
    try:
        db = str(folder / "db.sqlite")
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from benchmarks.syscalls import child; "
            f"child({key!r}, {synchronous!r}, {db!r}, {appends})"
        )
        subprocess.run(
            [
                "strace",
                "-f",
                "-y",
                "-e",
                "trace=fsync,fdatasync,write,pwrite64",
                "-o",
                str(trace),
                sys.executable,
                "-c",
                code,
            ],
            check=True,
            capture_output=True,
        )
        counts: Counter[str] = Counter()
        started = False
        for line in trace.read_text(errors="replace").splitlines():
            if not started:
                started = MARK.decode() in line
                continue
            match = _CALL.match(line)
            if match is None:
                continue
            call, _, target, _, result = match.groups()
            name = Path(target).name
            kind = (
                "wal"
                if name.endswith("-wal")
                else "journal"
                if name.endswith("-journal")
                else "db"
                if name == "db.sqlite"
                else None
            )
            if kind is None:
                continue
            if call in ("fsync", "fdatasync"):
                counts[f"syncs {kind}"] += 1
            elif int(result) > 0:
                counts[f"bytes {kind}"] += int(result)
        return {name: value / appends for name, value in sorted(counts.items())}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=200)
    args = parser.parse_args()
    if shutil.which("strace") is None:
        print("strace is not installed", file=sys.stderr)
        return 1
    print(f"per append, {args.appends} appends after a warm-up of 20:")
    for label, (key, synchronous) in CONTENDERS.items():
        result = measure(label, key, synchronous, args.appends)
        shown = ", ".join(
            f"{name} {value:,.2f}" if name.startswith("syncs") else f"{name} {value:,.0f}"
            for name, value in result.items()
        )
        print(f"  {label:32} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
