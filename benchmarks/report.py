"""The results as a printed table, a markdown file, JSON, and a PNG of the growth curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMNS",
    "format_table",
    "goal_lines",
    "markdown",
    "plot",
    "table_rows",
    "write_json",
    "write_markdown",
]

COLUMNS = ("Figure", "Library", "What", "Median", "Compared")


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:,.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds:,.2f} s"


def _durability(row: dict[str, Any]) -> str:
    durability = row.get("durability")
    if not durability:
        return ""
    return f" [{durability['journal_mode']}, sync={durability['synchronous']}]"


def _library(row: dict[str, Any]) -> str:
    version = row.get("version")
    return f"{row['library']} {version}" if version else row["library"]


def _figure_rows(figure: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    name = figure["name"]
    label = figure["title"].split(".", 1)[0]
    out: list[tuple[str, str, str, str, str]] = []
    if figure.get("missing"):
        return [(label, "-", figure["title"].split(". ", 1)[-1], "missing", figure["missing"])]
    for row in figure["rows"]:
        library = _library(row)
        what = f"{row.get('variant', '')}{_durability(row)}"
        if row.get("error"):
            out.append((label, library, what, "FAILED", row["error"]))
            continue
        if name == "appends":
            compared = f"{row['per_second']:,.0f}/s"
            if "vs_best_peer" in row:
                compared += f" ({row['vs_best_peer']:.2f}x best peer)"
            out.append((label, library, what, _ms(row.get("median_s")), compared))
        elif name == "reads":
            compared = (
                f"{row['vs_best_peer']:.2f}x best peer" if "vs_best_peer" in row else "(reference)"
            )
            what += f", {row.get('messages_read', '?')} items"
            out.append((label, library, what, _ms(row.get("median_s")), compared))
        elif name == "resume":
            size = f"{row['size_events']:,} events"
            extra = ""
            if row["library"] == "chatledger" and "without_snapshot_s" in row:
                extra = f"; no snapshot: {_ms(row['without_snapshot_s'])}"
            compared = f"{row.get('vs_smallest', 1):.2f}x smallest{extra}"
            out.append((label, library, f"{what} @ {size}", _ms(row.get("median_s")), compared))
        elif name == "storage":
            points = row.get("points") or []
            per_turn = ", ".join(f"{p['turns']}: {p['bytes_per_turn']:,.0f}" for p in points)
            compared = ""
            if points:
                compared = f"{points[-1]['vs_raw_json']:.2f}x raw JSON"
                if "growth_last_two" in row:
                    compared += f"; {points[-1]['turns']}/{points[-2]['turns']} turns: {row['growth_last_two']:.2f}x"
            out.append(
                (
                    label,
                    library,
                    f"{what} B/turn @ {per_turn}",
                    f"{points[-1]['bytes_per_turn']:,.0f} B/turn" if points else "-",
                    compared,
                )
            )
        elif name == "send":
            compared = f"{row['vs_best_peer']:.2f}x google-genai" if "vs_best_peer" in row else ""
            out.append((label, library, what, _ms(row.get("median_s")), compared))
        elif name == "stream":
            compared = f"+{row['added_s'] * 1e3:.3f} ms vs raw" if "added_s" in row else "baseline"
            out.append((label, library, what, _ms(row.get("median_s")), compared))
        elif name == "postgres":
            rate = row.get("per_second")
            writers = row.get("writers", "?")
            out.append(
                (label, library, f"{writers} writer(s)", f"{rate:,.0f}/s" if rate else "-", "")
            )
    if name == "postgres" and not out:
        detail = figure.get("error") or "no rows in its output (see results.json)"
        out.append((label, "-", "pg_appends.py", "-", detail))
    return out


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    for figure in results["figures"]:
        rows += _figure_rows(figure)
    return rows


def goal_lines(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(goal, MET/MISSED/not measured, detail) for every goal."""
    lines = []
    for figure in results["figures"]:
        for goal in figure.get("goals", []):
            met = goal.get("met")
            verdict = "MET" if met else ("MISSED" if met is False else "not measured")
            lines.append(
                (
                    f"{figure['title'].split('.', 1)[0]}. {goal['text']}",
                    verdict,
                    goal.get("detail", ""),
                )
            )
    return lines


def format_table(rows: list[tuple[str, ...]], columns: tuple[str, ...], limit: int = 100) -> str:
    rows = [
        tuple(cell if len(cell) <= limit else cell[: limit - 3] + "..." for cell in row)
        for row in rows
    ]
    widths = [
        max(len(columns[i]), *(len(row[i]) for row in rows)) if rows else len(columns[i])
        for i in range(len(columns))
    ]
    line = "  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True))
    lines = [line, "  ".join("-" * width for width in widths)]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    parts = [
        "# chatledger benchmarks",
        "",
        f"Command: `{results['command']}`  ",
        f"Run: {results['started_at']} ({results['duration_s']:.0f} s), {env['machine']}, "
        f"Python {env['python']}, SQLite {env['sqlite']}, chatledger at {env['git']}",
        "",
        "Medians and ratios come from this one run; absolute times vary with the machine.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in table_rows(results):
        parts.append("| " + " | ".join(_md_cell(cell) for cell in row) + " |")
    parts += ["", "## Goals", "", "| Goal | Verdict | Detail |", "|---|---|---|"]
    for goal, verdict, detail in goal_lines(results):
        parts.append(f"| {_md_cell(goal)} | {verdict} | {_md_cell(detail)} |")
    parts += ["", "## Versions and durability", ""]
    for name, version in env["versions"].items():
        parts.append(f"- {name}: {version}")
    parts += ["", "## Notes", ""]
    for figure in results["figures"]:
        for note in figure.get("notes", []):
            parts.append(f"- {figure['title'].split('.', 1)[0]}. {note}")
    return "\n".join(parts) + "\n"


def write_markdown(results: dict[str, Any], path: Path) -> None:
    path.write_text(markdown(results))


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def plot(results: dict[str, Any], path: Path) -> str | None:
    """Draw the growth curves (figures 3 and 4); returns why not, if it could not."""
    figures = {figure["name"]: figure for figure in results["figures"]}
    resume, storage = figures.get("resume"), figures.get("storage")
    if resume is None and storage is None:
        return "neither growth figure was run"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # pragma: no cover - matplotlib missing
        return f"matplotlib unavailable: {exc}"
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    if resume is not None:
        axis = axes[0]
        libraries: dict[str, list[tuple[int, float]]] = {}
        for row in resume["rows"]:
            if row.get("median_s"):
                libraries.setdefault(row["library"], []).append(
                    (row["size_events"], row["median_s"] * 1e3)
                )
        for library, points in libraries.items():
            xs, ys = zip(*sorted(points), strict=True)
            axis.plot(
                xs, ys, marker="o", linewidth=2.5 if library == "chatledger" else 1.2, label=library
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("conversation length (chatledger events; peers hold the same turns)")
        axis.set_ylabel("median time to open, ready to send (ms)")
        axis.set_title("3. Resume a conversation")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    if storage is not None:
        axis = axes[1]
        raw: list[tuple[int, int]] = []
        for row in storage["rows"]:
            points = row.get("points") or []
            if not points:
                continue
            axis.plot(
                [p["turns"] for p in points],
                [p["file_bytes"] / 1e6 for p in points],
                marker="o",
                linewidth=2.5 if row["library"] == "chatledger" else 1.2,
                label=row["library"],
            )
            raw = [(p["turns"], p["raw_json_bytes"]) for p in points]
        if raw:
            axis.plot(
                [t for t, _ in raw],
                [b / 1e6 for _, b in raw],
                "k--",
                label="raw JSON of the contents",
            )
        axis.set_yscale("log")
        axis.set_xlabel("turns")
        axis.set_ylabel("database size after checkpoint (MB)")
        axis.set_title("4. Database size (LangGraph stores full state per checkpoint)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(f"chatledger benchmarks, one run on {results['environment']['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
