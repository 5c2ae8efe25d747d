"""Hostile content for the XSS tests, and a checker that finds anything active in a page.

Every payload, if it ever ran, would set ``window.__xss`` (or change the title), which
the browser tests look for; the HTML-level checker here finds the markup itself.
"""

from __future__ import annotations

import contextlib
from html.parser import HTMLParser
from typing import Any

import chatledger
from chatledger.client.transports import ScriptedTransport
from chatledger.errors import ServerError

PAYLOADS = (
    "<script>window.__xss=1;document.title='pwned'</script>",
    '<img src=x onerror="window.__xss=2">',
    '<svg onload="window.__xss=3"><circle r="1"/></svg>',
    "[a markdown link](javascript:window.__xss=4)",
    '<a href="javascript:window.__xss=5">an html link</a>',
    '"><script>window.__xss=6</script>',
    '<iframe srcdoc="<script>parent.__xss=7</script>"></iframe>',
    "<svg><script>window.__xss=8</script></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=9>",
    "![an image](javascript:window.__xss=10)",
    '<details open ontoggle="window.__xss=11">x</details>',
    "[data](data:text/html;base64,PHNjcmlwdD5wYXJlbnQuX194c3M9MTI8L3NjcmlwdD4=)",
    '<a href="&#106;avascript:window.__xss=13">entity</a>',
    "<style>body{background:url(javascript:window.__xss=14)}</style>",
    "{{ 'ev' ~ 'aluated' }} {% raw %} ${'ev' + 'aluated'}",
)

PAYLOAD = "\n\n".join(PAYLOADS)
#: An actor name, a model name and a function name can hold markup too.
HOSTILE_NAME = '<img src=x onerror="window.__xss=20">'


def hostile_tool(query: str) -> dict[str, Any]:
    """A function whose result is hostile.

    Args:
        query: What to look up.
    """
    return {"found": PAYLOAD, "query": query}


def build_hostile(store: Any) -> dict[str, str]:
    """Conversations whose every field a page shows holds the payloads: user message,
    model reply (Markdown), function arguments and result, system instruction, model
    name, actor, a failure's message, and a fork's first message."""
    scripted = ScriptedTransport()
    client = chatledger.Client(store=store, transport=scripted, actor=HOSTILE_NAME)
    call = {"functionCall": {"name": "hostile_tool", "args": {"query": PAYLOAD}}}
    scripted.enqueue({"candidates": [{"content": {"role": "model", "parts": [call]}}]})
    scripted.enqueue(PAYLOAD)
    scripted.enqueue(
        error=ServerError(500, {"error": {"code": 500, "status": "INTERNAL", "message": PAYLOAD}})
    )
    scripted.enqueue(chunks=[PAYLOAD[:40], PAYLOAD[40:]])
    chat = client.chats.create(
        model=HOSTILE_NAME, config={"system_instruction": PAYLOAD, "tools": [hostile_tool]}
    )
    chat.send_message(PAYLOAD)
    with contextlib.suppress(ServerError):
        chat.send_message(PAYLOAD)
    fork = chat.fork(turn=1)
    for _ in fork.send_message_stream(PAYLOAD):
        pass
    client.close()
    return {"chat": chat.id, "fork": fork.id}


ALLOWED_SCRIPT = "/static/chatledger.js"
ALLOWED_STYLESHEET = "/static/chatledger.css"
ALLOWED_ICON = "/static/favicon.svg"
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "data", "poster", "srcdoc"}
FORBIDDEN_TAGS = {"iframe", "object", "embed", "img", "style", "base", "math", "frame", "video"}
SVG_TAGS = {"svg", "path", "circle", "text", "a"}


class ActiveContentFinder(HTMLParser):
    """Finds markup that could run or load something: scripts other than the page's own,
    event-handler attributes, javascript:/data: URLs, frames, images, styles, and any SVG
    but the fork tree's."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.text: list[str] = []
        self._svg_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for name, value in values.items():
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>")
            if name in URL_ATTRIBUTES:
                url = "".join(value.split()).lower()
                if url.startswith(("javascript:", "vbscript:", "data:text")):
                    self.problems.append(f"<{tag} {name}={value[:40]!r}>")
            if name == "style" and tag not in ("td", "th"):
                self.problems.append(f"<{tag} style=...>")
        if tag == "script" and values.get("src") != ALLOWED_SCRIPT:
            self.problems.append(f"<script {values}>")
        if tag == "link" and values.get("href") not in (ALLOWED_STYLESHEET, ALLOWED_ICON):
            self.problems.append(f"<link {values}>")
        if tag == "meta" and not (
            "charset" in values
            or values.get("name") in ("viewport", "referrer")
            or values.get("http-equiv") == "refresh"
        ):
            self.problems.append(f"<meta {values}>")
        if tag in FORBIDDEN_TAGS:
            self.problems.append(f"<{tag}>")
        if tag == "svg":
            if values.get("id") != "fork-tree" or self._svg_depth:
                self.problems.append(f"<svg {values}>")
            self._svg_depth += 1
        elif self._svg_depth and tag not in SVG_TAGS:
            self.problems.append(f"<{tag}> inside the tree's svg")

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg" and self._svg_depth:
            self._svg_depth -= 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def active_content(html: str) -> tuple[list[str], str]:
    """(problems found, the page's text)."""
    finder = ActiveContentFinder()
    finder.feed(html)
    finder.close()
    return finder.problems, "".join(finder.text)
