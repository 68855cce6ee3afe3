"""absl entry points, run as ``python -m launch.<name>`` (train, sample, evaluate, ...).

Each launcher parses flags and an ml_collections config (``configs/``) and calls library functions
from ``edt_jax``; launchers hold no modelling code of their own.
"""
