"""Reading the log: ``ls``, ``show`` and ``log``."""

from __future__ import annotations

import click
import msgspec

from ._app import settings, shown_location, store_options
from ._ids import resolve_conversation_id
from ._render import echo, echo_history, echo_json, json_line, summarize, time_of

__all__ = ["list_conversations", "log", "show"]


@click.command("ls")
@click.option(
    "-n", "--limit", type=click.IntRange(min=1), metavar="N", help="Show at most N conversations."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@store_options
def list_conversations(limit: int | None, as_json: bool) -> None:
    """List conversations, most recently updated first: id, model, turns, last update.

    A log that does not exist yet lists nothing (it is not created).
    """
    missing = settings().missing_file()
    if missing is not None:
        summaries = []
        location = str(missing)
    else:
        client = settings().client()
        summaries = client.chats.list(limit=limit)
        location = client.store.location
    if as_json:
        echo_json([msgspec.to_builtins(summary) for summary in summaries])
        return
    if not summaries:
        echo(f"No conversations in {shown_location(location)}.", err=True)
        return
    rows = [("ID", "MODEL", "TURNS", "UPDATED")] + [
        (s.conversation_id, s.model, str(s.turns), time_of(s.updated_at)) for s in summaries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        echo(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}")


@click.command()
@click.argument("conversation_id", metavar="ID")
@click.option(
    "--full",
    "mode",
    flag_value="full",
    default=True,
    help="Every completed turn, function call steps included (the default).",
)
@click.option(
    "--curated",
    "mode",
    flag_value="curated",
    help="Only user messages and model replies of valid turns, as a person reads them.",
)
@click.option(
    "--context",
    "mode",
    flag_value="context",
    help="What the next request would send to the model before a new message.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the contents as a JSON array (wire form)."
)
@store_options
def show(conversation_id: str, mode: str, as_json: bool) -> None:
    """Show the history of conversation ID, one "role: text" block per content.

    Control characters a model wrote are shown as \\xNN escapes; --json gives the
    contents exactly.
    """
    client = settings().client(reading=True)
    chat_ = client.chats.get(resolve_conversation_id(client.store, conversation_id))
    if mode == "context":
        contents = chat_.get_context()
    else:
        contents = chat_.get_history(curated=mode == "curated")
    if as_json:
        echo_json([content.to_wire() for content in contents])
        return
    echo_history(contents)
    if not contents:
        echo(f"(the {mode} history of {chat_.id} is empty)", err=True)


@click.command()
@click.argument("conversation_id", metavar="ID")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print each event's full envelope as one JSON object per line.",
)
@store_options
def log(conversation_id: str, as_json: bool) -> None:
    """Show the events of conversation ID, oldest first: version, time, actor, type and
    a summary of each."""
    client = settings().client(reading=True)
    events = client.store.read(resolve_conversation_id(client.store, conversation_id))
    for event in events:
        if as_json:
            click.echo(json_line(event.to_export()))
        else:
            echo(
                f"{event.version:>4}  {time_of(event.recorded_at)}  {event.actor or '-'}  "
                f"{event.type:<20}  {summarize(event)}"
            )
