"""Where and how trials run: the shared storage, worker processes, the device, CPU settings.

Imports nothing of ``hpo`` but :mod:`hpo.errors`; re-exports nothing, so that importing a light
module does not import torch.
"""
