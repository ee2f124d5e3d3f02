"""A killed evaluation resumes per (benchmark, seed) pass: a preempted or requeued job keeps the passes it
published and produces only the rest, with the files and scores of an uninterrupted evaluation.

tests/eval_build.py runs `task=eval` or the before-RL phase (tiny backbone, 2 benchmarks x 6 seeds) in a
process of its own; it is SIGKILLed once a pass file is published and run again.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.eval_build import BENCHMARKS, SEEDS

ROOT = Path(__file__).resolve().parents[1]
PASSES = len(BENCHMARKS) * len(SEEDS)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def command(mode: str, backbone_cache: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "tests.eval_build", mode, str(backbone_cache), str(out)]


def run(mode: str, backbone_cache: Path, out: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command(mode, backbone_cache, out), cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def kill_once_published(mode: str, backbone_cache: Path, out: Path, files: str, log: Path) -> dict[Path, tuple]:
    """Start the evaluation, SIGKILL it once a pass file matching `files` (under `out`) exists; returns the
    pass files it left, each with its bytes and mtime_ns."""
    with open(log, "w") as handle:
        process = subprocess.Popen(command(mode, backbone_cache, out), cwd=ROOT, env=ENV, stdout=handle,
                                   stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while not list(out.glob(files)):
            assert process.poll() is None and time.time() < deadline, "the evaluation ended before its first pass"
            time.sleep(0.01)
        process.kill()  # SIGKILL: no handler runs, as in a preemption
        process.wait()
    left = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in out.glob(files)}
    assert 1 <= len(left) < PASSES, f"{len(left)} of {PASSES} passes done: the kill did not land midway"
    return left


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.mark.slow
def test_a_killed_evaluation_keeps_its_finished_passes_and_scores_as_an_uninterrupted_one(tmp_path, cache_dir):
    reference = tmp_path / "reference"
    run("eval", cache_dir, reference)
    job = tmp_path / "job"
    left = kill_once_published("eval", cache_dir, job, "eval/*.jsonl", tmp_path / "killed.log")
    assert not (job / "final.json").exists()

    resumed = run("eval", cache_dir, job)
    assert f"resuming evaluation: {len(left)} of {PASSES} passes done" in resumed.stderr
    for path, (data, mtime_ns) in left.items():  # read back, not written again
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime_ns, path.name
    # every pass is there (no temporary file of the killed write either), each the uninterrupted run's
    assert contents(job / "eval") == contents(reference / "eval")
    assert len(contents(job / "eval")) == PASSES
    assert json.loads((job / "eval_metrics.json").read_text()) == json.loads((reference / "eval_metrics.json").read_text())
    final, expected = (json.loads((d / "final.json").read_text()) for d in (job, reference))
    assert final["after"] == expected["after"] and final["eval"] == expected["eval"]


@pytest.mark.slow
def test_a_killed_before_rl_phase_resumes_and_publishes_what_an_uninterrupted_one_does(tmp_path, cache_dir):
    run("before", cache_dir, tmp_path / "reference")
    (published,) = (tmp_path / "reference" / "eval").glob("before-*")  # cache_dir/eval/before-<key>/

    cache = tmp_path / "cache"
    left = kill_once_published("before", cache_dir, cache, "eval/.before-*.partial/before-*.jsonl",
                               tmp_path / "killed.log")
    assert not (cache / "eval" / published.name).exists()

    resumed = run("before", cache_dir, cache)
    assert f"resuming evaluation: {len(left)} of {PASSES} passes done" in resumed.stderr
    assert sorted(p.name for p in (cache / "eval").iterdir()) == sorted([published.name, f".{published.name}.lock"])
    mine = cache / "eval" / published.name  # the same key; the partial folder became it
    assert contents(mine) == contents(published)  # the same files, byte for byte, scores included
    for path, (data, mtime_ns) in left.items():  # the killed build's passes, moved into place untouched
        assert (mine / path.name).stat().st_mtime_ns == mtime_ns and (mine / path.name).read_bytes() == data
