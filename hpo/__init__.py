"""Running sparse-cnn-hpo: tuning studies, training, storage and workers, reports.

One sub-package per reason to change (``docs/design.md`` is the map); the top-level modules
are the ``python -m`` commands.
"""
