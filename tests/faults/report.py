"""Print the fault suite's table from the JSON lines :mod:`tests.faults.ledger` wrote.

python -m tests.faults.report FILE [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

COLUMNS = ("kill_points", "faults", "inputs", "events_lost", "invariants_broken")
HEADERS = (
    "area",
    "operation",
    "kill points",
    "faults injected",
    "inputs tried",
    "events lost",
    "invariants broken",
)


def summarise(lines: list[str]) -> list[dict[str, object]]:
    totals: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    for line in lines:
        if not line.strip():
            continue
        row = json.loads(line)
        key = (row["area"], row["operation"])
        for column in COLUMNS:
            totals[key][column] += int(row[column])
    return [
        {"area": area, "operation": op, **counts} for (area, op), counts in sorted(totals.items())
    ]


def render(rows: list[dict[str, object]]) -> str:
    table = [list(HEADERS)]
    for row in rows:
        table.append([str(row["area"]), str(row["operation"])] + [f"{row[c]:,}" for c in COLUMNS])
    total = {c: sum(int(row[c]) for row in rows) for c in COLUMNS}  # type: ignore[call-overload]
    table.append(["total", ""] + [f"{total[c]:,}" for c in COLUMNS])
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    out = []
    for index, r in enumerate(table):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])] + [
            c.rjust(w) for c, w in zip(r[2:], widths[2:], strict=True)
        ]
        out.append("| " + " | ".join(cells) + " |")
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        if index == len(table) - 2:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    lines = args.file.read_text(encoding="utf-8").splitlines() if args.file.exists() else []
    rows = summarise(lines)
    if not rows:
        raise SystemExit(f"{args.file}: no fault counts were recorded; did the suite run?")
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    lost = sum(int(r["events_lost"]) for r in rows)  # type: ignore[call-overload]
    broken = sum(int(r["invariants_broken"]) for r in rows)  # type: ignore[call-overload]
    if lost or broken:
        raise SystemExit(f"FAILED: {lost} events lost, {broken} invariants broken")


if __name__ == "__main__":
    main()
