"""Turning what the log holds into what a page shows, safely.

Everything in the log is untrusted text: a user's message, a model's reply, a function's
result, an error a server sent. The rules:

- Model text is Markdown, rendered by markdown-it-py with raw HTML off and images off
  (an image would fetch a URL the model chose, which can carry data out), then cleaned
  by nh3 (the Rust ammonia sanitizer) to a short list of tags, with links limited to
  http, https and mailto and marked ``rel="noopener noreferrer nofollow"``.
- User messages, function arguments and results, errors and JSON are plain text: the
  templates escape them (Jinja2 autoescape), and they are never rendered as Markdown.
- The pages also send a Content-Security-Policy that allows only the server's own
  script file, so even a mistake here would not run a script.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

__all__ = ["ContentView", "PartView", "content_views", "pretty_json", "render_markdown"]

_MARKDOWN = (
    MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    .enable("table")
    .enable("strikethrough")
    .disable("image")
)

_TAGS = {
    "a",
    "b",
    "blockquote",
    "br",
    "code",
    "del",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "strong",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
}

_CLEANER = nh3.Cleaner(
    tags=_TAGS,
    attributes={"a": {"href", "title"}, "code": {"class"}, "th": {"style"}, "td": {"style"}},
    url_schemes={"http", "https", "mailto"},
    link_rel="noopener noreferrer nofollow",
    filter_style_properties={"text-align"},
    strip_comments=True,
)

#: Rendering a very long text as Markdown is refused: it is shown as plain text instead.
MAX_MARKDOWN = 200_000
#: JSON shown on a page is cut after this many characters (the API returns it whole).
MAX_JSON_SHOWN = 20_000


def render_markdown(text: str) -> Markup:
    """``text`` as sanitized HTML (safe to put in a page as it is)."""
    if len(text) > MAX_MARKDOWN:
        return Markup("<pre>{}</pre>").format(text)
    return Markup(_CLEANER.clean(_MARKDOWN.render(text)))  # sanitized by nh3 just now


def pretty_json(value: Any, limit: int = MAX_JSON_SHOWN) -> str:
    """Indented JSON for a page (escaped by the template), cut at ``limit`` characters."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text) - limit} more characters)"
    return text


@dataclass
class PartView:
    """One part of a content, ready for a template.

    ``kind``: ``markdown`` (``html`` is sanitized), ``text`` (escaped, whitespace kept),
    ``thought``, ``function_call``, ``function_response``, ``data`` or ``other``.
    """

    kind: str
    text: str = ""
    html: Markup | None = None
    name: str = ""
    json: str = ""


@dataclass
class ContentView:
    """One content of a history."""

    index: int
    role: str
    parts: list[PartView] = field(default_factory=list)

    @property
    def is_step(self) -> bool:
        """A function calling step (a call, or the responses to calls)."""
        return bool(self.parts) and all(
            part.kind in ("function_call", "function_response") for part in self.parts
        )


def _part_view(part: Mapping[str, Any], role: str) -> PartView:
    text = part.get("text")
    if isinstance(text, str):
        if part.get("thought"):
            return PartView(kind="thought", text=text, html=render_markdown(text))
        if role == "model":
            return PartView(kind="markdown", text=text, html=render_markdown(text))
        return PartView(kind="text", text=text)
    call = part.get("functionCall")
    if isinstance(call, Mapping):
        return PartView(
            kind="function_call",
            name=str(call.get("name", "")),
            json=pretty_json(call.get("args") or {}),
        )
    response = part.get("functionResponse")
    if isinstance(response, Mapping):
        return PartView(
            kind="function_response",
            name=str(response.get("name", "")),
            json=pretty_json(response.get("response")),
        )
    data = part.get("inlineData")
    if isinstance(data, Mapping):
        size = len(str(data.get("data") or "")) * 3 // 4
        return PartView(kind="data", text=f"inline data {data.get('mimeType')}, about {size} bytes")
    file_data = part.get("fileData")
    if isinstance(file_data, Mapping):
        return PartView(kind="data", text=f"file {file_data.get('fileUri')}")
    shown = {key: value for key, value in part.items() if key != "thoughtSignature"}
    return PartView(kind="other", json=pretty_json(shown))


def content_views(contents: Sequence[Mapping[str, Any]]) -> list[ContentView]:
    """Wire contents as views, in order."""
    views = []
    for index, content in enumerate(contents):
        role = str(content.get("role") or "?")
        parts = content.get("parts")
        views.append(
            ContentView(
                index=index,
                role=role,
                parts=[
                    _part_view(part, role)
                    for part in (parts if isinstance(parts, list) else [])
                    if isinstance(part, Mapping)
                ],
            )
        )
    return views
