"""Experiments (``studies/experiments.py``): model families compared at one configuration, as
Optuna studies whose trials are the runs; the summary is generated from their rows."""
