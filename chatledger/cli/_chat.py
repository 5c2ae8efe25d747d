"""``chatledger chat``: one message, or an interactive session."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import click

from ..client import Chat
from ..errors import ChatledgerError
from ..types import GenerateContentResponse
from ._app import GEMINI_MODEL, LOCAL_MODEL, _settings, default_model
from ._ids import resolve_conversation_id
from ._render import _echo_history, render_content

__all__ = ["chat"]


def _finish_note(response: GenerateContentResponse | None) -> str | None:
    """Why a reply has no text, for stderr (a script reading stdout gets an empty line)."""
    if response is None or response.text:
        return None
    wire = response.to_wire()
    candidate = (wire.get("candidates") or [{}])[0] or {}
    reason = candidate.get("finishReason") or (wire.get("promptFeedback") or {}).get("blockReason")
    return f"(the reply has no text{f'; finish reason {reason}' if reason else ''})"


def _send(chat: Chat, message: str, *, stream: bool) -> None:
    """Send ``message`` and write the reply to stdout as it arrives, then a newline."""
    response: GenerateContentResponse | None
    if not stream:
        response = chat.send_message(message)
        click.echo(response.text or "")
    else:
        chunks: Iterator[GenerateContentResponse] = chat.send_message_stream(message)
        wrote = False
        try:
            for chunk in chunks:
                text = chunk.text
                if text:
                    click.echo(text, nl=False)
                    wrote = True
        except BaseException:
            if wrote:
                click.echo()  # end the partial line before the error is reported
            raise
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        click.echo()
        response = chat.last
    note = _finish_note(response)
    if note:
        click.echo(note, err=True)


REPL_HELP = """\
Commands:
  /history   show the conversation so far
  /rewind    take back the last turn (it stays in the log)
  /help      show this help
  /exit      quit (end of input quits too)
A line starting with // sends the rest of it starting with a single /."""


def _repl(chat: Chat, *, stream: bool) -> None:
    stdin = sys.stdin
    interactive = stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - makes input() editable, with history
    click.echo(f"conversation: {chat.id}", err=True)
    click.echo(f"Chatting with {chat.model}. Type /help for commands, /exit to quit.", err=True)
    while True:
        try:
            # input() gives line editing at a terminal; a pipe is read as it is.
            line = input("> ") + "\n" if interactive else stdin.readline()
        except (EOFError, KeyboardInterrupt):
            click.echo()
            break
        if not line:
            break
        text = line.rstrip("\r\n")
        command = text.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            break
        if command == "/help":
            click.echo(REPL_HELP)
            continue
        if command == "/history":
            contents = chat.get_history()
            _echo_history(contents)
            if not contents:
                click.echo("(the history is empty)")
            continue
        if command == "/rewind":
            try:
                user, model = chat.rewind()
            except ChatledgerError as exc:
                click.echo(f"Error: {exc.message}", err=True)
                continue
            click.echo("Took back the last turn (it stays in the log):")
            click.echo(render_content(user))
            click.echo(render_content(model))
            continue
        if command.startswith("/") and not command.startswith("//"):
            click.echo(
                f"Unknown command {command.split()[0]}; type /help for the commands.", err=True
            )
            continue
        message = text.strip()[1:] if command.startswith("//") else text
        try:
            _send(chat, message, stream=stream)
        except ChatledgerError as exc:
            # The failed attempt is in the log; the chat goes on.
            click.echo(f"Error: {exc.message}", err=True)
        except KeyboardInterrupt:
            click.echo("(interrupted; the attempt is recorded, the history unchanged)", err=True)


@click.command(short_help="Send a message, or chat interactively.")
@click.argument("message", required=False)
@click.option(
    "--id",
    "conversation_id",
    metavar="ID",
    help="Resume this conversation (a unique id prefix is enough) instead of starting one.",
)
@click.option(
    "-m",
    "--model",
    metavar="NAME",
    help=(
        f"Model of a new conversation. Default: {GEMINI_MODEL} when GEMINI_API_KEY or "
        f"GOOGLE_API_KEY is set, else {LOCAL_MODEL!r} (the embedded offline SmolLM2 model)."
    ),
)
@click.option("-s", "--system", metavar="TEXT", help="System instruction of a new conversation.")
@click.option(
    "--base-url",
    metavar="URL",
    help="Send requests to this server instead of Google's (for local or proxy servers).",
)
@click.option("--no-stream", is_flag=True, help="Wait for the whole reply instead of streaming it.")
def chat(
    message: str | None,
    conversation_id: str | None,
    model: str | None,
    system: str | None,
    base_url: str | None,
    no_stream: bool,
) -> None:
    """Send MESSAGE and print the reply, or chat interactively without MESSAGE.

    With MESSAGE, only the reply goes to stdout; the conversation id goes to stderr as
    "conversation: ID". Without MESSAGE, lines read from stdin are sent one by one;
    /history, /rewind and /exit are commands.
    """
    client = _settings().client(base_url)
    if conversation_id is not None:
        if model is not None or system is not None:
            raise click.UsageError(
                "--model and --system only apply to a new conversation; leave out --id to start one"
            )
        chat_ = client.chats.get(resolve_conversation_id(client.store, conversation_id))
    else:
        config = {"system_instruction": system} if system is not None else None
        chat_ = client.chats.create(model=model or default_model(), config=config)
    if message is None:
        _repl(chat_, stream=not no_stream)
        return
    click.echo(f"conversation: {chat_.id}", err=True)
    _send(chat_, message, stream=not no_stream)
