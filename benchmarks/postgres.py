"""Figure 6: PostgreSQL appends/s with 1 and 8 writers, by ``benchmarks/pg_appends.py``.

That script (and ``make bench-pg``) belongs to the PostgreSQL work; this runner only calls
it, in the same venv, and folds its output into the results:

    python benchmarks/pg_appends.py [--json PATH] [--quick | --repeat 1 --appends 100]

Options are passed only if the script's ``--help`` lists them (``--quick`` or the smaller
``--repeat``/``--appends`` only for a quick run). Its JSON, if it writes one, is kept
whole; rows shaped like ``{"library", "writers", "per_second"}`` (also
``appends_per_second`` / ``rate``) under a top-level ``rows`` list, or a list at the top,
are shown in the table. Without JSON, its printed markdown table
(``| writers | chatledger (appends/s) | eventsourcing (appends/s) | ratio |``) is read.
The goal (chatledger >= 3x eventsourcing's PostgreSQL recorder with 8 writers) is judged
from those rows. A missing script is reported as a missing figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .measure import Progress

SCRIPT = Path(__file__).resolve().parent / "pg_appends.py"
GOAL = "8 writer processes >= 3x eventsourcing's PostgreSQL recorder"
TIMEOUT_S = 900


def _rate(row: dict[str, Any]) -> float | None:
    for key in ("per_second", "appends_per_second", "rate", "appends_s"):
        value = row.get(key)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _rows_of(data: Any) -> list[dict[str, Any]]:
    found = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(found, list):
        return []
    rows = []
    for item in found:
        if isinstance(item, dict):
            row = dict(item)
            row.setdefault("library", str(item.get("library") or item.get("name") or "?"))
            rate = _rate(item)
            if rate is not None:
                row["per_second"] = rate
            rows.append(row)
    return rows


def _rows_of_markdown(text: str) -> list[dict[str, Any]]:
    """Rows from the script's printed table: | writers | <library> (appends/s) | ... |."""
    rows: list[dict[str, Any]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        cells = (
            [cell.strip() for cell in line.strip().strip("|").split("|")]
            if line.strip().startswith("|")
            else []
        )
        if not cells:
            header = None if rows else header
            continue
        if cells[0] == "writers":
            header = cells
            continue
        if header is None or set(cells[0]) <= set("-:"):
            continue
        try:
            writers = int(cells[0])
        except ValueError:
            continue
        for name, cell in zip(header[1:], cells[1:], strict=False):
            if "appends/s" not in name:
                continue
            try:
                rate = float(cell.replace(",", ""))
            except ValueError:
                continue
            rows.append({"library": name.split(" (")[0], "writers": writers, "per_second": rate})
    return rows


def run(sizes: dict[str, Any], workdir: Path, progress: Progress) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": "postgres",
        "title": "6. PostgreSQL appends/s, 1 and 8 writer processes (benchmarks/pg_appends.py)",
        "unit": "appends/s",
        "rows": [],
        "goals": [],
        "notes": [],
    }
    if not SCRIPT.exists():
        result["missing"] = f"{SCRIPT.name} does not exist in this checkout"
        result["goals"].append(
            {
                "goal": "6",
                "text": GOAL,
                "target": 3.0,
                "met": None,
                "detail": "missing: no benchmarks/pg_appends.py",
            }
        )
        return result
    with tempfile.NamedTemporaryFile(suffix=".json", dir=workdir, delete=False) as handle:
        out = Path(handle.name)
    out.unlink()
    try:
        usage = subprocess.run(
            [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60
        ).stdout
    except subprocess.TimeoutExpired:
        usage = ""
    command = [sys.executable, str(SCRIPT)]
    if "--json" in usage:
        command += ["--json", str(out)]
    if sizes["quick"]:
        if "--quick" in usage:
            command.append("--quick")
        else:
            command += ["--repeat", "1"] if "--repeat" in usage else []
            command += ["--appends", "100"] if "--appends" in usage else []
    progress(" ".join(["python", *command[1:]]) + " (its progress is kept, not shown)")
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        result["error"] = f"{SCRIPT.name} did not finish in {TIMEOUT_S} s"
        result["goals"].append(
            {"goal": "6", "text": GOAL, "target": 3.0, "met": None, "detail": result["error"]}
        )
        return result
    result["command"] = " ".join(["python", *command[1:]])
    result["returncode"] = completed.returncode
    result["stdout_tail"] = completed.stdout[-4000:]
    if completed.returncode != 0:
        last = (
            completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "no message"
        )
        result["error"] = f"{SCRIPT.name} exited {completed.returncode}: {last[:200]}"
        result["stderr_tail"] = completed.stderr[-4000:]
    data: Any = None
    if out.exists() and out.stat().st_size:
        try:
            data = json.loads(out.read_text())
        except ValueError as exc:
            result["error"] = f"its JSON does not parse: {exc}"
    result["output"] = data
    result["rows"] = _rows_of(data) if data is not None else _rows_of_markdown(completed.stdout)

    def at_eight(prefix: str) -> float | None:
        for row in result["rows"]:
            if str(row["library"]).lower().startswith(prefix) and row.get("writers") == 8:
                return row.get("per_second")
        return None

    ledger, eventsourcing = at_eight("chatledger"), at_eight("eventsourcing")
    if ledger and eventsourcing:
        ratio = ledger / eventsourcing
        result["goals"].append(
            {
                "goal": "6",
                "text": GOAL,
                "target": 3.0,
                "ratio": ratio,
                "met": ratio >= 3.0,
                "detail": (
                    f"8 writers: chatledger {ledger:,.0f}/s vs eventsourcing {eventsourcing:,.0f}/s = {ratio:.2f}x"
                ),
            }
        )
    else:
        result["goals"].append(
            {
                "goal": "6",
                "text": GOAL,
                "target": 3.0,
                "met": None,
                "detail": (
                    result.get("error")
                    or "the script's output names no 8-writer rows for both; see its output"
                ),
            }
        )
    return result
