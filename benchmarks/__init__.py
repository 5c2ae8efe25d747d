"""chatledger's benchmark suite against its peers: run ``make bench`` (see run.py)."""
