"""asv benchmarks of srigl-bench: speed and accuracy history across commits.

asv imports this folder as a top-level package named ``benchmarks`` and strips ``PYTHONPATH``.
So that the code measured is the code of the checkout that holds these files (a temporary git
worktree of an older commit when ``make asv-history`` backfills), the repository root that
contains this package is put first on ``sys.path`` here, ahead of the editable install in
``.venv``. ``suite.asv_tools.verify_imports`` checks this, the way asv imports the suite,
before every run.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

if str(REPO_ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(REPO_ROOT))
