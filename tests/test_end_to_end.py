"""One tiny default-shaped run through run.py (`tiny_run`, tests/conftest.py): every run file is written and
RL moves the policy."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def test_last_line_names_the_run_dir(tiny_run):
    run_dir, result = tiny_run
    assert result.stdout.strip().splitlines()[-1] == f"run_dir: {run_dir}"


def test_run_files(tiny_run):
    run_dir, _ = tiny_run
    config = json.loads((run_dir / "run.json").read_text())["config"]
    assert config["rl"]["steps"] == 3 and config["backbone"]["name"] == "tiny_qwen2_5_vl"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in rows] == [1, 2, 3]
    assert all("train/reward" in r for r in rows)
    final = json.loads((run_dir / "final.json").read_text())
    for phase in ("before", "after"):
        assert set(final[phase]) >= {"synthetic", "macro", "macro_std", "n"} and final[phase]["n"] == 8
        assert 0.0 <= final[phase]["macro"] <= 100.0
    assert final["global_step"] == 3
    # sampled evaluation, one pass per eval seed; final.json holds the mean over seeds
    per_seed = []
    for seed in (0, 1, 2):
        samples = [json.loads(line) for line in
                   (run_dir / "eval" / f"after-synthetic-seed{seed}.jsonl").read_text().splitlines()]
        assert len(samples) == 8 and {"id", "benchmark", "response", "parsed", "gold", "correct"} <= set(samples[0])
        per_seed.append(100.0 * sum(s["correct"] for s in samples) / 8)
    assert final["after"]["macro"] == pytest.approx(sum(per_seed) / 3)
    assert final["after"]["seeds"] == [0, 1, 2]
    assert not (run_dir / "FAILED").exists()


def test_rl_changed_the_policy(tiny_run):
    run_dir, _ = tiny_run
    final = json.loads((run_dir / "final.json").read_text())
    before = load_file(Path(final["policy_source"]) / "model.safetensors")
    after = load_file(run_dir / "policy" / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [k for k in before if not (before[k] == after[k]).all()]
    assert changed, "RL left every parameter untouched"


def key_paths(tree, prefix=""):
    """Dotted paths of every leaf of a JSON object (lists are leaves)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix}
    return set().union(*(key_paths(value, f"{prefix}.{key}" if prefix else key) for key, value in tree.items()))


def test_a_fake_run_has_exactly_the_keys_of_a_real_one(tiny_run, tmp_path):
    """analysis.fake_runs stands in for real runs in the analysis tests: its files must not drift."""
    from analysis.fake_runs import write_run

    run_dir, _ = tiny_run
    fake_dir = write_run(tmp_path, "fake", steps=3, overrides={"rl.format_weight": 1.0})  # as tiny_run sets it
    real, fake = (json.loads((d / "run.json").read_text()) for d in (run_dir, fake_dir))
    assert set(fake["choices"]) <= set(real["choices"])  # the Hydra groups chosen vary with the launch
    assert key_paths({**fake, "choices": {}}) == key_paths({**real, "choices": {}})
    real, fake = (json.loads((d / "final.json").read_text()) for d in (run_dir, fake_dir))
    assert key_paths(fake) == key_paths(real)
    real, fake = ([json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
                  for d in (run_dir, fake_dir))
    assert set().union(*fake) == set().union(*real)
    assert [sorted(row) for row in fake] == [sorted(row) for row in real]  # every row logs every key


def test_the_log_reads_as_the_run(tiny_run):
    """A header per phase saying what it does, one short line per RL step (not TRL's 50-key dicts), and
    the before/after table at the end; run.log holds what the console showed."""
    run_dir, result = tiny_run
    log = (run_dir / "run.log").read_text()
    headers = [line.split("──────── ", 1)[1] for line in log.splitlines() if "──────── " in line]
    assert [h.split(":")[0] for h in headers] == ["1/5 cold start", "2/5 before RL", "3/5 RL", "4/5 after RL",
                                                 "5/5 final"]
    assert "building synthetic" in headers[0] or "reusing synthetic" in headers[0]
    steps = [line for line in log.splitlines() if "RL: step " in line]
    assert len(steps) == 3 and all(" | reward " in s and " | kl " in s and "ETA" in s for s in steps)
    assert "RL: step 3/3" in steps[-1]
    assert "{'loss'" not in result.stdout + result.stderr + log  # transformers' PrinterCallback dicts are gone
    table = log[log.index("benchmark  before   after  change"):].splitlines()
    assert table[1].startswith("synthetic") and table[2].startswith("macro")
