"""Shared test setup: offline, no W&B, two threads, one cache of tiny backbones per pytest run, one tiny run."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.tiny_run import tiny_run_command  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def digest_memo(tmp_path_factory):
    """The file-digest memo (care.hashing) of this test session, not the user's ~/.cache; the runs the
    tests start inherit it."""
    os.environ.setdefault("CARE_DIGEST_MEMO", str(tmp_path_factory.mktemp("memo") / "file_digests.sqlite"))
    return Path(os.environ["CARE_DIGEST_MEMO"])


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """Tiny backbones and cold starts built once per test session."""
    return tmp_path_factory.mktemp("care-cache")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cache_dir):
    """One tiny default-shaped run through run.py, mirrored to an offline W&B run (a real wandb.init):
    test_end_to_end checks its run files, test_wandb_offline reads the mirror back."""
    run_dir = tmp_path_factory.mktemp("run") / "job"
    result = subprocess.run(tiny_run_command(run_dir, cache_dir), cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir, result
