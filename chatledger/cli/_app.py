"""The ``chatledger`` group: its options, the settings every command reads, the error
boundary, and the registry of commands.

Every command opens the log given by ``--db`` (else ``CHATLEDGER_DB``, else a file in the
user's data directory). Expected failures (every :class:`~chatledger.errors.ChatledgerError`)
are turned into ``Error: <message>`` and exit status 1 in one place, :class:`_Group`;
anything else is a bug and keeps its traceback.

Commands are registered by name in :data:`COMMANDS` (one line each) and imported when
first used, so that a command's own dependencies load only when it runs.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import platformdirs

from .._version import __version__
from ..client import Client
from ..errors import ChatledgerError

__all__ = ["COMMANDS", "GEMINI_MODEL", "LOCAL_MODEL", "cli", "default_db", "default_model", "main"]

#: Every command: its name, and where it is defined ("module:attribute").
COMMANDS: dict[str, str] = {
    "chat": "chatledger.cli._chat:chat",
    "ls": "chatledger.cli._browse:list_conversations",
    "show": "chatledger.cli._browse:show",
    "log": "chatledger.cli._browse:log",
    "verify": "chatledger.cli._audit:verify",
    "fork": "chatledger.cli._branching:fork",
    "tree": "chatledger.cli._branching:tree",
    "diff": "chatledger.cli._branching:diff",
    "replay": "chatledger.cli._branching:replay",
    "export": "chatledger.cli._audit:export_",
    "import": "chatledger.cli._audit:import_",
}

GEMINI_MODEL = "gemini-2.5-flash"
LOCAL_MODEL = "local"


# --------------------------------------------------------------------------- choices


def default_model(environ: Mapping[str, str] | None = None) -> str:
    """The model of a new conversation when ``--model`` is not given: Gemini when an API
    key is set, else the embedded offline model (so the CLI works without an account)."""
    env = os.environ if environ is None else environ
    if env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY"):
        return GEMINI_MODEL
    return LOCAL_MODEL


def default_db() -> Path:
    """``chatledger.db`` in the user's data directory (the folder is not created here)."""
    return Path(platformdirs.user_data_dir("chatledger", appauthor=False)) / "chatledger.db"


# --------------------------------------------------------------------------- plumbing


class _Group(click.Group):
    """The CLI's single error boundary (library errors become ``Error: ...``, exit 1),
    and its commands, imported from :data:`COMMANDS` when first used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(_load(COMMANDS[cmd_name]), cmd_name)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChatledgerError as exc:
            raise click.ClickException(exc.message) from None


def _load(where: str) -> click.Command:
    module_name, _, attribute = where.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{where} is not a click command")
    return command


class _Settings:
    """The group's options, and the client built from them on first use."""

    def __init__(self, db: str | None, actor: str | None) -> None:
        self.db = db
        self.actor = actor

    def store_location(self) -> str:
        if self.db:
            return self.db
        path = default_db()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.ClickException(
                f"cannot create {path.parent} for the default database ({exc.strerror}); "
                "pass --db PATH or set CHATLEDGER_DB"
            ) from None
        return str(path)

    def client(self, base_url: str | None = None) -> Client:
        """A client on the chosen store, closed when the command ends."""
        http_options = {"base_url": base_url} if base_url else None
        client = Client(http_options=http_options, store=self.store_location(), actor=self.actor)
        return click.get_current_context().with_resource(client)


def _settings() -> _Settings:
    settings = click.get_current_context().find_object(_Settings)
    return settings if settings is not None else _Settings(None, None)


# --------------------------------------------------------------------------- commands


@click.group(cls=_Group)
@click.version_option(
    __version__, "--version", prog_name="chatledger", message="%(prog)s %(version)s"
)
@click.option(
    "--db",
    metavar="PATH",
    envvar="CHATLEDGER_DB",
    show_envvar=True,
    help=(
        "The event log: a SQLite file path, sqlite:///path, postgresql://... or :memory:. "
        "Default: chatledger.db in the user data directory (created on first use)."
    ),
)
@click.option(
    "--actor",
    metavar="NAME",
    help="Who is acting, recorded on every event written (default: the OS user).",
)
@click.pass_context
def cli(ctx: click.Context, db: str | None, actor: str | None) -> None:
    """Chat with Gemini (or an offline model) and keep every step in an event log.

    Conversation ids may be shortened to any unique prefix.
    """
    ctx.obj = _Settings(db, actor)


def main() -> None:
    """The ``chatledger`` console script."""
    cli(prog_name="chatledger")
