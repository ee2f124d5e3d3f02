"""A sweep's shared phases (care.phases): which jobs share a cold start, before-RL and Base scores,
and a local sweep that builds each once, before its runs, which reuse them."""

import json
import subprocess
import sys
from dataclasses import replace

from care.phases import BASE, BEFORE, COLD_START, pending_phases
from tests.test_config import compose_cfg
from tests.test_sweeps import ROOT


def kinds(phases) -> list[tuple[str, list[int]]]:
    return [(phase.kind, phase.positions) for phase in phases]


def test_training_seeds_and_methods_share_one_cold_start_and_one_before():
    """The RL seed and the method are not part of a cold start (cold start once, RL many times)."""
    jobs = [compose_cfg("scale=toy", f"seed={seed}", f"algorithm={algorithm}")
            for seed in (0, 1) for algorithm in ("grpo", "care")]
    assert kinds(pending_phases(jobs, skip_done=False)) == [(COLD_START, [0, 1, 2, 3]), (BEFORE, [0, 1, 2, 3])]


def test_what_changes_a_cold_start_or_its_scores_makes_a_phase_of_its_own():
    base = compose_cfg("scale=toy")
    other_cold_start = replace(base, cold_start=replace(base.cold_start, seed=1))
    other_protocol = replace(base, eval=replace(base.eval, seeds=[0, 1]))
    phases = pending_phases([base, other_cold_start, other_protocol], skip_done=False)
    assert kinds(phases) == [(COLD_START, [0, 2]), (COLD_START, [1]), (BEFORE, [0]), (BEFORE, [1]), (BEFORE, [2])]
    befores = [phase for phase in phases if phase.kind == BEFORE]
    assert [len(phase.needs) for phase in befores] == [1, 1, 1]
    assert befores[0].needs == befores[2].needs != befores[1].needs


def test_base_scores_are_a_phase_per_backbone_and_eval_jobs_share_nothing():
    jobs = [compose_cfg("scale=toy", "eval.base=true", f"seed={seed}") for seed in (0, 1)]
    jobs.append(compose_cfg("scale=toy", "task=eval"))
    phases = pending_phases(jobs, skip_done=False)
    assert kinds(phases) == [(BASE, [0, 1]), (COLD_START, [0, 1]), (BEFORE, [0, 1])]
    assert phases[0].needs == [] and "base_extraction=lenient" in phases[0].describe()


def test_cold_start_none_shares_only_the_before_scores():
    jobs = [compose_cfg("scale=toy", "cold_start=none", f"seed={seed}") for seed in (0, 1)]
    assert kinds(pending_phases(jobs, skip_done=False)) == [(BEFORE, [0, 1])]


def test_a_local_sweep_builds_each_shared_phase_once_before_its_runs(tmp_path):
    """cluster=local: the launcher runs the cold start, the before-RL and the Base scores in sequence,
    then the two runs, which reuse all three; the same command again finds every phase in the cache."""
    cache, sweep = tmp_path / "cache", tmp_path / "sweep"
    command = [sys.executable, "run.py", "-m", "scale=toy", "seed=0,1", "eval.base=true", f"cache_dir={cache}"]
    first = subprocess.run([*command, f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stderr + first.stdout
    assert log.index("cold_start phase done") < log.index("before phase done") < log.index("Launching 2 jobs")
    assert "base phase done" in log
    (cold_start,) = [p for p in (cache / "cold_start").iterdir() if not p.name.startswith(".")]  # not its lock
    assert sorted(p.name.split("-")[0] for p in (cache / "eval").iterdir() if not p.name.startswith(".")) == \
        ["base", "before"]
    finals = [json.loads((sweep / job / "final.json").read_text()) for job in ("0", "1")]
    assert {final["policy_source"] for final in finals} == {str(cold_start)}
    assert finals[0]["before"] == finals[1]["before"] and finals[0]["base"] == finals[1]["base"]
    assert finals[0]["base"]["extraction"] == "lenient"
    for job in ("0", "1"):
        run_log = (sweep / job / "run.log").read_text()
        assert run_log.count("[care.cache][INFO] - reusing") == 3, run_log  # cold start, before, base: nothing built
        assert "1/5 cold start: reusing" in run_log and "2/5 before RL: reusing" in run_log  # and the headers say so
        assert sorted(p.name for p in (sweep / job / "eval").iterdir()) == \
            ["after-synthetic-seed0.jsonl", "base-synthetic-seed0.jsonl", "before-synthetic-seed0.jsonl"]

    again = subprocess.run([*command, f"hydra.sweep.dir={tmp_path / 'again'}"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert log.count("is in the cache already") == 3 and "phase done" not in log
