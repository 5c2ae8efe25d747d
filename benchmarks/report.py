"""The results as a printed table, a markdown file, JSON, and PNG plots: the growth curves
(figures 2 and 4), the listing (figure 3) and the load (figure 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMNS",
    "GOAL_COLUMNS",
    "format_table",
    "goal_lines",
    "markdown",
    "plot",
    "plot_all",
    "table_rows",
    "write_json",
    "write_markdown",
]

COLUMNS = ("Figure", "Library", "What", "Median", "Compared")
GOAL_COLUMNS = ("Goal", "Verdict", "Measured", "Detail")


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
            if row.get("throughput_per_second"):
                compared += f"; mean {row['throughput_per_second']:,.0f}/s"
            median = _ms(row.get("median_s")) if row.get("mode") == "single" else "(rate)"
            if row.get("failed_rounds"):
                compared += f"; {row['failed_rounds']} rounds failed: {row['round_errors'][0]}"
            out.append((label, library, what, median, compared))
        elif name == "listing":
            what = f"{row['variant']} @ {row['conversations']:,} conversations"
            compared = ""
            if row.get("vs_smallest"):
                compared = f"{row['vs_smallest']:.2f}x at {row['smallest']:,}"
            if row.get("events_read_per_list") is not None:
                compared += f"; store.read: {row['events_read_per_list']:,} events"
            if row.get("subprocess"):
                compared += f"; as a subprocess {_ms(row['subprocess']['median_s'])}"
            out.append((label, library, what, _ms(row.get("median_s")), compared.lstrip("; ")))
        elif name == "load":
            if row.get("turns_per_s") is None:
                out.append((label, library, what, "FAILED", row.get("error") or "no result"))
                continue
            compared = (
                f"p99 1st chunk {_ms(row['first_chunk_p99_s'])}; worst lag "
                f"{_ms(row['lag_worst_s'])}; CPU/turn {_ms(row['cpu_per_turn_s'])}; "
                f"{row['connections']:.0f} connections"
                + (f"; {row['errors']} failed turns" if row.get("errors") else "")
                + (f"; {row['failed_rounds']} rounds failed" if row.get("failed_rounds") else "")
            )
            out.append((label, library, what, f"{row['turns_per_s']:,.0f} turns/s", compared))
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
            if row.get("vs_best_peer"):
                compared = f"{row['vs_best_peer']:.2f}x best peer; " + compared
            out.append((label, library, f"{what} @ {size}", _ms(row.get("median_s")), compared))
        elif name == "storage":
            points = row.get("points") or []
            per_turn = ", ".join(f"{p['turns']}: {p['bytes_per_turn']:,.0f}" for p in points)
            compared = ""
            if points:
                compared = f"{points[-1]['vs_raw_json']:.2f}x raw JSON"
                if row.get("vs_best_peer"):
                    compared = f"{row['vs_best_peer']:.2f}x best peer; " + compared
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


def _measured(goal: dict[str, Any]) -> str:
    ratio = goal.get("ratio")
    if ratio is None:
        return "-"
    target = goal.get("target")
    if goal.get("ratio_unit") == "ms":
        text = f"{ratio:,.1f} ms"
        return text + (f" (goal {target:g} ms)" if target is not None else "")
    return f"{ratio:.2f}x" + (f" (goal {target:g}x)" if target is not None else "")


def _goal_order(goal: dict[str, Any]) -> tuple[int, str]:
    number = str(goal.get("goal", ""))
    return (int(number), "") if number.isdigit() else (99, number)


def goal_lines(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(goal, MET/MISSED/not measured, measured vs goal, detail) for every goal, in the
    order of issue 18's goals; the checks of an earlier round last."""
    goals = []
    for figure in results["figures"]:
        for goal in figure.get("goals", []):
            goals.append((_goal_order(goal), len(goals), goal, figure))
    lines = []
    for _, _, goal, figure in sorted(goals, key=lambda item: item[:2]):
        met = goal.get("met")
        verdict = "MET" if met else ("MISSED" if met is False else "not measured")
        number = goal.get("goal") or figure["title"].split(".", 1)[0]
        prefix = (
            f"{number}."
            if str(number).isdigit()
            else f"({number}, fig. {figure['title'].split('.', 1)[0]})"
        )
        lines.append((f"{prefix} {goal['text']}", verdict, _measured(goal), goal.get("detail", "")))
    return lines


def format_table(rows: list[tuple[str, ...]], columns: tuple[str, ...], limit: int = 140) -> str:
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
        "## Goals (issue 18)",
        "",
        "| " + " | ".join(GOAL_COLUMNS) + " |",
        "|" + "|".join("---" for _ in GOAL_COLUMNS) + "|",
    ]
    for line in goal_lines(results):
        parts.append("| " + " | ".join(_md_cell(cell) for cell in line) + " |")
    parts += [
        "",
        "## Every row",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in table_rows(results):
        parts.append("| " + " | ".join(_md_cell(cell) for cell in row) + " |")
    parts += ["", "## Versions and durability", ""]
    for name, version in env["versions"].items():
        parts.append(f"- {name}: {version}")
    parts += ["", "## Notes", ""]
    for figure in results["figures"]:
        for note in figure.get("notes", []):
            parts.append(f"- {figure['title'].split('.', 1)[0]}. {note}")
    parts += ["", "## Load average of the machine (1, 5, 15 min) before and after each figure", ""]
    for figure in results["figures"]:
        load = figure.get("load_average") or {}
        parts.append(
            f"- {figure['title']}: {load.get('before', '?')} / {load.get('after', '?')} "
            f"({figure.get('duration_s', 0):.0f} s)"
        )
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
        axis.set_title("2. Open a conversation, ready to send")
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


def plot_listing(results: dict[str, Any], path: Path) -> str | None:
    """Figure 3: listing time by number of conversations; returns why not, if it could not."""
    figure = next((f for f in results["figures"] if f["name"] == "listing"), None)
    if figure is None:
        return "the listing figure was not run"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # pragma: no cover - matplotlib missing
        return f"matplotlib unavailable: {exc}"
    fig, axis = plt.subplots(figsize=(8, 5.2))
    series: dict[str, list[tuple[int, float]]] = {}
    for row in figure["rows"]:
        if row.get("median_s"):
            series.setdefault(row["variant"], []).append(
                (row["conversations"], row["median_s"] * 1e3)
            )
    for variant, points in series.items():
        xs, ys = zip(*sorted(points), strict=True)
        axis.plot(xs, ys, marker="o", label=variant)
    axis.axhline(5.0, color="k", linestyle="--", linewidth=1, label="goal: 5 ms")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("conversations in the log")
    axis.set_ylabel("median time to list the newest 50 (ms)")
    axis.set_title("3. List the newest 50 conversations")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def plot_load(results: dict[str, Any], path: Path) -> str | None:
    """Figure 7: the chat backend under load, side by side; returns why not, if it could not."""
    figure = next((f for f in results["figures"] if f["name"] == "load"), None)
    if figure is None:
        return "the load figure was not run"
    rows = [row for row in figure["rows"] if row.get("turns_per_s")]
    if not rows:
        return "the load figure has no results"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # pragma: no cover - matplotlib missing
        return f"matplotlib unavailable: {exc}"
    labels = [row["key"] for row in rows]
    colours = ["tab:blue" if row["library"] == "chatledger" else "tab:gray" for row in rows]
    panels = (
        ("throughput (turns/s)", [row["turns_per_s"] for row in rows], None),
        ("p99 first chunk (ms)", [row["first_chunk_p99_s"] * 1e3 for row in rows], None),
        ("worst event-loop lag (ms)", [row["lag_worst_s"] * 1e3 for row in rows], 10.0),
        ("client CPU per turn (ms)", [row["cpu_per_turn_s"] * 1e3 for row in rows], None),
        ("new TCP connections per run", [row["connections"] for row in rows], None),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 5))
    for axis, (title, values, line) in zip(axes, panels, strict=True):
        axis.bar(range(len(values)), values, color=colours)
        axis.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=7)
        axis.set_title(title, fontsize=9)
        axis.grid(True, axis="y", alpha=0.3)
        if line is not None:
            axis.axhline(line, color="k", linestyle="--", linewidth=1)
    first = rows[0]
    fig.suptitle(
        f"7. {first['chats']} async chats x {first['turns_per_chat']} streamed turns, server "
        "answers after 50 ms (medians of rounds; lag: worst of all rounds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def plot_all(results: dict[str, Any], out: Path) -> dict[str, str]:
    """Every plot the run's figures allow: {file name: "" or why it was not drawn}."""
    return {
        "growth.png": plot(results, out / "growth.png") or "",
        "listing.png": plot_listing(results, out / "listing.png") or "",
        "load.png": plot_load(results, out / "load.png") or "",
    }
