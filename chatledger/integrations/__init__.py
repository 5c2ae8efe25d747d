"""chatledger inside other frameworks: each integration is a module of its own, imported
only when used, with its own optional extra.

- :mod:`chatledger.integrations.agents`: an openai-agents ``Session`` kept in the log
  (``pip install 'chatledger[agents]'``).
- :mod:`chatledger.integrations.langchain`: a LangChain ``BaseChatMessageHistory`` kept in
  the log (``pip install 'chatledger[langchain]'``).
- :mod:`chatledger.integrations.datasette`: what the SQL views of a SQLite log mean, as
  Datasette metadata (``pip install 'chatledger[datasette]'``); the views themselves are
  created by the store and need nothing (see ``docs/integrations.md``).

A session of another framework is a conversation of its own in the log: its items are
``session_items_added`` events, kept exactly as given; popping an item and clearing the
session are events too, so nothing is ever deleted, ``verify`` covers every item, and a
session can be forked and read as it was at any version. See ``docs/integrations.md``.

Importing this package imports none of those frameworks.
"""

from __future__ import annotations

__all__: list[str] = []
