"""``python -m hpo.experiments``: the command lives in :mod:`hpo.experiments.cli`."""

import sys

from hpo.experiments.cli import main

sys.exit(main())
