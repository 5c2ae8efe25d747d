"""Google's own chat unit tests, ported to chatledger (issue 17, section 1).

- ``test_genai_*``: google-genai 3.3.0's ``google/genai/tests/chats/`` tests that run
  without the live API (``test_get_history.py``, ``test_validate_response.py``,
  ``test_continuation_token.py``).
- ``test_chatsession.py``: google-generativeai 0.8.6's ``tests/test_generative_models.py``
  tests that call ``start_chat``, and its ``generate_content`` tests that make sense
  through ``ChatSession.send_message``.

Each port keeps the original test's name, inputs and expected values; Google's mocks are
replaced by chatledger's :class:`~chatledger.client.transports.ScriptedTransport` (the
requests it records are what the mocks observed), and every chat writes a real SQLite
log. A test that fails is marked ``xfail(strict=True)`` with the reason, and listed in
``docs/differences.md``. ``python -m tests.upstream`` (``make upstream``) prints the
counts.
"""
