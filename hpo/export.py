"""``python -m hpo.export``: the command lives in :mod:`hpo.tuning.export`."""

import sys

from hpo.tuning.export import main

if __name__ == "__main__":
    sys.exit(main())
