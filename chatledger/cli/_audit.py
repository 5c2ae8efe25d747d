"""Audit: ``verify``, ``export`` and ``import``."""

from __future__ import annotations

import contextlib

import click

from ..client import verify_log
from ..events.audit import export_conversation, import_lines
from ._app import _settings
from ._ids import resolve_conversation_id

__all__ = ["export_", "import_", "verify"]


@click.command()
@click.argument("conversation_id", metavar="[ID]", required=False)
@click.option(
    "--rebuild-snapshots",
    is_flag=True,
    help="Write again, from the log, every snapshot that does not match it (instead of "
    "reporting it).",
)
@click.pass_context
def verify(ctx: click.Context, conversation_id: str | None, rebuild_snapshots: bool) -> None:
    """Check the hash chains of conversation ID, or of the whole log, and that every
    snapshot (kept for long conversations) holds what the events give.

    Prints what was checked and every problem found; exits with status 1 when there
    are problems.
    """
    client = _settings().client()
    store = client.store
    target = resolve_conversation_id(store, conversation_id) if conversation_id else None
    report = verify_log(store, target, rebuild_snapshots=rebuild_snapshots)
    snapshots = (
        f" and {report.snapshots_checked} snapshot{'s' if report.snapshots_checked != 1 else ''}"
        if report.snapshots_checked
        else ""
    )
    click.echo(
        f"Checked {report.events_checked} events in {report.streams_checked} "
        f"conversation{'s' if report.streams_checked != 1 else ''}{snapshots} of {store.location}."
    )
    for problem in report.problems:
        click.echo(f"Problem: {problem}")
    if report.problems:
        count = len(report.problems)
        click.echo(f"{count} problem{'s' if count != 1 else ''} found.", err=True)
        ctx.exit(1)
    click.echo("No problems found.")


@click.command("export")
@click.argument("conversation_id", metavar="ID")
@click.option("--forks", is_flag=True, help="Include every conversation forked from it.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to this file instead of stdout.",
)
def export_(conversation_id: str, forks: bool, output: str | None) -> None:
    """Export conversation ID as JSON lines with hashes, verifiable without chatledger.

    A fork's export starts with its ancestors' events up to the fork point, so it
    verifies on its own (see examples/verify_export.py).
    """
    client = _settings().client()
    target = resolve_conversation_id(client.store, conversation_id)
    lines = export_conversation(client.store, target, include_forks=forks)
    count = 0
    with contextlib.ExitStack() as stack:
        handle = stack.enter_context(open(output, "w", encoding="utf-8")) if output else None
        for line in lines:
            if handle is not None:
                handle.write(line + "\n")
            else:
                click.echo(line)
            count += 1
    click.echo(f"exported {count} events", err=True)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def import_(file: str) -> None:
    """Import an export FILE: everything is verified first, and nothing is written
    unless the whole file is sound. Conversations already present are left as they are."""
    client = _settings().client()
    with open(file, "rb") as handle:
        report = import_lines(client.store, handle)
    click.echo(
        f"Imported {report.events} events of {len(report.conversations)} conversations "
        f"into {client.store.location}."
    )
    for cid in report.already_present:
        click.echo(f"Already present: {cid}")
