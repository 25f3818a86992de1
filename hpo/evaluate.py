"""``python -m hpo.evaluate``: the command lives in :mod:`hpo.checkpoints.evaluate`."""

import sys

from hpo.checkpoints.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
