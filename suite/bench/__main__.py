"""``python -m suite.bench ...``: see :mod:`suite.bench.app`; ``python -m suite.bench machine``
prints the machine probe (:mod:`suite.bench.roofline`); ``python -m suite.bench vs-probe`` times
``fused`` against this CPU's C probe (:mod:`suite.bench.vs_probe`); ``python -m suite.bench
under-load`` pairs ``fused``'s time beside busy processes with its quiet time
(:mod:`suite.bench.under_load`)."""

import os
import sys

if sys.argv[1:2] == ["vs-probe"]:
    # before torch loads libgomp: the probe's OpenMP team spins ~20 us after a region, not
    # libgomp's default of ~ms (a block of the probe would else leave a spinning thread on the
    # second core while the next block, fused's, runs: measured 1.2-1.3x on fused at batch 256)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from suite.bench.app import main  # noqa: E402

if sys.argv[1:2] == ["machine"]:
    from suite.bench.roofline import cli

    sys.exit(cli(sys.argv[2:]))
if sys.argv[1:2] == ["vs-probe"]:
    from suite.bench.vs_probe import cli as vs_probe_cli

    sys.exit(vs_probe_cli(sys.argv[2:]))
if sys.argv[1:2] == ["under-load"]:
    from suite.bench.under_load import cli as under_load_cli

    sys.exit(under_load_cli(sys.argv[2:]))
main()
