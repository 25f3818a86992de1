"""Looking at results: tables, charts, the markdown report, the dashboard.

This package changes when what users *see* does. It only reads studies, through
:mod:`hpo.runtime.storage` and the records of :mod:`hpo.records`, and never imports torch.

* :mod:`~hpo.reporting.tables` -- what a study measures, trial rows, failure groups, CSV.
* :mod:`~hpo.reporting.charts` -- Optuna's charts with our labels, the comparison; HTML, PNG.
* :mod:`~hpo.reporting.markdown` -- ``report.md`` and ``comparison.md``.
* :mod:`~hpo.reporting.report` -- ``python -m hpo.report``.
* :mod:`~hpo.reporting.dashboard` -- ``python -m hpo.dashboard``: optuna-dashboard's app.
"""
