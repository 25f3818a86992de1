"""Running sparse-cnn-hpo: one sub-package per reason to change (``docs/design.md`` is the
map); the top-level modules are the ``python -m`` commands."""
