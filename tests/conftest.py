"""Shared test setup: offline, no W&B, two threads, one cache of tiny backbones per pytest run."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """Tiny backbones and cold starts built once per test session."""
    return tmp_path_factory.mktemp("care-cache")
