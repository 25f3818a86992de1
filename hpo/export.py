"""``python -m hpo.export``: the command lives in :mod:`hpo.tuning.export`."""

from hpo.tuning.export import main

if __name__ == "__main__":
    raise SystemExit(main())
