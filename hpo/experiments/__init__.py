"""Fixed-configuration comparisons: sparse CNN vs dense CNN vs dense CNN + mask.

A study *tunes* one model family; an experiment *compares* the families at one shared
configuration (``studies/experiments.py``). This package changes when the comparisons do; it
imports :mod:`hpo.training` (the fit loop), :mod:`hpo.runtime` (device, CPU settings),
``studies``, ``models`` and ``data``, never the tuning or reporting code.

* :mod:`~hpo.experiments.runner` -- train and score every missing run, append to the CSV.
* :mod:`~hpo.experiments.summary` -- the markdown tables, from the CSV.
* :mod:`~hpo.experiments.figures` -- the PNG figures.
* :mod:`~hpo.experiments.cli` -- ``python -m hpo.experiments``.
"""
