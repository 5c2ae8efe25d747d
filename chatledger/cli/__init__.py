"""The ``chatledger`` command line: chat with, list, show, log, fork, compare, replay,
verify, export and import conversations (see docs/cli.md).

The package is split by job: :mod:`._app` (the group, its options and error boundary,
and the registry of commands), :mod:`._render` (what a person sees), :mod:`._ids`
(conversation ids as typed), and one module per family of commands.
"""

from ._app import COMMANDS, cli, default_db, default_model, main
from ._ids import resolve_conversation_id
from ._render import render_content, render_part, summarize

__all__ = [
    "COMMANDS",
    "cli",
    "default_db",
    "default_model",
    "main",
    "render_content",
    "render_part",
    "resolve_conversation_id",
    "summarize",
]
