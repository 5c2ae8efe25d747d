"""Audit: ``verify``, ``export`` and ``import``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import click

from ..client import verify_log
from ..errors import StoreError
from ..events.audit import export_conversation, import_lines
from ..events.store import Problem
from ..readmodels import rebuild as rebuild_read_models
from ._app import settings, shown_location, store_options
from ._ids import resolve_conversation_id
from ._inputs import checked_path
from ._render import CliError, echo

__all__ = ["export_", "import_", "rebuild", "verify"]


@click.command()
@click.argument("conversation_id", metavar="[ID]", required=False)
@click.option(
    "--rebuild-snapshots",
    is_flag=True,
    help="Write again, from the log, every snapshot that does not match it (instead of "
    "reporting it).",
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    metavar="FILE",
    help="Also prove that the log extends every signed checkpoint in FILE (written by "
    "`chatledger checkpoint`): the Merkle tree is recomputed from the events.",
)
@click.option(
    "--verifier-key",
    metavar="KEY",
    help="The key the checkpoints must be signed with: <name>+<id>+<key>, or a file of "
    "them (default: CHATLEDGER_VERIFIER_KEY).",
)
@store_options
@click.pass_context
def verify(
    ctx: click.Context,
    conversation_id: str | None,
    rebuild_snapshots: bool,
    checkpoint_file: str | None,
    verifier_key: str | None,
) -> None:
    """Check the hash chains of conversation ID, or of the whole log, and that every
    snapshot (kept for long conversations) holds what the events give.

    With --checkpoint, also prove that the log today holds exactly the events each
    signed checkpoint covered, in the same order: any edit, deletion, reordering or
    re-hashing before it is found, however the chains were fixed (see docs/proofs.md).

    Prints what was checked and every problem found; exits with status 1 when there
    are problems.
    """
    signed = []
    if checkpoint_file is not None:
        from ._proofs import _verifiers, open_checkpoints

        if conversation_id is not None:
            raise click.UsageError("--checkpoint checks the whole log: give no ID with it")
        signed = open_checkpoints(checkpoint_file, _verifiers(verifier_key), "--checkpoint")
    elif verifier_key is not None:
        raise click.UsageError("--verifier-key goes with --checkpoint FILE")
    client = settings().client(reading=True)
    store = client.store
    target = resolve_conversation_id(store, conversation_id) if conversation_id else None
    report = verify_log(store, target, rebuild_snapshots=rebuild_snapshots)
    if signed:
        from ._proofs import describe_checkpoint, verify_checkpoints

        check, verdicts = verify_checkpoints(store, signed)
        for item, problem in verdicts:
            verdict = "the log extends it" if problem is None else "the log does NOT extend it"
            echo(f"Checkpoint {describe_checkpoint(item.checkpoint)}: {verdict}.")
            if problem is not None:
                report.problems.append(
                    Problem(conversation_id="(checkpoint)", version=None, reason=problem)
                )
        echo(f"The Merkle tree recomputed from the events: {check.size} events.")
    snapshots = (
        f" and {report.snapshots_checked} snapshot{'s' if report.snapshots_checked != 1 else ''}"
        if report.snapshots_checked
        else ""
    )
    echo(
        f"Checked {report.events_checked} events in {report.streams_checked} "
        f"conversation{'s' if report.streams_checked != 1 else ''}{snapshots} of {shown_location(store.location)}."
    )
    for found in report.problems:
        echo(f"Problem: {found}")
    if report.problems:
        count = len(report.problems)
        echo(f"{count} problem{'s' if count != 1 else ''} found.", err=True)
        ctx.exit(1)
    echo("No problems found.")


@click.command()
@click.argument("conversation_ids", metavar="[ID]...", nargs=-1)
@store_options
def rebuild(conversation_ids: tuple[str, ...]) -> None:
    """Write the read models (conversation summaries and contents) again from the log:
    of conversations ID..., or of every conversation. The log itself is not changed.

    Run it when `chatledger verify` reports a read model that differs from the log.
    """
    client = settings().client(reading=True)
    store = client.store
    targets = [resolve_conversation_id(store, cid) for cid in conversation_ids] or None
    try:
        count = rebuild_read_models(store, targets)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    echo(
        f"Rebuilt the read models of {count} conversation{'s' if count != 1 else ''} "
        f"of {shown_location(store.location)} from the log."
    )


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
@click.option(
    "--proofs",
    is_flag=True,
    help="Add to each event the proof that it is in the tree --checkpoint signed (events "
    "after it get none).",
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    metavar="FILE",
    help="The signed checkpoint the proofs lead to (the last one of FILE).",
)
@click.option(
    "--verifier-key",
    metavar="KEY",
    help="Check the checkpoint's signature with this key first (or CHATLEDGER_VERIFIER_KEY).",
)
@store_options
def export_(
    conversation_id: str,
    forks: bool,
    output: str | None,
    proofs: bool,
    checkpoint_file: str | None,
    verifier_key: str | None,
) -> None:
    """Export conversation ID as JSON lines with hashes, verifiable without chatledger.

    A fork's export starts with its ancestors' events up to the fork point, so it
    verifies on its own (see examples/verify_export.py). With --proofs --checkpoint
    FILE, each event the checkpoint covers also carries its inclusion proof in the
    checkpoint's tree, which examples/verify_export.py checks given the checkpoint and
    the verifier key (events after the checkpoint get no proof, and the script refuses
    them unless given --accept-unproven: export again after a newer checkpoint).
    """
    if proofs != (checkpoint_file is not None):
        raise click.UsageError("--proofs and --checkpoint FILE go together")
    if output is not None:
        checked_path(output, "--output")
    client = settings().client(reading=True)
    target = resolve_conversation_id(client.store, conversation_id)
    lines = export_conversation(client.store, target, include_forks=forks)
    if checkpoint_file is not None:
        from ._proofs import with_proofs

        lines = with_proofs(client.store, lines, checkpoint_file, verifier_key)
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
