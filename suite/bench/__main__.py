"""``python -m suite.bench ...``: see :mod:`suite.bench.app`."""

from suite.bench.app import main

main()
