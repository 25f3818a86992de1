"""``python -m hpo.experiments``: the command lives in :mod:`hpo.experiments.cli`."""

from hpo.experiments.cli import main

raise SystemExit(main())
