"""Where and how trials run: the shared storage, worker processes, the device, CPU settings.

This package changes when the infrastructure does (a new database, a new process model, a new
CPU quirk), never when the search or the model does. It imports nothing from the rest of
``hpo`` except :mod:`hpo.errors`. Optuna's private API is reached only through
:mod:`hpo.runtime.optuna_compat`.

Modules (import from them directly; this ``__init__`` stays empty so that importing one light
module, such as :mod:`hpo.runtime.processes`, does not import torch):

* :mod:`~hpo.runtime.storage_url` -- what a storage URL means, how it is shown (masked).
* :mod:`~hpo.runtime.storage` -- opening SQLite / PostgreSQL safely for many workers.
* :mod:`~hpo.runtime.processes` -- K spawned worker processes on one machine, Ctrl-C.
* :mod:`~hpo.runtime.interrupts` -- Ctrl-C held while a trial is created, delivered after.
* :mod:`~hpo.runtime.device` -- the torch device, validated once.
* :mod:`~hpo.runtime.cpu` -- per-process CPU training settings (denormals, allocator).
* :mod:`~hpo.runtime.optuna_compat` -- the one door to Optuna's private API.
"""
