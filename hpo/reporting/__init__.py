"""Looking at results: ``python -m hpo.report`` and ``python -m hpo.dashboard``. Reads studies
only, through :mod:`hpo.runtime.storage` and :mod:`hpo.records`; never imports torch."""
