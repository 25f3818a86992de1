"""Looking at results: tables, charts, the markdown report, the dashboard.

This package changes when what users *see* does. It only reads studies (through
:mod:`hpo.runtime.storage` and the names in :mod:`hpo.tuning.keys`); the one thing it writes is
the dashboard's copy of the charts. It never imports torch.

* :mod:`~hpo.reporting.trials` -- what a stored study measures, its completed and best trials.
* :mod:`~hpo.reporting.tables` -- trial rows, failure groups, comparisons, CSV, cell formats.
* :mod:`~hpo.reporting.charts` -- the plotly figures, as HTML and PNG.
* :mod:`~hpo.reporting.markdown` -- ``report.md`` and ``comparison.md``.
* :mod:`~hpo.reporting.report` -- ``python -m hpo.report``.
* :mod:`~hpo.reporting.dashboard` -- ``python -m hpo.dashboard`` and its charts.
"""
