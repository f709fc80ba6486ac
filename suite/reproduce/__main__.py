"""``python -m suite.reproduce ...``: see :mod:`suite.reproduce`."""

import sys

from suite.reproduce.app import main

sys.exit(main())
