"""A cold start killed mid-build resumes: a preempted or requeued job must not train it from scratch again.

tests/coldstart_build.py builds a small synthetic cold start (checkpoints every few steps) in a process
of its own; it is SIGKILLed once a checkpoint is on disk and built again.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.coldstart_build import SAVE_STEPS, STEPS

ROOT = Path(__file__).resolve().parents[1]


def build_command(backbone_cache: Path, build_cache: Path) -> list[str]:
    return [sys.executable, "-m", "tests.coldstart_build", str(backbone_cache), str(build_cache)]


def built(build_cache: Path) -> list[str]:
    """What the cache's cold_start/ holds besides the builders' locks."""
    return sorted(p.name for p in (build_cache / "cold_start").iterdir() if not p.name.endswith(".lock"))


@pytest.mark.slow
def test_a_killed_cold_start_resumes_from_its_newest_checkpoint_and_trains_the_same_policy(tmp_path, cache_dir):
    import torch
    from safetensors.torch import load_file

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    reference = subprocess.run(build_command(cache_dir, tmp_path / "reference"), cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert f"the cold start trained {STEPS} optimizer steps" in reference.stderr
    assert "resuming the cold start" not in reference.stderr

    cache = tmp_path / "cache"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(build_command(cache_dir, cache), cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while not list(cache.glob("cold_start/.*.checkpoints/checkpoint-*/trainer_state.json")):
            assert process.poll() is None and time.time() < deadline, "the build ended before its first checkpoint"
            time.sleep(0.02)
        process.kill()  # SIGKILL: no handler runs, as in a preemption
        process.wait()
    (checkpoints,) = cache.glob("cold_start/.*.checkpoints")
    assert not [name for name in built(cache) if not name.startswith(".")], "the build finished before the kill"

    resumed = subprocess.run(build_command(cache_dir, cache), cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = re.findall(r"resuming the cold start from (\S+)$", resumed.stderr, flags=re.MULTILINE)
    assert len(lines) == 1 and Path(lines[0]).parent == checkpoints, resumed.stderr[-3000:]
    step = int(Path(lines[0]).name.removeprefix("checkpoint-"))
    assert step % SAVE_STEPS == 0 and 0 < step < STEPS  # a periodic checkpoint, not the end of training
    assert f"the cold start trained {STEPS} optimizer steps" in resumed.stderr  # the same step count
    policy = Path(resumed.stdout.strip().splitlines()[-1])
    assert built(cache) == [policy.name]  # published once; no staging or checkpoints folder left
    assert policy.name == Path(reference.stdout.strip().splitlines()[-1]).name  # the same key

    # the Trainer's resume (weights, optimizer, scheduler, RNG, data position) is exact on CPU: the
    # resumed build is the uninterrupted one, weight for weight
    want = load_file(tmp_path / "reference" / "cold_start" / policy.name / "model.safetensors")
    got = load_file(policy / "model.safetensors")
    assert got.keys() == want.keys()
    assert all(torch.equal(got[name], want[name]) for name in want)
