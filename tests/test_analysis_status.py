"""`python -m analysis.status <sweep dir>`: each job's state, phase, step and ETA from its run directory."""

import subprocess
import sys
from pathlib import Path

from analysis.fake_runs import write_run
from analysis.status import error_line, job_status, main

ROOT = Path(__file__).resolve().parents[1]


def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    write_run(root, "0", seed=0, after={"synthetic": 61.25})
    write_run(root, "1", seed=1, status="failed")
    write_run(root, "2", seed=2, status="unfinished", steps=4, overrides={"rl.steps": 10})
    (root / "3").mkdir()  # submitted, not started: no run.json yet
    return root


def test_each_state_is_read_from_the_files(tmp_path):
    root = sweep(tmp_path)
    done, failed, running, queued = (job_status(root / name) for name in "0123")
    assert (done.state, done.note, done.step) == ("done", "after-RL macro 61.2", "20/60")
    assert (failed.state, failed.note) == ("failed", "RuntimeError: CUDA out of memory")
    assert (running.state, running.phase, running.step) == ("running", "RL", "4/10")
    import json

    times = [json.loads(line)["train/step_time"] for line in (root / "2" / "metrics.jsonl").read_text().splitlines()]
    left = 6 * sum(times) / len(times)  # 6 steps to go at the mean logged step time
    assert running.eta == f"{int(left // 60)}m{int(left % 60):02d}s"
    assert (queued.state, queued.phase) == ("queued", "")
    assert "algorithm=care" in done.label and "seed=0" in done.label


def test_the_command_prints_one_line_per_job_and_the_counts(tmp_path):
    root = sweep(tmp_path)
    out = subprocess.run([sys.executable, "-m", "analysis.status", str(root)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["job", "config", "state", "phase", "step", "eta", "note"]
    assert lines[-1] == "1 done, 1 running, 1 queued, 1 failed"
    assert main([str(tmp_path / "nowhere")]) == 2


def test_the_error_line_is_the_exception_not_the_traceback_head():
    text = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: data.path is bad\n\n'
    assert error_line(text) == "ValueError: data.path is bad"
