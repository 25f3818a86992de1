"""Fixed-configuration comparisons: sparse CNN vs dense CNN vs dense CNN + mask.

A study *tunes* one model family; an experiment *compares* the families at one shared
configuration (``studies/experiments.py``). An experiment is itself an Optuna study whose
trials are the runs, queued with fixed parameters and trained by the tuning objective's own
train-and-score functions; this package adds the queue, the rows and the summary.

* :mod:`~hpo.experiments.runs` -- the queue, the objective, the rows of a study or a CSV.
* :mod:`~hpo.experiments.summary` -- the markdown tables, from the rows.
* :mod:`~hpo.experiments.figures` -- the plotly figures.
* :mod:`~hpo.experiments.cli` -- ``python -m hpo.experiments``.
"""
