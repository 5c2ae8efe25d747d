"""Branches: ``fork``, ``tree``, ``diff`` and ``replay``."""

from __future__ import annotations

import click

from ..client import replay_conversation
from ..types import Content
from ._app import _settings
from ._ids import resolve_conversation_id
from ._render import _shorten, render_content

__all__ = ["diff", "fork", "replay", "tree"]


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
def fork(conversation_id: str, at: int | None, turn: int | None, model: str | None) -> None:
    """Fork conversation ID at a point (default: its end) and print the fork's id.

    The fork shares the history up to that point and then goes its own way; continue it
    with `chatledger chat --id FORK`. Nothing is copied: the fork's first event names
    the parent, the version and that event's hash.
    """
    client = _settings().client()
    parent = client.chats.get(resolve_conversation_id(client.store, conversation_id))
    child = parent.fork(at=at, turn=turn, model=model)
    assert child.parent is not None
    click.echo(child.id)
    click.echo(
        f"forked {parent.id} at version {child.parent.version} "
        f"({len(child.get_history())} contents of history)",
        err=True,
    )


@click.command()
@click.argument("conversation_id", metavar="ID")
def tree(conversation_id: str) -> None:
    """Show the tree of forks that conversation ID belongs to, from its root.

    Each line: id, turns, model, where it forked, and the first words of the first
    message it added (where it diverges). The conversation asked for is marked with *.
    """
    client = _settings().client()
    target = resolve_conversation_id(client.store, conversation_id)
    for depth, node in client.chats.tree(target).walk():
        summary = node.summary
        forked = f" at v{summary.parent_version}" if summary.parent_id else ""
        mark = " *" if summary.conversation_id == target else ""
        branch = "  " * (depth - 1) + "└─ " if depth else ""
        words = f'  "{node.divergence}"' if node.divergence else ""
        click.echo(
            f"{branch}{summary.conversation_id[:8]}{forked}  {summary.turns} turns  "
            f"{summary.model}{words}{mark}"
        )


def _side_by_side(left: list[Content], right: list[Content], start: int, width: int) -> None:
    column = max(20, (width - 3) // 2)
    for index in range(start, max(len(left), len(right))):
        cells = []
        for contents in (left, right):
            cells.append(
                _shorten(render_content(contents[index]), column) if index < len(contents) else ""
            )
        click.echo(f"{cells[0]:<{column}} | {cells[1]}")


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
@click.option(
    "--width", type=click.IntRange(min=40), default=120, show_default=True, help="Line width."
)
def diff(first: str, second: str, width: int) -> None:
    """Show where two conversations (say, two branches) diverge, then their turns side by
    side from there."""
    client = _settings().client()
    chats = [
        client.chats.get(resolve_conversation_id(client.store, cid)) for cid in (first, second)
    ]
    left, right = (chat_.get_history() for chat_ in chats)
    common = _common_prefix(left, right)
    click.echo(f"{chats[0].id[:8]} and {chats[1].id[:8]} share their first {common} contents.")
    if common == len(left) == len(right):
        click.echo("Their histories are identical.")
        return
    click.echo(f"{chats[0].id[:8]:<{max(20, (width - 3) // 2)}} | {chats[1].id[:8]}")
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
@click.option(
    "--width", type=click.IntRange(min=40), default=120, show_default=True, help="Line width."
)
@click.pass_context
def replay(
    ctx: click.Context, conversation_id: str, model: str | None, base_url: str | None, width: int
) -> None:
    """Replay conversation ID offline: serve every model reply from the log and check
    that the requests built now match the recorded ones (turn, field, recorded, now).

    Exits with status 1 when they differ. With --model, re-run its user messages
    against another model instead, as a new fork.
    """
    client = _settings().client(base_url)
    target = resolve_conversation_id(client.store, conversation_id)
    if model is not None:
        original = client.chats.get(target)
        rerun = original.rerun(model=model)
        click.echo(rerun.id)
        click.echo(f"re-ran {original.id} on {model} as fork {rerun.id}", err=True)
        left, right = original.get_history(), rerun.get_history()
        start = len(rerun.get_history(as_of=1))
        click.echo(f"{original.model[:20]:<{max(20, (width - 3) // 2)}} | {model}")
        _side_by_side(left, right, start, width)
        return
    report = replay_conversation(client.store, target)
    click.echo(
        f"Replayed {report.replayed} of {report.calls} model calls of {target} from the log."
    )
    for difference in report.differences:
        click.echo(f"Difference: {difference}")
    for call in report.digest_mismatches:
        click.echo(
            f"Problem: model call {call} does not rebuild to the contents digest it recorded"
        )
    if not report.ok:
        ctx.exit(1)
    click.echo("No differences: every request matched the log.")
