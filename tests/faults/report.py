"""Print the fault suite's tables from the JSON lines :mod:`tests.faults.ledger` wrote.

python -m tests.faults.report FILE [--json OUT]

The first table has a row per operation; the second a row per attack class that a
hostile tester once broke (issue 13, docs/security.md "What a hostile tester broke"),
summed over the operations that try it again. A class no row tried fails the report.
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


#: Each attack class and the rows that try it: (area, start of the operation's name).
ATTACKS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "1 a head row (streams) trusted, not checked",
        (("store", "damaged-head-"), ("store", "damaged-lineage-")),
    ),
    (
        "2 an import or a clock ahead blocks a conversation",
        (
            ("store", "import-open-turn/"),
            ("store", "import-bounds/"),
            ("turns", "clock-ahead/"),
            ("turns", "huge-lease-or-far-time/"),
        ),
    ),
    ("3 a live turn taken over from another PID namespace", (("turns", "pid-namespace"),)),
    ("4 another application's database changed", (("store", "foreign-database/"),)),
    (
        "5 garbage in a 200 answer recorded as a reply",
        (
            ("server", "200-but-no-stream/"),
            ("server", "invalid-json-stream/"),
            ("server", "invalid-json-body/"),
            ("server", "error-in-200-"),
        ),
    ),
    (
        "6 a secret in a URL or an echoed reply reaches the log",
        (
            ("secrets", "password in the base URL"),
            ("secrets", "secrets echoed in successful replies"),
        ),
    ),
    (
        "7 a runaway answer exhausts memory or time",
        (
            ("server", "over-the-limit-"),
            ("server", "endless-error-body/"),
            ("server", "whole-request-deadline/"),
            ("cli", "timeout/"),
        ),
    ),
    ("8 an idempotent append hides a conflict", (("store", "conflicting-retry/"),)),
    (
        "9 the CLI: unsendable input, export errors, ids, escapes; import messages",
        (
            ("cli", "unsendable-input-writes-nothing/"),
            ("cli", "export-cannot-be-written/"),
            ("cli", "exact-id-wins/"),
            ("cli", "escape-sequences/"),
            ("cli", "hardening/"),
            ("store", "import-duplicate-id/"),
        ),
    ),
)
ATTACK_HEADERS = ("attack class", "tried on", "attacks tried", "held", "events lost")


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


def attacks(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """One row per attack class: where it was tried (the last part of each operation's
    name: a store, a protocol, the CLI), how many attacks, how many held (no invariant
    broken), and events lost."""
    summary: list[dict[str, object]] = []
    for name, sources in ATTACKS:
        matched = [
            row
            for row in rows
            if any(
                row["area"] == area and str(row["operation"]).startswith(start)
                for area, start in sources
            )
        ]
        tried = sum(int(str(row[c])) for row in matched for c in COLUMNS[:3])
        broken = sum(int(str(row["invariants_broken"])) for row in matched)
        where = sorted({str(row["operation"]).rsplit("/", 1)[-1] for row in matched})
        summary.append(
            {
                "attack": name,
                "tried_on": ", ".join(where),
                "tried": tried,
                "held": max(tried - broken, 0),
                "events_lost": sum(int(str(row["events_lost"])) for row in matched),
            }
        )
    return summary


def render_attacks(summary: list[dict[str, object]]) -> str:
    table = [list(ATTACK_HEADERS)] + [
        [str(row["attack"]), str(row["tried_on"])]
        + [f"{int(str(row[c])):,}" for c in ("tried", "held", "events_lost")]
        for row in summary
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(ATTACK_HEADERS))]
    out = []
    for index, r in enumerate(table):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])] + [
            c.rjust(w) for c, w in zip(r[2:], widths[2:], strict=True)
        ]
        out.append("| " + " | ".join(cells) + " |")
        if index == 0:
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
    summary = attacks(rows)
    print()
    print(render_attacks(summary))
    if args.json:
        document = {"operations": rows, "attacks": summary}
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    untried = [str(row["attack"]) for row in summary if not row["tried"]]
    if untried:
        raise SystemExit(f"FAILED: no row tried {'; '.join(untried)}")
    lost = sum(int(r["events_lost"]) for r in rows)  # type: ignore[call-overload]
    broken = sum(int(r["invariants_broken"]) for r in rows)  # type: ignore[call-overload]
    if lost or broken:
        raise SystemExit(f"FAILED: {lost} events lost, {broken} invariants broken")


if __name__ == "__main__":
    main()
