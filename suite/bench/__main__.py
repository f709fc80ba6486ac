"""``python -m suite.bench ...``: see :mod:`suite.bench.app`; ``python -m suite.bench machine``
prints the machine probe (:mod:`suite.bench.roofline`); ``python -m suite.bench vs-probe`` times
``fused`` against this CPU's C probe (:mod:`suite.bench.vs_probe`)."""

import sys

from suite.bench.app import main

if sys.argv[1:2] == ["machine"]:
    from suite.bench.roofline import cli

    sys.exit(cli(sys.argv[2:]))
if sys.argv[1:2] == ["vs-probe"]:
    from suite.bench.vs_probe import cli as vs_probe_cli

    sys.exit(vs_probe_cli(sys.argv[2:]))
main()
