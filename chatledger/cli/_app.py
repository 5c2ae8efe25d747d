"""The ``chatledger`` group: its options, the settings every command reads, the error
boundary, and the registry of commands.

Every command opens the log given by ``--db`` (else ``CHATLEDGER_DB``, else a file in the
user's data directory); ``--db`` and ``--actor`` may be given before the command's name or
after it. Expected failures (every :class:`~chatledger.errors.ChatledgerError`, and the
operating system refusing a file) are turned into ``Error: <message>`` and exit status 1
in one place, :class:`_Group`; anything else is a bug and keeps its traceback.

Commands are registered by name in :data:`COMMANDS` (one line each) and imported when
first used, so that a command's own dependencies load only when it runs.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import click
import platformdirs

from .._version import __version__
from ..client import Client
from ..errors import ChatledgerError, NotFoundError, mask_url_password, register_secret
from ..events import open_store
from ._render import CliError

__all__ = [
    "COMMANDS",
    "GEMINI_MODEL",
    "LOCAL_MODEL",
    "CliSettings",
    "cli",
    "default_db",
    "default_model",
    "main",
    "settings",
    "store_options",
]

#: Every command: its name, and where it is defined ("module:attribute").
COMMANDS: dict[str, str] = {
    "chat": "chatledger.cli._chat:chat",
    "ls": "chatledger.cli._browse:list_conversations",
    "show": "chatledger.cli._browse:show",
    "log": "chatledger.cli._browse:log",
    "verify": "chatledger.cli._audit:verify",
    "rebuild": "chatledger.cli._audit:rebuild",
    "fork": "chatledger.cli._branching:fork",
    "tree": "chatledger.cli._branching:tree",
    "diff": "chatledger.cli._branching:diff",
    "replay": "chatledger.cli._branching:replay",
    "export": "chatledger.cli._audit:export_",
    "import": "chatledger.cli._audit:import_",
    "erase": "chatledger.cli._erase:erase",
    "serve": "chatledger.serve.command:serve",
    "keygen": "chatledger.cli._proofs:keygen",
    "checkpoint": "chatledger.cli._proofs:checkpoint",
    "prove": "chatledger.cli._proofs:prove",
}

GEMINI_MODEL = "gemini-2.5-flash"
LOCAL_MODEL = "local"

F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------- choices


def default_model(environ: Mapping[str, str] | None = None) -> str:
    """The model of a new conversation when ``--model`` is not given: Gemini when an API
    key is set or Vertex AI is chosen (docs/chat-api.md#vertex-ai), else the embedded
    offline model (so the CLI works without an account)."""
    env = os.environ if environ is None else environ
    if env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY"):
        return GEMINI_MODEL
    vertex = env.get("GOOGLE_GENAI_USE_ENTERPRISE") or env.get("GOOGLE_GENAI_USE_VERTEXAI")
    if (vertex or "").lower() in ("true", "1"):
        return GEMINI_MODEL
    return LOCAL_MODEL


def default_db() -> Path:
    """``chatledger.db`` in the user's data directory (the folder is not created here)."""
    return Path(platformdirs.user_data_dir("chatledger", appauthor=False)) / "chatledger.db"


# --------------------------------------------------------------------------- secrets in URLs

_DSN_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def url_secrets(url: str, *, lone_user: bool = False) -> list[str]:
    """The credentials a URL (or a libpq ``key=value`` string) carries: its password and,
    with ``lone_user``, a user name given without one (``https://TOKEN@host``), as given
    and percent-decoded."""
    found = [match.group(1).strip("'") for match in _DSN_PASSWORD.finditer(url)]
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:  # an unparsable port, say: the whole user part may be a secret
        netloc = url.partition("//")[2].partition("/")[0]
        if "@" in netloc:
            found.append(netloc.rpartition("@")[0])
        user, password = None, None
    secret = password or (user if lone_user else None)
    if secret:
        found.extend((secret, unquote(secret)))
    return [value for value in found if value]


def mask_url(url: str | None, *, lone_user: bool = False) -> str | None:
    """``url`` as the command line prints it: the password of its credentials (a lone
    user name too, which is often a token) masked by
    :func:`chatledger.errors.mask_url_password`, and any other copy of the credentials
    :func:`url_secrets` finds (percent-decoded, in a libpq string) masked as ``***``."""
    if url is None:
        return None
    secrets = url_secrets(url, lone_user=lone_user)
    url = mask_url_password(url) or url
    for secret in sorted(secrets, key=len, reverse=True):
        url = url.replace(secret, "***")
    return url


def shown_location(location: object) -> str:
    """A store location (a file path or a database URL) as the command line prints it."""
    return mask_url(str(location)) or ""


# --------------------------------------------------------------------------- settings


class CliSettings:
    """The options every command takes (from the group or after the command's name), and
    the client built from them, closed when the command ends."""

    def __init__(
        self, db: str | None = None, actor: str | None = None, create_in_existing: bool = False
    ) -> None:
        self._db: str | None = None
        self.db = db
        self.actor = actor
        #: ``--create-in-existing``: add the log's tables to a database holding others.
        self.create_in_existing = create_in_existing

    @property
    def db(self) -> str | None:
        """``--db`` (or ``CHATLEDGER_DB``), if given."""
        return self._db

    @db.setter
    def db(self, value: str | None) -> None:
        for secret in url_secrets(value or ""):
            register_secret(secret)  # a database password: masked in every message
        self._db = value

    def __repr__(self) -> str:
        return f"CliSettings(db={mask_url(self.db)!r}, actor={self.actor!r})"

    def store_location(self) -> str:
        """Where the log is: ``--db``, else ``CHATLEDGER_DB``, else the default file (its
        folder created)."""
        if self.db:
            return self.db
        path = default_db()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(
                f"cannot create {path.parent} for the default database ({exc.strerror}); "
                "pass --db PATH or set CHATLEDGER_DB"
            ) from None
        return str(path)

    def missing_file(self) -> Path | None:
        """The SQLite file the log would be, if it does not exist yet in a folder that
        does (reading commands say so instead of creating an empty log)."""
        location = self.db or str(default_db())
        if location in (":memory:", "memory:", "memory://"):
            return None
        if location.startswith("sqlite://"):
            location = location[len("sqlite://") :]
            location = location[1:] if location.startswith("/") else location
            if not location or location == ":memory:":
                return None
        elif "://" in location:
            return None
        path = Path(os.path.expanduser(location))
        if path.exists():
            return None
        # A missing folder named by --db is left to the store, which says so; the default
        # folder is created on first use.
        return path if self.db is None or path.parent.is_dir() else None

    def client(
        self, *, base_url: str | None = None, timeout: float | None = None, reading: bool = False
    ) -> Client:
        """A client on the chosen store, closed when the command ends. ``reading``: the
        command only reads, so a log that does not exist is an error, not created."""
        if reading:
            missing = self.missing_file()
            if missing is not None:
                raise NotFoundError(
                    f"there is no log at {shown_location(missing)}: check --db (or CHATLEDGER_DB); "
                    "`chatledger chat` starts one"
                )
        http_options: dict[str, Any] = {}
        if base_url:
            for secret in url_secrets(base_url, lone_user=True):
                register_secret(secret)
            http_options["base_url"] = base_url
        if timeout is not None:
            http_options["timeout"] = max(1, round(timeout * 1000))  # milliseconds
        context = click.get_current_context()
        store: Any = self.store_location()
        if self.create_in_existing:
            store = context.with_resource(open_store(store, create_in_existing=True))
        client = Client(http_options=http_options or None, store=store, actor=self.actor)
        return context.with_resource(client)


def settings() -> CliSettings:
    """The settings of the command running now."""
    return click.get_current_context().ensure_object(CliSettings)


def _set_setting(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None and param.name is not None:
        setattr(ctx.ensure_object(CliSettings), param.name, value)


def store_options(command: F) -> F:
    """``--db`` and ``--actor`` on a command too, so that they may follow its name
    (``chatledger ls --db x.db``); given there, they win over the group's."""
    command = click.option(
        "--actor",
        metavar="NAME",
        expose_value=False,
        callback=_set_setting,
        help="Who is acting, recorded on every event written (as before the command).",
    )(command)
    return click.option(
        "--db",
        metavar="PATH",
        expose_value=False,
        callback=_set_setting,
        help="The event log (as before the command; either place works).",
    )(command)


def timeout_option(command: F) -> F:
    """``--timeout SECONDS`` for commands that call a model."""
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0.001, max=86_400),
        metavar="SECONDS",
        help="Give up on a model call after this long (connecting and the whole reply, "
        "every chunk of a stream included); the attempt is recorded. Default: no limit.",
    )(command)


# --------------------------------------------------------------------------- the group


class _Group(click.Group):
    """The CLI's single error boundary (library errors and refused files become
    ``Error: ...``, exit 1), and its commands, imported from :data:`COMMANDS` when first
    used."""

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
            raise CliError(exc.message) from None
        except BrokenPipeError:
            raise  # the reader went away (`chatledger log ID | head`): click exits quietly
        except OSError as exc:
            # A file the command reads or writes (stdout included) was refused.
            raise CliError(_os_error(exc)) from None


def _os_error(exc: OSError) -> str:
    what = f" {exc.filename}" if exc.filename is not None else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot use{what}: {reason}"


def _load(where: str) -> click.Command:
    module_name, _, attribute = where.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{where} is not a click command")
    return command


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
        "Default: chatledger.db in the user data directory (created on first use). May "
        "also follow the command's name."
    ),
)
@click.option(
    "--actor",
    metavar="NAME",
    help="Who is acting, recorded on every event written (default: the OS user). May "
    "also follow the command's name.",
)
@click.option(
    "--create-in-existing",
    is_flag=True,
    help="Create the log in a database that already holds another application's tables "
    "(refused otherwise, the database left unchanged).",
)
@click.pass_context
def cli(ctx: click.Context, db: str | None, actor: str | None, create_in_existing: bool) -> None:
    """Chat with Gemini (or an offline model) and keep every step in an event log.

    Conversation ids may be shortened to any unique prefix. Expected errors print
    "Error: ..." and exit with status 1; usage errors exit with status 2.
    """
    ctx.obj = CliSettings(db, actor, create_in_existing)


def main() -> None:
    """The ``chatledger`` console script."""
    cli(prog_name="chatledger")
