"""``python -m suite.report ...``: see :mod:`suite.report.app`."""

import sys

from suite.report.app import main

sys.exit(main())
