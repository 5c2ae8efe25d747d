"""``erase``: take content out of the log, keeping every hash (docs/erasure.md)."""

from __future__ import annotations

import click

from ..events.erasing import erase as erase_content
from ._app import settings, shown_location, store_options
from ._ids import resolve_conversation_id
from ._render import CliError, echo

__all__ = ["erase"]


@click.command()
@click.argument("conversation_id", metavar="[ID]", required=False)
@click.option("--subject", metavar="S", help="Erase every conversation created with subject S.")
@click.option(
    "--older-than",
    metavar="AGE",
    help="Erase every event recorded more than AGE ago (30d, 12h, 2w...): a retention period.",
)
@click.option("--reason", required=True, help="Why (recorded in the content_erased events).")
@click.option(
    "--vacuum",
    is_flag=True,
    help="Also rewrite the database's files (SQLite VACUUM; PostgreSQL VACUUM FULL, which "
    "locks the events table while it runs).",
)
@store_options
@click.pass_context
def erase(
    ctx: click.Context,
    conversation_id: str | None,
    subject: str | None,
    older_than: str | None,
    reason: str,
    vacuum: bool,
) -> None:
    """Erase the content of conversation ID (and its forks), of every conversation of a
    --subject, or of everything --older-than a retention period.

    Messages, replies, function arguments and results become placeholders; every hash,
    and so verify, exports, checkpoints and proofs, stays as it was. Each conversation
    erased gets a content_erased event saying who (--actor), when, what and why
    (--reason). Exits with status 1 when some events could not be erased (written
    before erasure existed).
    """
    if sum(x is not None for x in (conversation_id, subject, older_than)) != 1:
        raise CliError("give exactly one of a conversation ID, --subject or --older-than")
    client = settings().client(reading=True)
    store = client.store
    target = resolve_conversation_id(store, conversation_id) if conversation_id else None
    report = erase_content(
        store,
        reason=reason,
        actor=client.actor,
        conversation_id=target,
        subject=subject,
        older_than=older_than,
        vacuum=vacuum,
    )
    count = len(report.conversations)
    echo(
        f"Erased the content of {report.events} event{'s' if report.events != 1 else ''} in "
        f"{count} conversation{'s' if count != 1 else ''} of {shown_location(store.location)}."
    )
    for cid in report.conversations:
        echo(f"  {cid}")
    for note in report.notes:
        echo(f"Note: {note}", err=True)
    if report.not_erasable:
        shown = ", ".join(f"{cid} v{version}" for cid, version in report.not_erasable[:10])
        more = len(report.not_erasable) - 10
        echo(
            f"{len(report.not_erasable)} events were written before erasure existed and "
            f"cannot be erased in place: {shown}{f' and {more} more' if more > 0 else ''}. "
            "See docs/erasure.md (Older events).",
            err=True,
        )
        ctx.exit(1)
