"""``python -m hpo.report``: the command lives in :mod:`hpo.reporting.report`."""

import sys

from hpo.reporting.report import main

if __name__ == "__main__":
    sys.exit(main())
