"""Script tags, event handlers, javascript: links and SVG payloads through every page:
nothing active comes out, and the payload is still shown (as text)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import chatledger
from chatledger.client.transports import ScriptedTransport
from chatledger.serve.render import content_views, render_markdown
from chatledger.serve.settings import ServeSettings, TokenTable

from .hostile import HOSTILE_NAME, PAYLOAD, PAYLOADS, active_content, build_hostile
from .support import Served, serve_in_thread


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, dict[str, str]]]:
    db = str(tmp_path_factory.mktemp("hostile") / "hostile.db")
    ids = build_hostile(db)
    client = chatledger.Client(store=db, transport=ScriptedTransport(), actor="viewer")
    with client, serve_in_thread(client) as served:
        yield served, ids


def pages(ids: dict[str, str]) -> list[str]:
    chat, fork = quote(ids["chat"]), quote(ids["fork"])
    payload = quote(PAYLOAD[:190])
    return [
        "/",
        f"/?q={quote('script')}",
        f"/?q={payload}",
        f"/?model={quote(HOSTILE_NAME)}",
        f"/?actor={quote(HOSTILE_NAME)}",
        f"/c/{chat}",
        f"/c/{chat}?view=full",
        f"/c/{chat}?view=context",
        f"/c/{chat}?view=full&as_of=8",
        f"/c/{chat}/events",
        f"/c/{chat}/events?type=function_responded&type={quote('<script>')}",
        f"/c/{chat}/tree",
        f"/c/{fork}/tree",
        f"/diff?a={chat}&b={fork}",
        f"/c/{chat}/audit",
        f"/c/{fork}/chat",
        f"/c/{chat}/chat",
        "/audit",
        f"/c/{quote(PAYLOAD[:150], safe='')}",
        f"/diff?a={chat}&b={quote(PAYLOADS[0])}",
        f"/nothing/{quote(PAYLOADS[1])}",
    ]


def test_no_page_carries_active_content(hostile: tuple[Served, dict[str, str]]) -> None:
    served, ids = hostile
    shown = 0
    for path in pages(ids):
        response = served.http.get(path)
        assert response.status_code in (200, 400, 404), (path, response.status_code)
        assert response.headers["content-type"].startswith("text/html"), path
        problems, text = active_content(response.text)
        assert problems == [], (path, problems)
        if "window.__xss=1" in text:
            shown += 1
    # The payload is shown as text on the pages that show messages (not dropped).
    assert shown >= 8


def test_the_payload_is_escaped_where_it_is_text(hostile: tuple[Served, dict[str, str]]) -> None:
    served, ids = hostile
    html = served.http.get(f"/c/{ids['chat']}?view=full").text
    # The user message and the function result are text: escaped, never rendered.
    assert "&lt;script&gt;window.__xss=1" in html
    assert "&lt;svg onload=" in html
    # The model's Markdown lost its scripts, handlers and javascript: links.
    _, text = active_content(html)
    assert "a markdown link" in text and "an html link" in text
    # Template syntax in the log is not evaluated.
    assert "{{ 'ev' ~ 'aluated' }}" in text and "evaluated" not in text


def test_error_pages_and_api_errors_do_not_reflect_markup(
    hostile: tuple[Served, dict[str, str]],
) -> None:
    served, _ = hostile
    api = served.http.get(f"/api/conversations/{quote(PAYLOADS[0], safe='')}")
    assert api.headers["content-type"] == "application/json"
    page = served.http.get(f"/c/{quote(PAYLOADS[0], safe='')}")
    assert page.status_code == 404
    assert "<script>window" not in page.text and "&lt;script&gt;" in page.text


def test_a_hostile_actor_name_is_escaped_in_the_header(tmp_path: Path) -> None:
    client = chatledger.Client(store=str(tmp_path / "a.db"), transport=ScriptedTransport())
    settings = ServeSettings(
        tokens=TokenTable([("<b onclick=x>eve</b>", "eve-token-0123456789abcdef")])
    )
    with client, serve_in_thread(client, settings) as served:
        login = served.http.get("/login")
        csrf = login.text.split('name="csrf" value="')[1].split('"')[0]
        signed_in = served.http.post(
            "/login",
            data={"csrf": csrf, "token": "eve-token-0123456789abcdef", "next": "/"},
            headers={"Origin": served.base_url},
        )
        assert signed_in.status_code == 303
        page = served.http.get("/")
        problems, text = active_content(page.text)
        assert problems == [] and "<b onclick=x>eve</b>" in text


def test_render_markdown_keeps_formatting_and_drops_everything_active() -> None:
    html = str(render_markdown("**bold** [ok](https://example.com) `x<y`\n\n" + PAYLOAD))
    assert "<strong>bold</strong>" in html
    assert 'href="https://example.com"' in html and 'rel="noopener noreferrer nofollow"' in html
    assert "<code>x&lt;y</code>" in html
    problems, _ = active_content(html)
    assert problems == []
    for tag in ("<script", "<svg", "<img", "<iframe", "<style", "<math", "<details"):
        assert tag not in html


def test_user_text_and_function_results_are_never_markdown() -> None:
    views = content_views(
        [
            {"role": "user", "parts": [{"text": "**not bold** <b>x</b>"}]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "f", "response": {"r": "<b>x</b>"}}}],
            },
        ]
    )
    assert views[0].parts[0].kind == "text" and views[0].parts[0].html is None
    assert views[1].parts[0].kind == "function_response" and "<b>x</b>" in views[1].parts[0].json
