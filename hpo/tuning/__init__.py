"""Tuning a study: the command line, joining the study, the objective, the search.

Changes when the *search* does: what is proposed, how a trial is trained and scored, when it
is stopped. Optuna runs the trials (``study.optimize`` in :mod:`~hpo.tuning.trial_loop`). This
``__init__`` re-exports nothing, so the command line's ``--help`` does not import torch.
"""
