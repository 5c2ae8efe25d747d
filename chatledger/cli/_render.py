"""How the CLI shows contents and events to a person.

What a model or a file says may hold control characters: escape sequences that clear a
terminal, move its cursor, retitle its window or rewrite what a person sees. Text for a
person goes out through :func:`echo`, which shows every control character but newline
and tab as a visible escape (``\\x1b``); JSON goes out through :func:`echo_json`,
whose strings escape them as JSON does. The log itself keeps every character.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import click
import msgspec

from ..events.envelope import RecordedEvent
from ..events.kinds import (
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
from ..types import Content

__all__ = [
    "CliError",
    "echo",
    "echo_history",
    "echo_json",
    "escape_controls",
    "json_line",
    "render_content",
    "render_part",
    "shorten",
    "summarize",
    "time_of",
]

SUMMARY_WIDTH = 60

# C0 controls but tab and newline, DEL and the C1 controls (U+0080 to U+009F: a terminal
# may read U+009B as the start of an escape sequence).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# What JSON with ensure_ascii=False leaves as it is, yet a terminal or a JavaScript reader
# may act on: DEL, the C1 controls, and the line and paragraph separators.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with each control character but newline and tab shown as ``\\xNN`` (a
    ``\\r\\n`` line end becomes a newline)."""
    text = text.replace("\r\n", "\n")
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


class CliError(click.ClickException):
    """An expected failure: ``Error: <message>`` on stderr, exit status 1. The message
    may quote a file name or a value, so its control characters are escaped."""

    def __init__(self, message: str) -> None:
        super().__init__(escape_controls(message))


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Write text meant for a person: control characters escaped (see the module)."""
    click.echo(escape_controls(text), err=err, nl=nl)


def json_line(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON (non-ASCII text kept readable, every control character escaped)."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def echo_json(value: Any) -> None:
    """Write ``value`` as indented JSON."""
    click.echo(json_line(value, indent=2))


def shorten(text: str, width: int = SUMMARY_WIDTH) -> str:
    """``text`` on one line, at most ``width`` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _quote(text: str, width: int = SUMMARY_WIDTH) -> str:
    return json.dumps(shorten(text, width), ensure_ascii=False)


def _compact_json(value: Any, width: int = SUMMARY_WIDTH) -> str:
    return shorten(json.dumps(value, ensure_ascii=False, separators=(",", ":")), width)


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


def echo_history(contents: list[Content]) -> None:
    """Each content as :func:`render_content` shows it, each ending with a newline."""
    for content in contents:
        echo(render_content(content).rstrip("\n"))


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
    return shorten("; ".join(render_part(p) for p in parts)) if parts else "(no parts)"


def _error_text(message: str, code: str) -> str:
    """A recorded error's message; an API error's is the server's own words, quoted."""
    return _quote(message) if code else shorten(message)


def time_of(iso: str) -> str:
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
        return f"turn {data.turn}: {shorten(data.reason)}"
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
