"""One place that seeds a process: Python's and torch's generators, and torch's thread count."""

from __future__ import annotations

import random

import torch


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
