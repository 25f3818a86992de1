"""``python -m hpo.run``: the command lives in :mod:`hpo.tuning.cli`."""

from hpo.tuning.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
