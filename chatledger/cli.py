"""The ``chatledger`` command line: chat with, list, show, log, fork, compare, replay,
verify, export and import conversations.

Every command opens the log given by ``--db`` (else ``CHATLEDGER_DB``, else a file in the
user's data directory). Expected failures (every :class:`~chatledger.errors.ChatledgerError`)
are turned into ``Error: <message>`` and exit status 1 in one place, :class:`_Group`;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import msgspec
import platformdirs

from ._version import __version__
from .client import Chat, Client
from .client._conversation import verify_log
from .client._replay import replay_conversation
from .errors import ChatledgerError, InvalidInputError, NotFoundError
from .events.audit import export_conversation, import_lines
from .events.envelope import RecordedEvent, validate_conversation_id
from .events.kinds import (
    ConfigChanged,
    ConversationStarted,
    FunctionCalled,
    FunctionResponded,
    HistoryReplaced,
    ModelCallFailed,
    ModelCallStarted,
    ModelResponded,
    TurnAbandoned,
    TurnRewound,
    UnknownEvent,
    UserMessageAdded,
)
from .events.store import EventStore
from .serve.command import serve as serve_command
from .types import Content, GenerateContentResponse

__all__ = ["cli", "default_db", "default_model", "main", "resolve_conversation_id"]

GEMINI_MODEL = "gemini-2.5-flash"
LOCAL_MODEL = "local"
SUMMARY_WIDTH = 60


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


def resolve_conversation_id(store: EventStore, prefix: str) -> str:
    """The one conversation whose id is ``prefix`` or starts with it."""
    if not prefix.strip():
        raise InvalidInputError(
            "the conversation id must not be empty; list ids with `chatledger ls`"
        )
    # A shell passes bytes that are not UTF-8 as lone surrogates: refuse them (and control
    # characters) here, with the rule, rather than in the database driver.
    validate_conversation_id(prefix)
    if store.stream_info(prefix) is not None:
        return prefix
    matches = sorted(
        info.conversation_id
        for info in store.conversations()
        if info.conversation_id.startswith(prefix)
    )
    if not matches:
        raise NotFoundError(
            f"no conversation id starts with {prefix!r} in {store.location}; "
            "list them with `chatledger ls`"
        )
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise InvalidInputError(
            f"{prefix!r} is ambiguous: it starts {len(matches)} conversation ids ({shown}); "
            "give more of the id"
        )
    return matches[0]


# --------------------------------------------------------------------------- plumbing


class _Group(click.Group):
    """The CLI's single error boundary: library errors become ``Error: ...``, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChatledgerError as exc:
            raise click.ClickException(exc.message) from None


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


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _shorten(text: str, width: int = SUMMARY_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _quote(text: str, width: int = SUMMARY_WIDTH) -> str:
    return json.dumps(_shorten(text, width), ensure_ascii=False)


def _compact_json(value: Any, width: int = SUMMARY_WIDTH) -> str:
    return _shorten(json.dumps(value, ensure_ascii=False, separators=(",", ":")), width)


# --------------------------------------------------------------------------- rendering


def render_part(part: Mapping[str, Any]) -> str:
    """One wire part as a line or block a person can read."""
    pieces: list[str] = []
    for key, raw in part.items():
        value: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        if key == "text":
            text = str(raw)
            pieces.append(f"[thought] {text}" if part.get("thought") else text)
        elif key == "functionCall":
            pieces.append(f"→ {value.get('name')}({_compact_json(value.get('args') or {}, 200)})")
        elif key == "functionResponse":
            pieces.append(f"← {value.get('name')}: {_compact_json(value.get('response'), 200)}")
        elif key == "inlineData":
            size = len(value.get("data") or "") * 3 // 4
            pieces.append(f"[inline data {value.get('mimeType')}, about {size} bytes]")
        elif key == "fileData":
            mime = f" {value['mimeType']}" if value.get("mimeType") else ""
            pieces.append(f"[file {value.get('fileUri')}{mime}]")
        elif key == "executableCode":
            pieces.append(f"[code {value.get('language', '')}]\n{value.get('code', '')}")
        elif key == "codeExecutionResult":
            pieces.append(f"[code result {value.get('outcome', '')}] {value.get('output', '')}")
        elif key in ("thought", "thoughtSignature"):
            continue
        else:
            pieces.append(f"[{key}: {_compact_json(raw)}]")
    return "\n".join(pieces) if pieces else "[empty part]"


def render_content(content: Content | Mapping[str, Any]) -> str:
    """``role: part`` with further parts and lines indented under it."""
    wire = content.to_wire() if isinstance(content, Content) else content
    role = str(wire.get("role") or "?")
    parts = wire.get("parts") or []
    indent = " " * (len(role) + 2)
    body = "\n".join(render_part(part) for part in parts) if parts else "(no parts)"
    return f"{role}: " + body.replace("\n", "\n" + indent)


def _echo_history(contents: list[Content]) -> None:
    for content in contents:
        click.echo(render_content(content))


def _wire_text(content: Mapping[str, Any] | None) -> str:
    """What a content says, in one line: its text, else its calls and other parts."""
    if not content:
        return ""
    parts = content.get("parts") or []
    text = "".join(
        str(p["text"]) for p in parts if isinstance(p.get("text"), str) and not p.get("thought")
    )
    if text:
        return _quote(text)
    return _shorten("; ".join(render_part(p) for p in parts)) if parts else "(no parts)"


def _error_text(message: str, code: str) -> str:
    """A recorded error's message; an API error's is the server's own words, quoted."""
    return _quote(message) if code else _shorten(message)


def _time(iso: str) -> str:
    """A stored UTC timestamp to the second: ``2025-01-31T12:00:00Z``."""
    return iso[:19] + "Z" if len(iso) >= 19 else iso


def _response_summary(response: Mapping[str, Any]) -> str:
    candidates = response.get("candidates") or [{}]
    candidate = candidates[0] or {}
    summary = _wire_text(candidate.get("content")) or "(no content)"
    if candidate.get("finishReason"):
        summary += f" finish={candidate['finishReason']}"
    tokens = (response.get("usageMetadata") or {}).get("totalTokenCount")
    if tokens is not None:
        summary += f" tokens={tokens}"
    return summary


def summarize(event: RecordedEvent) -> str:
    """A short one-line description of an event's data."""
    try:
        return _summarize(event)
    except (AttributeError, TypeError, KeyError, IndexError):
        # Stored responses are kept as the server sent them; an odd shape must not stop
        # an audit, so it is shown as it is.
        return _compact_json(event.to_export()["data"])


def _summarize(event: RecordedEvent) -> str:
    data = event.data
    if isinstance(data, ConversationStarted):
        text = f"model={data.model}"
        system = (data.config or {}).get("systemInstruction")
        if system:
            text += (
                f" system={_wire_text(system) if isinstance(system, dict) else _quote(str(system))}"
            )
        if data.history:
            text += f" history={len(data.history)} contents"
        if data.parent is not None:
            text += f" forked from {data.parent.conversation_id} v{data.parent.version}"
        return text
    if isinstance(data, UserMessageAdded):
        return f"turn {data.turn}: {_wire_text(data.content)}"
    if isinstance(data, ModelCallStarted):
        streamed = " streamed" if data.streamed else ""
        return f"turn {data.turn}: {data.model} attempt {data.attempt}{streamed}, {data.contents_count} contents"
    if isinstance(data, ModelResponded):
        return f"turn {data.turn}: {_response_summary(data.response)} ({data.latency_ms:.0f} ms)"
    if isinstance(data, ModelCallFailed):
        error = data.error
        code = " ".join(str(x) for x in (error.code, error.status) if x is not None)
        text = f"turn {data.turn}: {error.kind}{' ' + code if code else ''}: {_error_text(error.message, code)}"
        if data.partial:
            text += f" partial={_response_summary(data.partial)}"
        return text
    if isinstance(data, FunctionCalled):
        return f"turn {data.turn}: {data.name}({_compact_json(data.args)})"
    if isinstance(data, FunctionResponded):
        outcome = f"error {_quote(data.error)}" if data.error else _compact_json(data.response)
        return f"turn {data.turn}: {data.name} → {outcome}"
    if isinstance(data, TurnRewound):
        return f"turn {data.turn} taken back"
    if isinstance(data, TurnAbandoned):
        return f"turn {data.turn}: {_shorten(data.reason)}"
    if isinstance(data, ConfigChanged):
        changes = []
        if data.model is not None:
            changes.append(f"model={data.model}")
        if data.config is not None:
            changes.append(f"config={_compact_json(data.config)}")
        return " ".join(changes) or "config cleared"
    if isinstance(data, HistoryReplaced):
        return f"history set to {len(data.history)} contents"
    if isinstance(data, UnknownEvent):
        return _compact_json(data.data)
    return _compact_json(msgspec.to_builtins(data))


# --------------------------------------------------------------------------- chatting


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


@cli.command(short_help="Send a message, or chat interactively.")
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


@cli.command("ls")
@click.option(
    "-n", "--limit", type=click.IntRange(min=1), metavar="N", help="Show at most N conversations."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def list_conversations(limit: int | None, as_json: bool) -> None:
    """List conversations, most recently updated first."""
    client = _settings().client()
    summaries = client.chats.list(limit=limit)
    if as_json:
        _echo_json([msgspec.to_builtins(summary) for summary in summaries])
        return
    if not summaries:
        click.echo(f"No conversations in {client.store.location}.", err=True)
        return
    rows = [("ID", "MODEL", "TURNS", "UPDATED")] + [
        (s.conversation_id, s.model, str(s.turns), _time(s.updated_at)) for s in summaries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}")


@cli.command()
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
def show(conversation_id: str, mode: str, as_json: bool) -> None:
    """Show the history of conversation ID."""
    client = _settings().client()
    chat_ = client.chats.get(resolve_conversation_id(client.store, conversation_id))
    if mode == "context":
        contents = chat_.get_context()
    else:
        contents = chat_.get_history(curated=mode == "curated")
    if as_json:
        _echo_json([content.to_wire() for content in contents])
        return
    _echo_history(contents)
    if not contents:
        click.echo(f"(the {mode} history of {chat_.id} is empty)", err=True)


@cli.command()
@click.argument("conversation_id", metavar="ID")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print each event's full envelope as one JSON object per line.",
)
def log(conversation_id: str, as_json: bool) -> None:
    """Show the events of conversation ID, oldest first."""
    client = _settings().client()
    events = client.store.read(resolve_conversation_id(client.store, conversation_id))
    for event in events:
        if as_json:
            click.echo(json.dumps(event.to_export(), ensure_ascii=False))
        else:
            click.echo(
                f"{event.version:>4}  {_time(event.recorded_at)}  {event.actor or '-'}  "
                f"{event.type:<20}  {summarize(event)}"
            )


@cli.command()
@click.argument("conversation_id", metavar="[ID]", required=False)
@click.option(
    "--rebuild-snapshots",
    is_flag=True,
    help="Write again, from the log, every snapshot that does not match it (instead of "
    "reporting it).",
)
@click.pass_context
def verify(ctx: click.Context, conversation_id: str | None, rebuild_snapshots: bool) -> None:
    """Check the hash chains of conversation ID, or of the whole log, and that every
    snapshot (kept for long conversations) holds what the events give.

    Prints what was checked and every problem found; exits with status 1 when there
    are problems.
    """
    client = _settings().client()
    store = client.store
    target = resolve_conversation_id(store, conversation_id) if conversation_id else None
    report = verify_log(store, target, rebuild_snapshots=rebuild_snapshots)
    snapshots = (
        f" and {report.snapshots_checked} snapshot{'s' if report.snapshots_checked != 1 else ''}"
        if report.snapshots_checked
        else ""
    )
    click.echo(
        f"Checked {report.events_checked} events in {report.streams_checked} "
        f"conversation{'s' if report.streams_checked != 1 else ''}{snapshots} of {store.location}."
    )
    for problem in report.problems:
        click.echo(f"Problem: {problem}")
    if report.problems:
        count = len(report.problems)
        click.echo(f"{count} problem{'s' if count != 1 else ''} found.", err=True)
        ctx.exit(1)
    click.echo("No problems found.")


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command("export")
@click.argument("conversation_id", metavar="ID")
@click.option("--forks", is_flag=True, help="Include every conversation forked from it.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to this file instead of stdout.",
)
def export_(conversation_id: str, forks: bool, output: str | None) -> None:
    """Export conversation ID as JSON lines with hashes, verifiable without chatledger.

    A fork's export starts with its ancestors' events up to the fork point, so it
    verifies on its own (see examples/verify_export.py).
    """
    client = _settings().client()
    target = resolve_conversation_id(client.store, conversation_id)
    lines = export_conversation(client.store, target, include_forks=forks)
    count = 0
    with contextlib.ExitStack() as stack:
        handle = stack.enter_context(open(output, "w", encoding="utf-8")) if output else None
        for line in lines:
            if handle is not None:
                handle.write(line + "\n")
            else:
                click.echo(line)
            count += 1
    click.echo(f"exported {count} events", err=True)


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def import_(file: str) -> None:
    """Import an export FILE: everything is verified first, and nothing is written
    unless the whole file is sound. Conversations already present are left as they are."""
    client = _settings().client()
    with open(file, "rb") as handle:
        report = import_lines(client.store, handle)
    click.echo(
        f"Imported {report.events} events of {len(report.conversations)} conversations "
        f"into {client.store.location}."
    )
    for cid in report.already_present:
        click.echo(f"Already present: {cid}")


cli.add_command(serve_command)  # chatledger/serve/command.py: imports the web stack lazily


def main() -> None:
    """The ``chatledger`` console script."""
    cli(prog_name="chatledger")


if __name__ == "__main__":
    main()
