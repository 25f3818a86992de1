"""Running sparse-cnn-hpo: tuning studies, training, storage and workers, reports.

Sub-packages, one per reason to change (``docs/design.md`` is the map): ``hpo.tuning`` (the
search: CLI, worker loop, objective, budget), ``hpo.training`` (the one fit loop),
``hpo.runtime`` (storage, processes, device, CPU settings, Optuna's private API),
``hpo.reporting`` (tables, charts, report, dashboard) and ``hpo.experiments`` (fixed
comparisons); ``hpo.errors`` is shared. ``hpo.run``, ``hpo.report`` and ``hpo.dashboard`` are
the ``python -m`` entry points.
"""
