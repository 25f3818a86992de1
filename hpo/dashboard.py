"""``python -m hpo.dashboard``: the command lives in :mod:`hpo.reporting.dashboard`."""

from hpo.reporting.dashboard import main

if __name__ == "__main__":
    raise SystemExit(main())
