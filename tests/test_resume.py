"""Nothing lost when a job dies: a killed run resumes from its newest checkpoint on disk.

The resumed run logs every step exactly once, keeps what it logged up to its checkpoint,
reproduces an uninterrupted run's per-step metrics after it (rollout sampling is seeded by
seed, step and rank). Killed once RL is saved, a requeue only runs the after-RL check; a finished
run is skipped.
"""

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.tiny_run import TINY_RUN_STEPS, tiny_run_command

ROOT = Path(__file__).resolve().parents[1]
STEPS = TINY_RUN_STEPS


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_killed_run_resumes_with_no_step_lost_or_doubled(tmp_path, cache_dir, tiny_run):
    reference, _ = tiny_run  # the same command, uninterrupted
    job = tmp_path / "job"
    process = subprocess.Popen(tiny_run_command(job, cache_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (job / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.1)
    process.kill()  # SIGKILL: no handler runs, as in a preemption
    process.wait()
    assert not (job / "final.json").exists(), "the run finished before it could be killed"
    logged_before_kill = [row["global_step"] for row in metrics(job)]
    assert logged_before_kill and max(logged_before_kill) < STEPS
    with open(job / "metrics.jsonl", "a") as f:  # what a kill in the middle of a write leaves
        f.write(f'{{"global_step": {max(logged_before_kill) + 1}, "train/rew')

    # the resumed job is killed again once RL is saved, during the after-RL check
    output = tmp_path / "resumed.log"
    with open(output, "w") as out:
        process = subprocess.Popen(tiny_run_command(job, cache_dir), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while not (job / "rl_done.json").exists():
            assert process.poll() is None and time.time() < deadline, "run ended before RL was done"
            time.sleep(0.02)
        process.kill()
        process.wait()
    assert "resuming RL from" in output.read_text()
    assert not (job / "final.json").exists(), "the after-RL check ended before the run could be killed"
    logged = (job / "metrics.jsonl").read_text()

    # requeued once more: RL is not run again, only the check
    evaluated = subprocess.run(tiny_run_command(job, cache_dir), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    said = evaluated.stdout + evaluated.stderr
    assert "evaluating it" in said and "resuming RL from" not in said
    assert (job / "metrics.jsonl").read_text() == logged
    rows, expected = metrics(job), metrics(reference)
    assert [r["global_step"] for r in rows] == list(range(1, STEPS + 1))
    # every step, before and after the kill, is the uninterrupted run's (same seed, deterministic CPU)
    for got, want in zip(rows, expected, strict=True):
        for key in ("train/reward", "train/accuracy", "signal/fss_neg", "care/k_prime_mean"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), (got["global_step"], key)
    assert json.loads((job / "final.json").read_text())["global_step"] == STEPS
    assert not (job / "checkpoints").exists()  # cleaned up once final.json is written

    # re-issuing the finished job does nothing and keeps its record
    final_before = (job / "final.json").read_text()
    skipped = subprocess.run(tiny_run_command(job, cache_dir), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert skipped.returncode == 0 and (job / "final.json").read_text() == final_before
    assert [r["global_step"] for r in metrics(job)] == list(range(1, STEPS + 1))


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    """By step number, never by name; one cut short by a kill (no or half a trainer_state.json) is skipped."""
    from care.checkpoints import newest_checkpoint

    assert newest_checkpoint(tmp_path / "missing") is None
    for step, state in ((2, "{}"), (10, "{}"), (11, '{"global_st'), (12, None)):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        if state is not None:
            (path / "trainer_state.json").write_text(state)
    assert newest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
