"""``python -m hpo.evaluate``: the command lives in :mod:`hpo.checkpoints.evaluate`."""

from hpo.checkpoints.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
