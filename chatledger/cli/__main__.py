"""``python -m chatledger.cli``: the same as the ``chatledger`` script."""

from ._app import main

main()
