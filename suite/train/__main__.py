"""``python -m suite.train ...``: see :mod:`suite.train.app`."""

from suite.train.app import main

main()
