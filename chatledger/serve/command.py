"""The ``chatledger serve`` command. Imports the web stack only when it runs, so the CLI
works without the ``serve`` extra."""

from __future__ import annotations

import os
from typing import Any

import click

from ..errors import ChatledgerError
from .settings import DEFAULT_MAX_BODY, ServeSettings, TokenTable, load_token_file, parse_token

__all__ = ["build_settings", "serve"]


def build_settings(
    *,
    host: str,
    tokens: tuple[str, ...] = (),
    token_file: str | None = None,
    actor: str | None = None,
    read_only: bool = False,
    max_body: int = DEFAULT_MAX_BODY,
    allowed_hosts: tuple[str, ...] = (),
    default_model: str = "local",
    checkpoint_file: str | None = None,
    verifier_key: str | None = None,
) -> ServeSettings:
    """The settings the command's options describe (raises InvalidInputError)."""
    pairs = [parse_token(pair) for pair in tokens]
    if token_file is not None:
        pairs.extend(load_token_file(token_file))
    table = TokenTable(pairs)
    checkpoints = None
    if checkpoint_file is not None:
        from .audit import CheckpointFile

        key = verifier_key or os.environ.get("CHATLEDGER_VERIFIER_KEY")
        if not key:
            raise click.UsageError(
                "--checkpoint needs the log's verifier key: --verifier-key KEY (the "
                "<name>+<id>+<key> line `chatledger keygen` printed, or a file of them) or "
                "CHATLEDGER_VERIFIER_KEY"
            )
        checkpoints = CheckpointFile(checkpoint_file, key)
    elif verifier_key is not None:
        raise click.UsageError("--verifier-key goes with --checkpoint FILE")
    if actor is not None and table:
        raise click.UsageError(
            "--actor names the actor without tokens; with tokens each request acts as the "
            "owner of its token"
        )
    return ServeSettings(
        tokens=table,
        actor=actor,
        read_only=read_only,
        max_body=max_body,
        allowed_hosts=tuple(allowed_hosts) if allowed_hosts else None,
        bind_host=host,
        default_model=default_model,
        checkpoints=checkpoints,
    )


@click.command("serve", short_help="Browse the log and serve the HTTP API.")
@click.option(
    "--db",
    metavar="PATH",
    envvar="CHATLEDGER_DB",
    help="The event log (as the group's --db; either may be given).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback needs --token or --token-file.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--token",
    "tokens",
    multiple=True,
    metavar="NAME=TOKEN",
    help="An access token and the actor it acts as (repeatable). Prefer --token-file: "
    "a command line is visible to other users of this machine.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="A file of NAME=TOKEN lines ('#' comments allowed).",
)
@click.option(
    "--actor",
    metavar="NAME",
    help="Without tokens: who is recorded on every event (default: the OS user).",
)
@click.option("--read-only", is_flag=True, help="Refuse every request that would write to the log.")
@click.option(
    "-m",
    "--model",
    "default_model",
    metavar="NAME",
    help="The model offered for new conversations (default: gemini-2.5-flash with an API "
    "key, else 'local').",
)
@click.option(
    "--base-url",
    metavar="URL",
    help="Send model requests to this server instead of Google's.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="A Host header name to answer to besides localhost and the bound address "
    "(repeatable; '*' for any, only with tokens).",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1024),
    default=DEFAULT_MAX_BODY,
    show_default=True,
    help="Largest request body accepted, in bytes.",
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(dir_okay=False),
    help="Also prove, on the audit page, that the log extends every signed checkpoint in "
    "FILE (written by `chatledger checkpoint -o FILE`; read again on every audit).",
)
@click.option(
    "--verifier-key",
    metavar="KEY",
    help="The key the checkpoints must be signed with: <name>+<id>+<key>, or a file of "
    "them (or CHATLEDGER_VERIFIER_KEY).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="How much the server logs (the access log is at info); secrets are masked.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    db: str | None,
    host: str,
    port: int,
    tokens: tuple[str, ...],
    token_file: str | None,
    actor: str | None,
    read_only: bool,
    default_model: str | None,
    base_url: str | None,
    allowed_hosts: tuple[str, ...],
    max_body: int,
    checkpoint_file: str | None,
    verifier_key: str | None,
    log_level: str,
) -> None:
    """Serve the log: pages to browse, search, compare, audit and chat, and a JSON API
    (schema at /openapi.json). Listens on 127.0.0.1:8000 by default.

    Without tokens every request acts as --actor (or the OS user), and only loopback
    is allowed. With tokens, API requests send 'Authorization: Bearer TOKEN' and the
    pages ask for a token once; each event records its token's NAME.
    """
    try:
        import uvicorn

        from .app import create_app
        from .logs import log_config
    except ImportError as exc:
        raise click.ClickException(
            f"`chatledger serve` needs the 'serve' extra ({exc.name} is missing): "
            "pip install 'chatledger[serve]'"
        ) from None
    from ..cli import default_db
    from ..cli import default_model as pick_model
    from ..client import Client

    root = ctx.find_root().params
    actor = actor or root.get("actor")
    try:
        settings = build_settings(
            host=host,
            tokens=tokens,
            token_file=token_file,
            actor=actor,
            read_only=read_only,
            max_body=max_body,
            allowed_hosts=allowed_hosts,
            default_model=default_model or pick_model(),
            checkpoint_file=checkpoint_file,
            verifier_key=verifier_key,
        )
        location = db or root.get("db")
        if not location:
            path = default_db()
            path.parent.mkdir(parents=True, exist_ok=True)
            location = str(path)
        client = Client(
            http_options={"base_url": base_url} if base_url else None,
            store=location,
            actor=actor,
        )
    except ChatledgerError as exc:
        raise click.ClickException(exc.message) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot create the default database's folder ({exc.strerror}); pass --db PATH"
        ) from None
    ctx.call_on_close(client.close)
    app = create_app(client, settings)
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"chatledger serve: {client.store.location} on http://{shown}:{port}/ "
        f"({'read-only, ' if read_only else ''}"
        f"{f'{len(settings.tokens)} access tokens' if settings.tokens else 'no tokens, loopback only'})",
        err=True,
    )
    config: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "server_header": False,
        "proxy_headers": False,
        "ws": "none",
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
        "log_config": log_config(log_level),
    }
    uvicorn.run(app, **config)
    ctx.exit(0)
