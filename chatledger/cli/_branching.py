"""Branches: ``fork``, ``tree``, ``diff`` and ``replay``."""

from __future__ import annotations

import click

from ..client import replay_conversation
from ..events.store import EventStore
from ..types import Content
from ._app import settings, store_options, timeout_option
from ._ids import resolve_conversation_id, short_ids
from ._render import echo, render_content, shorten

__all__ = ["diff", "fork", "replay", "tree"]


def _short(store: EventStore, *conversation_ids: str) -> list[str]:
    """The ids as the CLI shows them: short, yet each resolving to its conversation."""
    shown = short_ids(info.conversation_id for info in store.conversations())
    return [shown.get(cid, cid) for cid in conversation_ids]


#: ``--width COLUMNS``: the line width of the side-by-side commands (diff, replay).
_width_option = click.option(
    "--width",
    type=click.IntRange(min=40),
    default=120,
    show_default=True,
    metavar="COLUMNS",
    help="Line width.",
)


@click.command()
@click.argument("conversation_id", metavar="ID")
@click.option(
    "--at",
    type=click.IntRange(min=1),
    metavar="VERSION",
    help="Fork at this version of the log (versions are listed by `chatledger log ID`).",
)
@click.option(
    "--turn",
    type=click.IntRange(min=0),
    metavar="N",
    help="Fork after the first N turns of the history.",
)
@click.option("-m", "--model", metavar="NAME", help="Model of the fork (default: the parent's).")
@store_options
def fork(conversation_id: str, at: int | None, turn: int | None, model: str | None) -> None:
    """Fork conversation ID at a point (default: its end) and print the fork's id.

    The fork shares the history up to that point and then goes its own way; continue it
    with `chatledger chat --id FORK`. Nothing is copied: the fork's first event names
    the parent, the version and that event's hash.
    """
    client = settings().client(reading=True)
    parent = client.chats.get(resolve_conversation_id(client.store, conversation_id))
    child = parent.fork(at=at, turn=turn, model=model)
    assert child.parent is not None
    echo(child.id)
    echo(
        f"forked {parent.id} at version {child.parent.version} "
        f"({len(child.get_history())} contents of history)",
        err=True,
    )


@click.command()
@click.argument("conversation_id", metavar="ID")
@store_options
def tree(conversation_id: str) -> None:
    """Show the tree of forks that conversation ID belongs to, from its root.

    Each line: id (shortened, but long enough to name that conversation alone), where it
    forked, turns, model, and the first words of the first message it added (where it
    diverges). The conversation asked for is marked with *.
    """
    client = settings().client(reading=True)
    target = resolve_conversation_id(client.store, conversation_id)
    root = client.chats.tree(target)
    nodes = list(root.walk())
    shown = _short(client.store, *(node.conversation_id for _, node in nodes))
    for (depth, node), short in zip(nodes, shown, strict=True):
        summary = node.summary
        forked = f" at v{summary.parent_version}" if summary.parent_id else ""
        mark = " *" if summary.conversation_id == target else ""
        branch = "  " * (depth - 1) + "└─ " if depth else ""
        words = f'  "{node.divergence}"' if node.divergence else ""
        echo(f"{branch}{short}{forked}  {summary.turns} turns  {summary.model}{words}{mark}")


def _side_by_side(left: list[Content], right: list[Content], start: int, width: int) -> None:
    column = max(20, (width - 3) // 2)
    for index in range(start, max(len(left), len(right))):
        cells = []
        for contents in (left, right):
            cells.append(
                shorten(render_content(contents[index]), column) if index < len(contents) else ""
            )
        echo(f"{cells[0]:<{column}} | {cells[1]}")


def _common_prefix(left: list[Content], right: list[Content]) -> int:
    common = 0
    for a, b in zip(left, right, strict=False):
        if a.to_wire() != b.to_wire():
            break
        common += 1
    return common


@click.command()
@click.argument("first", metavar="ID1")
@click.argument("second", metavar="ID2")
@_width_option
@store_options
def diff(first: str, second: str, width: int) -> None:
    """Show where two conversations (say, two branches) diverge, then their turns side by
    side from there."""
    client = settings().client(reading=True)
    chats = [
        client.chats.get(resolve_conversation_id(client.store, cid)) for cid in (first, second)
    ]
    left, right = (chat_.get_history() for chat_ in chats)
    common = _common_prefix(left, right)
    one, two = _short(client.store, chats[0].id, chats[1].id)
    echo(f"{one} and {two} share their first {common} contents.")
    if common == len(left) == len(right):
        echo("Their histories are identical.")
        return
    echo(f"{one:<{max(20, (width - 3) // 2)}} | {two}")
    _side_by_side(left, right, common, width)


@click.command()
@click.argument("conversation_id", metavar="ID")
@click.option(
    "-m",
    "--model",
    metavar="NAME",
    help="Re-run the user messages against this model as a new fork (instead of an "
    "offline replay), and show both side by side.",
)
@click.option("--base-url", metavar="URL", help="With --model: the server of that model.")
@timeout_option
@_width_option
@store_options
@click.pass_context
def replay(
    ctx: click.Context,
    conversation_id: str,
    model: str | None,
    base_url: str | None,
    timeout: float | None,
    width: int,
) -> None:
    """Replay conversation ID offline: serve every model reply from the log and check
    that the requests built now match the recorded ones (turn, field, recorded, now).

    Exits with status 1 when they differ. With --model, re-run its user messages
    against another model instead, as a new fork.
    """
    if model is None and (base_url is not None or timeout is not None):
        raise click.UsageError("--base-url and --timeout apply only with --model")
    client = settings().client(base_url=base_url, timeout=timeout, reading=True)
    target = resolve_conversation_id(client.store, conversation_id)
    if model is not None:
        original = client.chats.get(target)
        rerun = original.rerun(model=model)
        echo(rerun.id)
        echo(f"re-ran {original.id} on {model} as fork {rerun.id}", err=True)
        left, right = original.get_history(), rerun.get_history()
        start = len(rerun.get_history(as_of=1))
        echo(f"{original.model[:20]:<{max(20, (width - 3) // 2)}} | {model}")
        _side_by_side(left, right, start, width)
        return
    report = replay_conversation(client.store, target)
    echo(f"Replayed {report.replayed} of {report.calls} model calls of {target} from the log.")
    for difference in report.differences:
        echo(f"Difference: {difference}")
    for call in report.digest_mismatches:
        echo(f"Problem: model call {call} does not rebuild to the contents digest it recorded")
    if not report.ok:
        ctx.exit(1)
    echo("No differences: every request matched the log.")
