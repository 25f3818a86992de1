"""Looking at results: ``python -m hpo.report`` (tables, charts, markdown) and ``hpo.dashboard``.

It only reads studies, through :mod:`hpo.runtime.storage` and :mod:`hpo.records`, and never
imports torch.
"""
