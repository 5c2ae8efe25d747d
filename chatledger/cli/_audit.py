"""Audit: ``verify``, ``export`` and ``import``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import click

from ..client import verify_log
from ..events.audit import export_conversation, import_lines
from ._app import settings, shown_location, store_options
from ._ids import resolve_conversation_id
from ._inputs import checked_path
from ._render import CliError, echo

__all__ = ["export_", "import_", "verify"]


@click.command()
@click.argument("conversation_id", metavar="[ID]", required=False)
@click.option(
    "--rebuild-snapshots",
    is_flag=True,
    help="Write again, from the log, every snapshot that does not match it (instead of "
    "reporting it).",
)
@store_options
@click.pass_context
def verify(ctx: click.Context, conversation_id: str | None, rebuild_snapshots: bool) -> None:
    """Check the hash chains of conversation ID, or of the whole log, and that every
    snapshot (kept for long conversations) holds what the events give.

    Prints what was checked and every problem found; exits with status 1 when there
    are problems.
    """
    client = settings().client(reading=True)
    store = client.store
    target = resolve_conversation_id(store, conversation_id) if conversation_id else None
    report = verify_log(store, target, rebuild_snapshots=rebuild_snapshots)
    snapshots = (
        f" and {report.snapshots_checked} snapshot{'s' if report.snapshots_checked != 1 else ''}"
        if report.snapshots_checked
        else ""
    )
    echo(
        f"Checked {report.events_checked} events in {report.streams_checked} "
        f"conversation{'s' if report.streams_checked != 1 else ''}{snapshots} of {shown_location(store.location)}."
    )
    for problem in report.problems:
        echo(f"Problem: {problem}")
    if report.problems:
        count = len(report.problems)
        echo(f"{count} problem{'s' if count != 1 else ''} found.", err=True)
        ctx.exit(1)
    echo("No problems found.")


def _write_lines(output: str, lines: Iterable[str]) -> int:
    """Write ``lines`` to the file ``output`` all or nothing: into a temporary file beside
    it, renamed over it once complete (a device or a pipe is written to directly)."""
    target = Path(output)
    count = 0
    try:
        if target.exists() and not target.is_file():
            with open(target, "w", encoding="utf-8") as handle:
                for line in lines:
                    handle.write(line + "\n")
                    count += 1
            return count
        handle_, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".partial", dir=target.parent
        )
        try:
            with os.fdopen(handle_, "w", encoding="utf-8") as handle:
                for line in lines:
                    handle.write(line + "\n")
                    count += 1
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise CliError(
            f"cannot write the export to {output}: {exc.strerror or exc}; check the path "
            "and the free space (a file already there is left as it was)"
        ) from None
    return count


@click.command("export")
@click.argument("conversation_id", metavar="ID")
@click.option("--forks", is_flag=True, help="Include every conversation forked from it.")
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="Write to this file instead of stdout (replaced only once the export is complete).",
)
@store_options
def export_(conversation_id: str, forks: bool, output: str | None) -> None:
    """Export conversation ID as JSON lines with hashes, verifiable without chatledger.

    A fork's export starts with its ancestors' events up to the fork point, so it
    verifies on its own (see examples/verify_export.py).
    """
    if output is not None:
        checked_path(output, "--output")
    client = settings().client(reading=True)
    target = resolve_conversation_id(client.store, conversation_id)
    lines = export_conversation(client.store, target, include_forks=forks)
    if output is not None:
        count = _write_lines(output, lines)
    else:
        count = 0
        for line in lines:
            click.echo(line)
            count += 1
    echo(f"exported {count} events", err=True)


@click.command("import")
@click.argument("file")
@store_options
def import_(file: str) -> None:
    """Import an export FILE: everything is verified first, and nothing is written
    unless the whole file is sound. Conversations already present are left as they are."""
    checked_path(file, "FILE")
    try:
        handle = open(file, "rb")  # noqa: SIM115 - closed below, errors reported first
    except OSError as exc:
        raise CliError(
            f"cannot read {file}: {exc.strerror or exc}; give the path of an export "
            "(`chatledger export ID -o FILE`)"
        ) from None
    with handle:
        client = settings().client()
        try:
            report = import_lines(client.store, handle)
        except OSError as exc:
            raise CliError(
                f"cannot read {file}: {exc.strerror or exc}; nothing was imported"
            ) from None
    echo(
        f"Imported {report.events} events of {len(report.conversations)} conversations "
        f"into {shown_location(client.store.location)}."
    )
    for cid in report.already_present:
        echo(f"Already present: {cid}")
