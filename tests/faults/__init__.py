"""The fault suite: crashes, model-server faults, store faults, hostile input, secrets.

Every test here counts what it did into :mod:`tests.faults.ledger`; ``make faults`` runs
the suite at full scale and prints the table. In ``make test`` (and so in CI) the same
tests run at a small scale.
"""
