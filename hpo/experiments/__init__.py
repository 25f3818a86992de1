"""Experiments (``studies/experiments.py``): model families compared at one configuration.

Each is an Optuna study whose trials are its runs; the summary is generated from their rows.
"""
