"""Run chatledger's benchmarks and its peers' side by side, in one run.

    make bench                          # creates .venv-bench, runs everything
    python benchmarks/run.py --quick    # small sizes: a smoke run in a minute or two
    python benchmarks/run.py --only appends,reads

Writes benchmarks/results/results.json, table.md and the plots (growth.png, listing.png,
load.png), and prints the goals and the table.
Each figure's module says what it measures and how; peers.py says how each library is
driven. A library that fails (not installed, an error) is recorded as failed and the run
goes on.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import (  # noqa: E402
    appends,
    listing,
    load,
    postgres,
    reads,
    report,
    resume,
    sends,
    storage,
)
from benchmarks.measure import Progress, failure  # noqa: E402

Figure = Callable[[dict[str, Any], Path, Progress], dict[str, Any]]

#: In the order of issue 18's goals (1 to 7), then the checks of an earlier round.
FIGURES: dict[str, Figure] = {
    "reads": reads.run,
    "resume": resume.run,
    "listing": listing.run,
    "storage": storage.run,
    "appends": appends.run,
    "postgres": postgres.run,
    "load": load.run,
    "send": sends.run_send,
    "stream": sends.run_stream,
}

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "quick": False,
        "append_rounds": 10,
        "append_batch": 100,
        "concurrent_rounds": 5,
        "concurrent_batch": 40,
        "read_turns": 500,
        "read_rounds": 30,
        "resume_events": [1_000, 10_000, 100_000],
        "resume_rounds": 10,
        "resume_peer_rounds": 5,
        "storage_turns": [100, 200, 400],
        "listing_conversations": [1_000, 100_000],
        "listing_rounds": 20,
        "listing_long_turns": 100,
        "load_chats": 200,
        "load_turns": 3,
        "load_rounds": 3,
        "load_processes": 8,
        "send_rounds": 20,
        "send_turns": 20,
    },
    "quick": {
        "quick": True,
        "append_rounds": 2,
        "append_batch": 20,
        "concurrent_rounds": 1,
        "concurrent_batch": 10,
        "read_turns": 50,
        "read_rounds": 3,
        "resume_events": [1_000, 2_500, 5_000],
        "resume_rounds": 3,
        "resume_peer_rounds": 2,
        "storage_turns": [10, 20, 40],
        "listing_conversations": [1_000, 5_000],
        "listing_rounds": 5,
        "listing_long_turns": 20,
        "load_chats": 40,
        "load_turns": 3,
        "load_rounds": 1,
        "load_processes": 2,
        "send_rounds": 2,
        "send_turns": 10,
    },
}

#: Distributions whose versions are recorded.
DISTRIBUTIONS = (
    "chatledger",
    "eventsourcing",
    "openai-agents",
    "llm",
    "langchain-community",
    "langchain-core",
    "SQLAlchemy",
    "langgraph",
    "langgraph-checkpoint-sqlite",
    "google-genai",
    "httpx",
    "msgspec",
    "pydantic",
    "psycopg",
)


def _git() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "chatledger"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return f"{commit}{' + uncommitted changes in chatledger/' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load_average() -> str:
    """The 1, 5 and 15-minute load averages: how busy the shared machine was."""
    try:
        return " ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _environment() -> dict[str, Any]:
    versions = {}
    for name in DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "git": _git(),
        "versions": versions,
        "chatledger_defaults": "SQLite WAL, synchronous=NORMAL, busy timeout 10 s, BEGIN IMMEDIATE appends",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these figures (repeat or comma-separate): {', '.join(FIGURES)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "results",
        help="where results go (default: benchmarks/results)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the databases are written (default: a temporary folder)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases after the run")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="run nothing: write the table and plots of an earlier run's results.json to --out",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        _report(json.loads(args.render.read_text()), args.out)
        return 0

    selected = [name.strip() for value in args.only for name in value.split(",") if name.strip()]
    unknown = [name for name in selected if name not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    names = selected or list(FIGURES)
    sizes = SIZES["quick" if args.quick else "full"]

    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="chatledger-bench-", dir=args.workdir))
    progress = Progress(quiet=args.quiet)
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    started = time.monotonic()
    command = (
        "python benchmarks/run.py"
        + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    )
    results: dict[str, Any] = {
        "command": command.strip(),
        "mode": "quick" if args.quick else "full",
        "started_at": started_at,
        "sizes": sizes,
        "environment": _environment(),
        "figures": [],
    }
    progress(f"databases in {workdir}")
    try:
        for index, name in enumerate(names, start=1):
            progress.figure = f"[{index}/{len(names)} {name}]"
            load_before = _load_average()
            progress(f"start (load average {load_before})")
            figure_started = time.monotonic()
            try:
                figure = FIGURES[name](sizes, workdir, progress)
            except Exception as exc:  # a figure's own bug must not lose the others
                traceback.print_exc()
                figure = {
                    "name": name,
                    "title": name,
                    "rows": [],
                    "goals": [],
                    "error": failure(exc),
                }
            figure["duration_s"] = time.monotonic() - figure_started
            figure["load_average"] = {"before": load_before, "after": _load_average()}
            results["figures"].append(figure)
            progress(f"done in {figure['duration_s']:.0f} s")
    finally:
        progress.figure = ""
        results["duration_s"] = time.monotonic() - started
        if args.keep:
            progress(f"databases kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    report.write_json(results, args.out / "results.json")
    _report(results, args.out)
    return 0


def _report(results: dict[str, Any], out: Path) -> None:
    """Write table.md and the plots of ``results`` to ``out``; print the tables."""
    report.write_markdown(results, out / "table.md")
    plots = report.plot_all(results, out)
    print()
    print(report.format_table(report.table_rows(results), report.COLUMNS))
    print()
    print(report.format_table(report.goal_lines(results), report.GOAL_COLUMNS, limit=400))
    print()
    env = results["environment"]
    print(
        f"{env['machine']}; Python {env['python']}; SQLite {env['sqlite']}; chatledger at {env['git']}"
    )
    print(f"chatledger defaults: {env['chatledger_defaults']}")
    drawn = [str(out / name) for name, problem in plots.items() if not problem]
    print(f"Wrote {out / 'results.json'}, {out / 'table.md'}, " + ", ".join(drawn))
    loads = ", ".join(
        f"{figure['name']} {figure.get('load_average', {}).get('before', '?')}"
        for figure in results["figures"]
    )
    print(f"Load average (1, 5, 15 min) at the start of each figure: {loads}")
    print(f"Total {results['duration_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
