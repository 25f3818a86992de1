"""Model checkpoint files, which rebuild their network without the study's storage: their
format, and scoring one (``python -m hpo.evaluate``)."""
