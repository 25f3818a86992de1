"""Model checkpoint files: their format, and scoring one (``python -m hpo.evaluate``).

A checkpoint is self-describing -- weights plus everything needed to rebuild and feed the
network -- so a file exported from a study (``python -m hpo.export``) or committed under
``docs/results/models/`` can be scored or reloaded without the study's storage. This package
changes when that format or its evaluation does. It imports ``models``, ``data``, ``studies``
(the mask seeds), :mod:`hpo.training` and :mod:`hpo.runtime`; the study runner
(:mod:`hpo.tuning.artifacts`) writes and reads the format through it.
"""
