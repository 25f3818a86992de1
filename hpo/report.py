"""``python -m hpo.report``: the command lives in :mod:`hpo.reporting.report`."""

from hpo.reporting.report import main

if __name__ == "__main__":
    raise SystemExit(main())
