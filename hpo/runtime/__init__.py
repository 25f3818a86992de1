"""Where and how trials run: storage, worker processes, device, CPU settings. Imports nothing
of ``hpo`` but :mod:`hpo.errors`; re-exports nothing (a light module must not import torch)."""
