"""Multiruns through Hydra launchers: a real two-job toy sweep as separate local processes."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_sweep(sweep_dir: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", "-m", "scale=toy", "seed=0,1", f"hydra.sweep.dir={sweep_dir}",
                           *overrides], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def check_two_runs(sweep_dir: Path, cluster: str) -> None:
    runs = [json.loads((sweep_dir / str(i) / "run.json").read_text()) for i in (0, 1)]
    assert [r["config"]["seed"] for r in runs] == [0, 1]
    assert runs[0]["run_key"] != runs[1]["run_key"]
    assert all(r["choices"]["cluster"] == cluster and r["choices"]["scale"] == "toy" for r in runs)
    for i in (0, 1):
        final = json.loads((sweep_dir / str(i) / "final.json").read_text())
        assert final["global_step"] == 3 and final["after"]["n"] == 16
        steps = [json.loads(line)["global_step"] for line in (sweep_dir / str(i) / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1, 2, 3]


def test_two_job_sweep_through_submitit_local(tmp_path, cache_dir):
    result = run_sweep(tmp_path / "sweep", "cluster=submitit_local", f"cache_dir={cache_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    check_two_runs(tmp_path / "sweep", "submitit_local")
    # each job ran in its own submitit process, with its own logs
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))) == 2
