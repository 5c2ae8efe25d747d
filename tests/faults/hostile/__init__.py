"""Hostile input: whatever a caller, a stored row or an imported file throws at chatledger.

Three doors, each fuzzed with hypothesis and walked with catalogues of known-nasty values:

(a) the public API: ``send_message`` (sync, streamed, async, legacy), ``chats.create``
    (``history=``, ``config=``), ``chats.get`` / ``chats.tree`` / the CLI with random,
    wrongly typed, huge (a 10 MB inline part), deeply nested (10,000 levels), invalid
    UTF-8, lone-surrogate, control-character and SQL-looking values in every field;
(b) the event decoder: stored rows of random bytes and random JSON, through
    ``_row_to_event`` and through a real SQLite file read, verified and resumed;
(c) the importer (``import_lines`` and ``chatledger import``): random lines and forged
    exports (a field changed, lines reordered, dropped, duplicated, spliced from another
    conversation, a hash changed, a truncated last line, and a forger who recomputes the
    whole chain).

Everywhere the answer must be a clear error (a :class:`~chatledger.ChatledgerError`) or a
correct result, never another exception; and a refused input never changes the log: the
full store (every event of ``read_all``, every stream) and the bytes of the SQLite file and
its WAL are compared before and after.

What a recomputed chain can and cannot reveal is spelled out in
:mod:`chatledger.events.audit`; :func:`test_import.test_what_a_recomputed_chain_can_and_cannot_hide` checks each case.
"""
