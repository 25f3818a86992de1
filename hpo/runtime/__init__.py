"""Where and how trials run: the shared storage, worker processes, the device, CPU settings.

Changes when the infrastructure does (a new database, a new process model, a new CPU quirk),
never when the search or the model does. Imports nothing of ``hpo`` but :mod:`hpo.errors`.
This ``__init__`` re-exports nothing, so importing one light module does not import torch.
"""
