"""Multiruns through Hydra launchers: a real two-job toy sweep as separate local processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_two_job_sweep_of_two_task_jobs_through_submitit_local(tmp_path, cache_dir):
    """Each job as two local processes (torch.distributed, gloo), run from the sweep's code snapshot:
    one run directory per job, every step logged once, written by rank 0 only. A relative cache_dir
    means the launch directory, not the snapshot (else every sweep rebuilds its backbones)."""
    sweep = tmp_path / "sweep"
    relative_cache = os.path.relpath(cache_dir, ROOT)
    result = run_sweep(sweep, "cluster=submitit_local", f"cache_dir={relative_cache}",
                       "hydra.launcher.tasks_per_node=2", "hydra.launcher.snapshot=true")
    assert result.returncode == 0, result.stderr[-3000:]
    check_two_runs(sweep, "submitit_local")
    assert not (sweep / ".code" / relative_cache).exists()
    for i in (0, 1):
        run = json.loads((sweep / str(i) / "run.json").read_text())
        assert run["world_size"] == 2
        assert Path(run["config"]["cache_dir"]).resolve() == Path(cache_dir).resolve()
        assert json.loads((sweep / str(i) / "final.json").read_text())["processes"] == 2
        assert Path(run["code"]["dir"]) == sweep / ".code"  # the jobs imported care from the snapshot
        assert sorted(p.name for p in (sweep / str(i) / "eval").iterdir()) == \
            ["after-synthetic-seed0.jsonl", "before-synthetic-seed0.jsonl"]
    assert (sweep / ".code" / "care" / "pipeline.py").read_text() == (ROOT / "care" / "pipeline.py").read_text()
    # two runs and the shared phases queued before them (those the session's cache did not hold yet), each a
    # job of two tasks as wide as the runs, each task with its own submitit log
    phases = (result.stdout + result.stderr).count("(jobs [0, 1]): job ")
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2 * (2 + phases)


@pytest.mark.parametrize("cluster", ["local", "submitit_local"])
def test_a_bad_job_in_a_sweep_fails_before_any_job_runs(tmp_path, cluster):
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "run.py", "-m", "scale=toy", f"cluster={cluster}", "care.k=1,0",
                             f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "sweep job #1" in result.stderr and "care.k" in result.stderr and ">= 1" in result.stderr
    assert sorted(p.name for p in sweep.iterdir()) == ["multirun.yaml"]  # no run directory, nothing submitted


def test_per_backbone_resources_must_name_a_backbone(tmp_path):
    """A site file (conf/local/site.yaml, here from a search path) with a misspelt backbone."""
    (tmp_path / "conf" / "local").mkdir(parents=True)
    (tmp_path / "conf" / "local" / "site.yaml").write_text(
        "# @package _global_\nhydra:\n  launcher:\n    per_backbone:\n      qwen25_vl_7b: {gpus_per_node: 8}\n")
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "run.py", "-m", "scale=toy", "cluster=submitit_local",
                             f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"hydra.sweep.dir={sweep}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "qwen25_vl_7b" in result.stderr and "qwen2_5_vl_7b" in result.stderr, result.stderr[-2000:]
    assert not (sweep / ".submitit").exists() and not (sweep / "0").exists()


def test_a_slurm_sweep_whose_plan_does_not_fit_is_refused_before_submission(tmp_path):
    """Plain DDP of a 7B policy cannot fit an 80 GB GPU: refused with the plan's numbers, no weights
    or SLURM needed to say so, nothing queued; cluster.require_fit=false lets it through to the next check."""
    sweep = tmp_path / "sweep"
    common = ["cluster=slurm", "backbone=qwen2_5_vl_7b", f"hydra.sweep.dir={sweep}",
              f"cache_dir={tmp_path / 'cache'}"]
    refused = subprocess.run([sys.executable, "run.py", "-m", "parallel=ddp,fsdp", *common], cwd=ROOT,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "sweep job #0" in refused.stderr and "parallel=ddp" in refused.stderr
    assert "cluster.gpu=h100" in refused.stderr and "79.2 GiB" in refused.stderr and "nothing was queued" in refused.stderr
    assert not (sweep / ".submitit").exists() and not (sweep / ".code").exists()
    overridden = subprocess.run([sys.executable, "run.py", "-m", "parallel=ddp", "cluster.require_fit=false",
                                 *common], cwd=ROOT, capture_output=True, text=True, timeout=120,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    # past the fit check, the next one (no vLLM, no weights on this machine) stops it, still before queueing
    assert overridden.returncode == 2 and "cluster.gpu=h100" not in overridden.stderr
    assert "rollout.engine" in overridden.stderr or "backbone.path" in overridden.stderr, overridden.stderr[-2000:]


def test_a_slurm_sweep_that_cannot_finish_in_its_time_limit_is_refused_before_submission(tmp_path):
    """The plan's wall hours against timeout_min x (max_num_timeout + 1), for the runs and for the shared
    phases they need: a 7B RL job in 2 x 1 h, then its SFT cold start in 2 x 1 h, refused naming the keys."""
    sweep = tmp_path / "sweep"
    common = [sys.executable, "run.py", "-m", "cluster=slurm", "backbone=qwen2_5_vl_7b", f"hydra.sweep.dir={sweep}",
              "data=care_mix", "cold_start=sft", "hydra.launcher.max_num_timeout=1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    rl = subprocess.run([*common, "hydra.launcher.timeout_min=60"], cwd=ROOT, capture_output=True, text=True,
                        timeout=120, env=env)
    assert rl.returncode == 2 and "RL job on 8 h100 GPUs" in rl.stderr, rl.stderr[-2000:]
    assert "hydra.launcher.timeout_min=60 x (max_num_timeout=1 + 1) = 2.0 h" in rl.stderr
    assert "nothing was queued" in rl.stderr and not (sweep / ".submitit").exists()
    cold_start = subprocess.run([*common, "hydra.launcher.per_backbone.qwen2_5_vl_7b.timeout_min=6000",
                                 "hydra.launcher.phases.cold_start.timeout_min=60"], cwd=ROOT, capture_output=True,
                                text=True, timeout=120, env=env)
    assert cold_start.returncode == 2 and "cold start on 8 h100 GPUs" in cold_start.stderr, cold_start.stderr[-2000:]
    assert "cold_start.save_steps=500" in cold_start.stderr and "= 2.0 h" in cold_start.stderr


def test_fsdp_that_falls_back_to_ddp_stops_the_job_naming_the_counts(tmp_path, cache_dir):
    """transformers trains `fsdp` on CPU as plain DDP without a word: the job itself checks, after
    wrapping, that each of its two ranks holds about half the parameters, and stops when not. The first
    job to train is the shared cold start's (two tasks, as the runs would have): it stops, and the run
    behind it never starts."""
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "run.py", "-m", "scale=toy", "cluster=submitit_local",
                             "hydra.launcher.tasks_per_node=2", "parallel=fsdp", f"cache_dir={tmp_path / 'cache'}",
                             f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "shared phase cold_start" in output and "failed, so its runs were cancelled" in output
    assert "NotSharded" in output and "parallel=fsdp over 2 processes should leave about 1/2" in output
    assert "(100%)" in output and not (sweep / "0").exists()
