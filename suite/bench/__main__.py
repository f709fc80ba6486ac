"""``python -m suite.bench ...``: see :mod:`suite.bench.app`; ``python -m suite.bench machine``
prints the machine probe (:mod:`suite.bench.roofline`)."""

import sys

from suite.bench.app import main

if sys.argv[1:2] == ["machine"]:
    from suite.bench.roofline import cli

    sys.exit(cli(sys.argv[2:]))
main()
