"""CARE experiment suite: a Hydra-free core that run.py hands a typed config to.

Deliberately imports nothing heavy: `care.objective` must stay importable without
transformers or TRL, so any trainer can use it.
"""

__version__ = "0.1.0"
