"""``chatledger chat``: one message, or an interactive session."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click

from ..client import Chat, Client
from ..errors import ChatledgerError, InvalidInputError, NotFoundError
from ..types import GenerateContentResponse, PartUnionDict
from ._app import (
    GEMINI_MODEL,
    LOCAL_MODEL,
    default_model,
    settings,
    shown_location,
    store_options,
    timeout_option,
)
from ._ids import resolve_conversation_id
from ._inputs import MAX_INPUT_BYTES, Inputs, checked_text
from ._render import echo, echo_history, render_content

__all__ = ["chat"]


def _finish_note(response: GenerateContentResponse | None) -> str | None:
    """Why a reply has no text, for stderr (a script reading stdout gets an empty line)."""
    if response is None or response.text:
        return None
    wire = response.to_wire()
    candidate = (wire.get("candidates") or [{}])[0] or {}
    reason = candidate.get("finishReason") or (wire.get("promptFeedback") or {}).get("blockReason")
    return f"(the reply has no text{f'; finish reason {reason}' if reason else ''})"


def _send(chat: Chat, message: str | list[PartUnionDict], *, stream: bool) -> None:
    """Send ``message`` and write the reply to stdout as it arrives, then a newline."""
    response: GenerateContentResponse | None
    if not stream:
        response = chat.send_message(message)
        echo(response.text or "")
    else:
        chunks: Iterator[GenerateContentResponse] = chat.send_message_stream(message)
        wrote = False
        try:
            for chunk in chunks:
                text = chunk.text
                if text:
                    echo(text, nl=False)
                    wrote = True
        except BaseException:
            if wrote:
                echo()  # end the partial line before the error is reported
            raise
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        echo()
        response = chat.last
    note = _finish_note(response)
    if note:
        echo(note, err=True)


class _Conversation:
    """The conversation a ``chat`` command talks to: resumed, or created on first use
    (so that a session that sends nothing, or only invalid input, writes nothing)."""

    def __init__(
        self, client: Client, chat: Chat | None, model: str, config: dict[str, Any] | None
    ) -> None:
        self.client = client
        self.chat = chat
        self.model = model
        self.config = config
        if chat is not None:
            echo(f"conversation: {chat.id}", err=True)

    def get(self) -> Chat:
        if self.chat is None:
            self.chat = self.client.chats.create(model=self.model, config=self.config)
            echo(f"conversation: {self.chat.id}", err=True)
        return self.chat


REPL_HELP = """\
Commands:
  /history   show the conversation so far
  /rewind    take back the last turn (it stays in the log)
  /help      show this help
  /exit      quit (end of input quits too)
A line starting with // sends the rest of it starting with a single /."""


def _repl(conversation: _Conversation, *, stream: bool) -> None:
    stdin = sys.stdin
    interactive = stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - makes input() editable, with history
    echo(f"Chatting with {conversation.model}. Type /help for commands, /exit to quit.", err=True)
    while True:
        try:
            # input() gives line editing at a terminal; a pipe is read as it is, bytes
            # that are not UTF-8 kept (as surrogates) for checked_text to name.
            if interactive:
                line = input("> ") + "\n"
            else:
                line = stdin.buffer.readline().decode("utf-8", "surrogateescape")
        except (EOFError, KeyboardInterrupt):
            echo()
            break
        except UnicodeDecodeError as exc:
            echo(f"Error: the line is not valid UTF-8 text ({exc.reason}); type it again", err=True)
            continue
        if not line:
            break
        text = line.rstrip("\r\n")
        command = text.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            break
        if command == "/help":
            echo(REPL_HELP)
            continue
        chat = conversation.chat
        if command == "/history":
            contents = chat.get_history() if chat is not None else []
            echo_history(contents)
            if not contents:
                echo("(the history is empty)")
            continue
        if command == "/rewind":
            try:
                if chat is None:
                    raise InvalidInputError("nothing to rewind: no message was sent yet")
                user, model = chat.rewind()
            except ChatledgerError as exc:
                echo(f"Error: {exc.message}", err=True)
                continue
            echo("Took back the last turn (it stays in the log):")
            echo(render_content(user))
            echo(render_content(model))
            continue
        if command.startswith("/") and not command.startswith("//"):
            echo(f"Unknown command {command.split()[0]}; type /help for the commands.", err=True)
            continue
        message = text.strip()[1:] if command.startswith("//") else text
        try:
            checked_text(message, "the line")  # before a new conversation is recorded
            _send(conversation.get(), message, stream=stream)
        except ChatledgerError as exc:
            # The failed attempt is in the log; the chat goes on.
            echo(f"Error: {exc.message}", err=True)
        except KeyboardInterrupt:
            echo("(interrupted; the attempt is recorded, the history unchanged)", err=True)


@click.command(short_help="Send a message, or chat interactively.")
@click.argument("message", required=False)
@click.option(
    "--id",
    "conversation_id",
    metavar="ID",
    help="Resume this conversation (a unique id prefix is enough) instead of starting one.",
)
@click.option(
    "-c",
    "--continue",
    "continue_",
    is_flag=True,
    help="Resume the most recently updated conversation.",
)
@click.option(
    "-m",
    "--model",
    metavar="NAME",
    help=(
        f"Model of a new conversation. Default: {GEMINI_MODEL} when GEMINI_API_KEY or "
        f"GOOGLE_API_KEY is set (or GOOGLE_GENAI_USE_VERTEXAI=true), else {LOCAL_MODEL!r} "
        "(the embedded offline SmolLM2 model)."
    ),
)
@click.option("-s", "--system", metavar="TEXT", help="System instruction of a new conversation.")
@click.option(
    "-a",
    "--attach",
    "attachments",
    multiple=True,
    metavar="FILE",
    help=f"Attach an image (PNG, JPEG, WebP, HEIC, HEIF) or a PDF to MESSAGE as inline data "
    f"(repeatable; {MAX_INPUT_BYTES // 2**20} MiB in all, stdin included).",
)
@click.option(
    "--base-url",
    metavar="URL",
    help="Send requests to this server instead of Google's (for local or proxy servers).",
)
@timeout_option
@click.option("--no-stream", is_flag=True, help="Wait for the whole reply instead of streaming it.")
@store_options
def chat(
    message: str | None,
    conversation_id: str | None,
    continue_: bool,
    model: str | None,
    system: str | None,
    attachments: tuple[str, ...],
    base_url: str | None,
    timeout: float | None,
    no_stream: bool,
) -> None:
    """Send MESSAGE and print the reply, or chat interactively without MESSAGE.

    With MESSAGE, only the reply goes to stdout; the conversation id goes to stderr as
    "conversation: ID". Text piped on stdin is sent with MESSAGE, before it
    (`cat notes.txt | chatledger chat "Summarise this."`). Without MESSAGE, lines read
    from stdin are sent one by one; /history, /rewind and /exit are commands.

    Everything is checked before anything is written: input that cannot be sent leaves
    no conversation behind, and a new conversation is recorded with its first message.
    """
    if conversation_id is not None and continue_:
        raise click.UsageError("give --id ID or --continue, not both")
    if (conversation_id is not None or continue_) and (model is not None or system is not None):
        raise click.UsageError(
            "--model and --system only apply to a new conversation; leave out --id and "
            "--continue to start one"
        )
    if attachments and message is None:
        raise click.UsageError("--attach needs a MESSAGE to go with it")
    inputs = Inputs()
    if message is not None:
        checked_text(message, "MESSAGE")
        if not sys.stdin.isatty():
            inputs.add_stdin(sys.stdin.buffer)
        for path in attachments:
            inputs.add_file(path)
    if system is not None:
        checked_text(system, "--system")
    if base_url is not None and not checked_text(base_url, "--base-url").isprintable():
        raise InvalidInputError(f"--base-url holds a control character: {base_url!r:.200}")

    client = settings().client(base_url=base_url, timeout=timeout)
    chat_: Chat | None = None
    if conversation_id is not None:
        chat_ = client.chats.get(resolve_conversation_id(client.store, conversation_id))
    elif continue_:
        latest = client.chats.list(limit=1)
        if not latest:
            raise NotFoundError(
                f"there is no conversation to continue in {shown_location(client.store.location)}; start "
                "one with `chatledger chat MESSAGE`"
            )
        chat_ = client.chats.get(latest[0].conversation_id)
    config = {"system_instruction": system} if system is not None else None
    conversation = _Conversation(client, chat_, model or default_model(), config)
    if message is None:
        _repl(conversation, stream=not no_stream)
        return
    _send(conversation.get(), inputs.message(message), stream=not no_stream)
