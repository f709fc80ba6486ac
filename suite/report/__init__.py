"""Reports: ``python -m suite.report`` (entry point in :mod:`suite.report.app`).

Modules: ``app`` (command line, writes REPORT.md, tables and figures), ``frames`` (result
records -> pandas data frames, reference figures), ``claims`` (paired differences over seeds
with 95% intervals and verdicts: every accuracy claim the report and README make), ``figures``
(seaborn figures), ``render``
(Markdown tables, the Jinja2 templates of ``templates/``),
``reference/`` (the papers' figures as CSV). The public names of ``app`` are re-exported lazily.
"""

from __future__ import annotations

from suite import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    "suite.report.app",
    ("InvalidStoreError", "Report", "ReportError", "build_report", "load_store", "main"),
)
