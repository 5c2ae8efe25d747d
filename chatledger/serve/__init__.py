"""``chatledger serve``: the log in a browser, and an HTTP API for chat backends.

One ASGI application (FastAPI on Starlette, run by uvicorn) serves both:

- server-rendered pages (Jinja2, autoescaped; model output rendered as Markdown by
  markdown-it-py and sanitized by nh3): conversations, histories, the event timeline,
  the fork tree, side-by-side branches, time travel, audit and a streaming chat page;
- a JSON API under ``/api`` described by the OpenAPI schema at ``/openapi.json``.

Build it with :func:`chatledger.serve.app.create_app` (needs the ``serve`` extra:
``pip install 'chatledger[serve]'``), or run ``chatledger serve --db PATH``. The rules it
keeps (loopback by default, access tokens, CSRF, read-only mode, bounded bodies,
sanitized output) are described in ``docs/serve.md``.

This package imports the web stack lazily: importing it (or the CLI, which registers
the ``serve`` command) does not need the ``serve`` extra.
"""

from __future__ import annotations

from .settings import ServeSettings, TokenTable, is_loopback_host, load_token_file, parse_token

__all__ = ["ServeSettings", "TokenTable", "is_loopback_host", "load_token_file", "parse_token"]
