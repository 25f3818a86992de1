"""Tuning a study: the command line, the worker loop, the objective, the search and budget.

This package changes when the *search* does: what is proposed, how a trial is trained and
scored, when it is stopped, how many run. It imports :mod:`hpo.training` (the fit loop),
:mod:`hpo.runtime` (storage, processes, device), ``studies`` (the definitions), ``models`` and
``data``; nothing imports it except the entry points and :mod:`hpo.reporting`, which reads the
storage vocabulary of :mod:`hpo.tuning.keys` and :class:`hpo.tuning.budget.TrialCounts`.

Modules (import from them directly; this ``__init__`` stays empty so that reading
:mod:`~hpo.tuning.keys` does not import torch):

* :mod:`~hpo.tuning.cli` -- ``python -m hpo.run``: arguments, settings, K workers, exit codes.
* :mod:`~hpo.tuning.settings` -- :class:`RunSettings`, one worker's resolved, picklable run.
* :mod:`~hpo.tuning.worker` -- the trial loop of one worker, and how each trial ends.
* :mod:`~hpo.tuning.study_setup` -- creating or joining a study and its queue, exactly once.
* :mod:`~hpo.tuning.search` -- the sampler (TPE, telling its proposals from random draws).
* :mod:`~hpo.tuning.pruning` -- the pruners (ASHA by default) and the chance-level rule.
* :mod:`~hpo.tuning.budget` -- exactly ``--n-trials`` finished trials across workers.
* :mod:`~hpo.tuning.objective` -- one trial: build, fit, report, prune, score, save.
* :mod:`~hpo.tuning.trial_data` -- the data a worker loads once, and fixed-mask evaluation.
* :mod:`~hpo.tuning.artifacts` -- model checkpoints as Optuna artifacts.
* :mod:`~hpo.tuning.export` -- ``python -m hpo.export``: a trial's checkpoint as a file.
* :mod:`~hpo.tuning.finalize` -- the best trial scored on the test split, once.
* :mod:`~hpo.tuning.estimate` -- what the run will cost, measured first, then an ETA.
* :mod:`~hpo.tuning.keys` -- the names of everything stored on trials and studies.
* :mod:`~hpo.tuning.progress` -- progress inside a trial, and one log line per trial.
"""
