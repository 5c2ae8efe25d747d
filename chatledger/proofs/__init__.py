"""Proofs for auditors: an RFC 9162 Merkle tree over the log, signed checkpoints, sinks.

- :mod:`chatledger.proofs.merkle`: tree hashing, roots, inclusion and consistency proofs
  from stored complete subtrees, and their verification (pure).
- :mod:`chatledger.proofs.note`: C2SP signed notes with Ed25519 keys.
- :mod:`chatledger.proofs.checkpoint`: signed tree heads (C2SP tlog-checkpoint) and the
  JSON form of proofs.
- :mod:`chatledger.proofs.sinks`: where checkpoints are written, and a periodic
  :class:`~chatledger.proofs.sinks.Checkpointer`.

See ``docs/proofs.md`` for what a checkpoint proves and what it cannot.
"""
