"""Run directories in the trainer's exact on-disk format, with numbers chosen by the caller.

Tests write them to check tables against known values, the benchmark writes a thousand to
time `collect`. They are written through `care.tracking.RunFiles`, the writer the pipeline
uses, from a real `care.config.Config`; tests/test_end_to_end.py checks that a fake run has
exactly the keys of a run the pipeline produced (run.json, final.json, metrics.jsonl).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.samples import pass_file
from care.atomic import write_text_atomic
from care.config import Config
from care.identity import run_key as config_run_key
from care.tracking import RunFiles

# what run.json records about the code and the scheduler, as the pipeline writes it outside SLURM
FAKE_CODE = {"dir": "/fake/care", "commit": None, "dirty": None}
FAKE_JOB = dict.fromkeys(("job_id", "array_job_id", "array_task_id", "restart_count", "tasks", "cpus_per_task",
                          "gpus_on_node"))


def base_config(seed: int = 0, algorithm: str = "care", backbone: str = "tiny_qwen2_5_vl",
                data: str = "synthetic") -> Config:
    """The default Config with these choices; RGR on for CARE only (as the sweeps run it)."""
    cfg = Config()
    cfg.seed, cfg.algorithm.name, cfg.backbone.name, cfg.data.name = seed, algorithm, backbone, data
    cfg.rgr.enabled = algorithm == "care"
    return cfg


def set_dotted(cfg: Config, dotted: str, value: Any) -> None:
    """`set_dotted(cfg, "care.k", 2)` sets cfg.care.k; a misspelt key is an error, as in an override."""
    *groups, leaf = dotted.split(".")
    node = cfg
    for group in groups:
        node = getattr(node, group)
    if not hasattr(node, leaf):
        raise KeyError(f"{dotted!r}: the config has no key {leaf!r} there")
    setattr(node, leaf, value)


def synthetic_curves(steps: int, *, seed: int = 0, algorithm: str = "care", rgr: bool = False,
                     k: int = 4, format_reward: bool = False, kl: bool = True) -> pd.DataFrame:
    """Plausible per-step metrics under every key the trainer logs (nulls included).

    Every algorithm logs the signal, CARE and RGR keys (GRPO's from its own advantages; no
    repair attempts without RGR); TRL adds `rewards/format/*` with a format reward and
    `train/kl` when beta is not 0.
    """
    rng = np.random.default_rng(seed)
    step = np.arange(1, steps + 1)
    progress = step / steps
    is_care = algorithm == "care"
    accuracy = np.clip(0.3 + 0.3 * progress + rng.normal(0, 0.03, steps), 0, 1)
    all_fail = np.clip(0.35 - 0.25 * progress + rng.normal(0, 0.02, steps), 0, 1)
    all_correct = np.clip(0.05 + 0.2 * progress + rng.normal(0, 0.02, steps), 0, 1)
    length = 40 + rng.normal(0, 3, steps)
    frame = pd.DataFrame({
        "global_step": step,
        "train/accuracy": accuracy,
        "train/reward": accuracy + rng.normal(0, 0.01, steps),
        "train/reward_std": np.abs(rng.normal(0.4, 0.05, steps)),
        "train/frac_reward_zero_std": all_fail + all_correct,
        "train/loss": rng.normal(0, 0.05, steps),
        "train/grad_norm": np.abs(rng.normal(1, 0.2, steps)),
        "train/learning_rate": np.full(steps, 1e-3),
        "train/entropy": np.abs(rng.normal(5, 0.2, steps)),
        "train/epoch": progress,
        "train/num_tokens": 1000.0 * step,
        "train/step_time": np.abs(rng.normal(20, 2, steps)),
        "train/groups_all_fail": all_fail,
        "train/groups_all_correct": all_correct,
        "train/correct_think_len": 40 + rng.normal(0, 3, steps),
        "accuracy/formatted": np.clip(0.8 + rng.normal(0, 0.05, steps), 0, 1),
        "accuracy/timeouts": np.zeros(steps),
        "rewards/accuracy/mean": accuracy,
        "rewards/accuracy/std": np.abs(rng.normal(0.4, 0.05, steps)),
        "signal/zero_signal_groups": all_correct if is_care else all_fail + all_correct,
        "signal/fss_neg": np.clip((0.55 if is_care else 0.45) + rng.normal(0, 0.03, steps), 0, 1),
        "signal/fss_fail_derived": np.clip((0.6 if is_care else 0.45) + rng.normal(0, 0.03, steps), 0, 1),
        "signal/nonzero_grad_prompts": 1 - (all_correct if is_care else all_fail + all_correct),
        "signal/adv_mass_pos": np.abs(rng.normal(2, 0.1, steps)),
        "signal/adv_mass_neg": np.abs(rng.normal(1, 0.1, steps)),
    })
    for name in ("mean_length", "min_length", "max_length", "mean_terminated_length", "min_terminated_length",
                 "max_terminated_length"):
        frame[f"completions/{name}"] = length
    frame["completions/clipped_ratio"] = np.zeros(steps)
    for name in ("low_mean", "high_mean", "region_mean", "low_min", "high_max"):
        frame[f"clip_ratio/{name}"] = np.zeros(steps)
    if kl:
        frame["train/kl"] = np.abs(rng.normal(0.01, 0.002, steps))
    if format_reward:
        frame["rewards/format/mean"] = frame["accuracy/formatted"]
        frame["rewards/format/std"] = np.abs(rng.normal(0.3, 0.05, steps))
    frame.loc[rng.random(steps) < 0.02, "train/correct_think_len"] = np.nan  # no correct rollout that step
    hist = rng.dirichlet(np.arange(1, k + 2), size=steps)
    for k_prime in range(k + 1):
        frame[f"care/k_prime_hist/{k_prime}"] = hist[:, k_prime]
    frame["care/k_prime_mean"] = hist @ np.arange(k + 1)
    frame["care/eq_factor_mean"] = np.sqrt(k / np.maximum(frame["care/k_prime_mean"], 1)) if is_care else 1.0
    frame["care/rescue_rate"] = all_fail if is_care else 0.0
    frame["care/anchor_think_len"] = 35 + rng.normal(0, 3, steps) if is_care else 0.0  # no anchor: 0
    attempts = rng.integers(4, 12, steps) if rgr else np.zeros(steps, dtype=int)
    successes = rng.binomial(attempts, 0.6)
    frame["rgr/attempts"] = attempts
    frame["rgr/successes"] = successes
    frame["rgr/repair_rate"] = successes / np.maximum(attempts, 1)  # 0 without attempts, as the trainer logs
    return frame


def write_metrics(files: RunFiles, curves: pd.DataFrame) -> None:
    """One metrics.jsonl row per curve row, through RunFiles.append_metrics."""
    columns = list(curves.columns)
    for values in curves.itertuples(index=False, name=None):
        row = {key: _plain(value) for key, value in zip(columns, values, strict=True)}
        files.append_metrics(int(row.pop("global_step")), row)


def write_run(root: str | Path, name: str, *, seed: int = 0, algorithm: str = "care",
              backbone: str = "tiny_qwen2_5_vl", sweep: str | None = None,
              overrides: dict[str, Any] | None = None, after: dict[str, float] | None = None,
              before: dict[str, float] | None = None, curves: pd.DataFrame | None = None,
              status: str = "finished", run_key: str | None = None, steps: int = 20,
              config: Config | None = None, base: dict[str, float] | None = None,
              after_items: dict[str, Any] | None = None, before_items: dict[str, Any] | None = None) -> Path:
    """Write one run dir under root/name; returns its path.

    `config` (a Config) replaces the one built from seed/algorithm/backbone; `overrides` maps
    dotted config keys to values (e.g. {"care.k": 2}); `after`/`before` map benchmark ->
    accuracy percent (macro defaults to their mean); `base` adds final.json's `base` entry (what eval.base
    scores: the backbone itself, under eval.base_extraction). status is finished, failed or unfinished.

    `after_items`/`before_items` map benchmark -> per-item verdicts, an array of booleans (items,) or
    (eval passes, items): written as the harness writes them (eval/after-<benchmark>-seed<k>.jsonl, one
    sample per item), and the benchmark's score, unless given in `after`/`before`, is their accuracy.
    """
    if status not in ("finished", "failed", "unfinished"):
        raise ValueError(f"status must be finished, failed or unfinished, got {status!r}")
    cfg = copy.deepcopy(config) if config is not None else base_config(seed, algorithm, backbone)
    for dotted, value in (overrides or {}).items():
        set_dotted(cfg, dotted, value)
    if sweep is not None:
        cfg.sweep = sweep
    if base is not None:
        cfg.eval.base = True
    files = RunFiles(Path(root) / name)
    choices = {"algorithm": cfg.algorithm.name, "backbone": cfg.backbone.name, "data": cfg.data.name}
    data = fake_data_counts(cfg)
    files.write_run_json(cfg, run_key=run_key or config_run_key(cfg), sweep=cfg.sweep, label=cfg.label,
                         choices=choices, world_size=1, code=FAKE_CODE, job=FAKE_JOB, data=data,
                         data_digest=None)
    if curves is None:
        curves = synthetic_curves(steps, seed=seed, algorithm=cfg.algorithm.name, k=cfg.care.k,
                                  rgr=cfg.rgr.enabled and cfg.algorithm.name == "care",
                                  format_reward=cfg.rl.format_weight > 0, kl=cfg.algorithm.beta != 0)
    write_metrics(files, curves)
    if status == "failed":
        files.mark_failed(RuntimeError("CUDA out of memory"))
    elif status == "finished":
        after = {**{b: item_accuracy(v) for b, v in (after_items or {}).items()}, **(after or {})} or None
        before = {**{b: item_accuracy(v) for b, v in (before_items or {}).items()}, **(before or {})} or None
        after = after if after is not None else {"synthetic": 50.0}
        before = before if before is not None else {bench: 40.0 for bench in after if bench != "macro"}
        for tag, items in (("after-", after_items), ("before-", before_items)):
            for bench, verdicts in (items or {}).items():
                write_samples(files.dir / "eval", tag, bench, verdicts)
        final = {"before": _scores(before), "after": _scores(after)}
        if base is not None:
            final["base"] = {**_scores(base), "extraction": cfg.eval.base_extraction}
        files.write_final({**final,
                           "global_step": int(curves["global_step"].max()), "processes": 1,
                           "timings": {"cold_start_s": 1.0, "rl_s": 1.0, "total_s": 3.0},
                           "policy_source": "/fake/cache/cold_start/policy", "data": data,
                           "reward": {"accuracy_weight": cfg.rl.accuracy_weight,
                                      "format_weight": cfg.rl.format_weight, "extraction": cfg.rl.extraction},
                           "eval_protocol": {"do_sample": cfg.eval.do_sample, "temperature": cfg.eval.temperature,
                                             "max_new_tokens": cfg.eval.max_new_tokens,
                                             "extraction": cfg.eval.extraction, "engine": cfg.eval.engine}})
    return files.dir


def write_samples(eval_dir: Path, tag: str, benchmark: str, verdicts: Any) -> None:
    """One file per eval pass, `<tag><benchmark>-seed<k>.jsonl`, a JSON line per item with the fields
    care.evaluation.protocol.sample writes, published atomically as care.evaluation.protocol.write_samples
    does (that module imports torch; this one must not)."""
    passes = np.atleast_2d(np.asarray(verdicts, dtype=bool))
    eval_dir.mkdir(parents=True, exist_ok=True)
    for seed, row in enumerate(passes):
        samples = [{"id": f"{benchmark}-{i}", "benchmark": benchmark, "source": benchmark, "response": "<answer>A</answer>",
                    "parsed": "A" if ok else "B", "gold": "A", "correct": bool(ok), "formatted": True}
                   for i, ok in enumerate(row)]
        write_text_atomic(eval_dir / pass_file(tag, benchmark, seed), "".join(json.dumps(s) + "\n" for s in samples))


def item_accuracy(verdicts: Any) -> float:
    """Percent correct over every pass and item (final.json's number for these verdicts)."""
    return 100.0 * float(np.mean(np.asarray(verdicts, dtype=float)))


def draw_verdicts(rng: np.random.Generator, difficulty: np.ndarray, skill: float, passes: int = 1) -> np.ndarray:
    """Known-distribution verdicts: item i right with probability sigmoid(skill - difficulty[i]), each pass
    independently; (passes, items) booleans."""
    p = 1.0 / (1.0 + np.exp(-(skill - np.asarray(difficulty, dtype=float))))
    return rng.random((passes, len(p))) < p


def fake_data_counts(cfg: Config) -> dict[str, Any]:
    """What care.data.training counts for a synthetic run of this config (nothing dropped)."""
    train, held_out, source = cfg.data.train_size or 0, cfg.data.eval_size, cfg.data.name
    return {"loaded": train + held_out, "duplicates_removed": 0, "filtered_overlong": 0, "train": train,
            "held_out": held_out, "max_prompt_length": cfg.rl.max_prompt_length,
            "train_by_source": {source: train}, "held_out_by_source": {source: held_out}, "dropped": {}, "escaped": {},
            "loaded_by_source": {source: train + held_out}, "subset_filtered": {}}


def set_mtime(path: Path, seconds: float) -> None:
    """Pin a file's mtime (dedupe picks the newest final.json)."""
    os.utime(path, (seconds, seconds))


def _plain(value: Any) -> Any:
    """numpy scalars to JSON-able Python values; non-finite to None like the trainer."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return value if np.isfinite(value) else None


def _scores(scores: dict[str, float]) -> dict[str, Any]:
    """A final.json before/after entry: per-benchmark accuracy, macro, its std over seeds, n, seeds."""
    scores = dict(scores)
    benches = [v for k, v in scores.items() if k not in ("macro", "macro_std", "n", "seeds")]
    scores.setdefault("macro", float(np.mean(benches)))
    scores.setdefault("macro_std", 0.0)
    scores.setdefault("n", 128)
    scores.setdefault("seeds", [0])
    return scores


# ---------------------------------------------------------------- the committed fixture tree

FIXTURE_SCORES = {"grpo": (41.4, 42.2, 43.0), "care": (46.1, 47.3, 45.8)}  # after-RL synthetic, seeds 0-2


def write_fixture_tree(root: str | Path, steps: int = 12) -> None:
    """tests/fixtures/runs: a Hydra multirun of sweep `main` (GRPO and CARE × seeds 0-2, finished),
    an earlier FAILED attempt of one of those runs (same run_key, superseded) and an unfinished
    run of an unrelated sweep. Regenerate with `python -m analysis.fake_runs tests/fixtures/runs`.
    """
    root = Path(root)
    sweep_dir = root / "sweep_main" / "2026-01-10" / "09-00-00"
    job = 0
    for algorithm, scores in FIXTURE_SCORES.items():
        for seed, score in enumerate(scores):
            run_dir = write_run(sweep_dir, str(job), seed=seed, algorithm=algorithm, sweep="main", steps=steps,
                                after={"synthetic": score}, before={"synthetic": 35.0 + seed})
            _hydra_files(run_dir, [f"algorithm={algorithm}", f"seed={seed}", "+sweep=main"])
            job += 1
    failed = write_run(root / "single" / "2026-01-09", "18-00-00-seed=1", seed=1, algorithm="care", sweep="main",
                       steps=3, status="failed")
    _hydra_files(failed, ["algorithm=care", "seed=1", "+sweep=main"])
    unfinished = write_run(root / "sweep_scratch" / "2026-01-11" / "10-00-00", "0", seed=0, algorithm="care",
                           sweep="scratch", overrides={"care.k": 2}, steps=5, status="unfinished")
    _hydra_files(unfinished, ["care.k=2", "+sweep=scratch"])


def _hydra_files(run_dir: Path, overrides: list[str]) -> None:
    """The .hydra folder Hydra leaves in each job dir (collect must look past it)."""
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


if __name__ == "__main__":
    import shutil
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/runs")
    shutil.rmtree(target, ignore_errors=True)
    write_fixture_tree(target)
    print(f"wrote {target}")
