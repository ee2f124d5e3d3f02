"""Run directories in the trainer's exact on-disk format, with numbers chosen by the caller.

Tests write them to check tables against known values, the benchmark writes a thousand to
time `collect`. The layout is the run-directory contract of care/tracking.py: `run.json`,
append-only `metrics.jsonl`, `final.json` when finished, `FAILED` when the run died.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.frames import config_run_key

K_DEFAULT = 4


def base_config(seed: int = 0, algorithm: str = "care", backbone: str = "tiny_qwen2_5_vl",
                data: str = "synthetic") -> dict[str, Any]:
    """A resolved config shaped like `dataclasses.asdict(care.config.Config())` plus `rgr`."""
    return {
        "task": "train", "seed": seed, "threads": 2, "cache_dir": ".cache/care",
        "backbone": {"name": backbone, "family": "qwen2_5_vl", "hub_id": None, "path": None, "dtype": "float32",
                     "tiny": {"hidden_size": 128, "num_layers": 4}},
        "data": {"name": data, "seed": 0, "train_size": 2048, "eval_size": 128},
        "rl": {"steps": 60, "num_generations": 8, "prompts_per_step": 8, "learning_rate": 1e-3},
        "algorithm": {"name": algorithm, "loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.3, "beta": 0.0},
        "care": {"k": K_DEFAULT, "m": 6, "s": 0.5, "s_refl": 0.25, "equalize": True, "rescue": True,
                 "anchor": "shortest_think", "selector": "cosine", "token_credit": "region", "tau_pos": 0.005},
        "rgr": {"enabled": algorithm == "care", "variant": "cue"},
        "wandb": {"mode": "disabled", "project": "care", "entity": None, "group": None, "tags": []},
    }


def set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    """`set_dotted(cfg, "care.k", 2)` sets cfg["care"]["k"], creating groups on the way."""
    *groups, leaf = dotted.split(".")
    node = config
    for group in groups:
        node = node.setdefault(group, {})
    node[leaf] = value


def synthetic_curves(steps: int, *, seed: int = 0, algorithm: str = "care", rgr: bool = False,
                     k: int = K_DEFAULT) -> pd.DataFrame:
    """Plausible per-step metrics under every key the trainer logs (nulls included)."""
    rng = np.random.default_rng(seed)
    step = np.arange(1, steps + 1)
    progress = step / steps
    is_care = algorithm == "care"
    accuracy = np.clip(0.3 + 0.3 * progress + rng.normal(0, 0.03, steps), 0, 1)
    all_fail = np.clip(0.35 - 0.25 * progress + rng.normal(0, 0.02, steps), 0, 1)
    all_correct = np.clip(0.05 + 0.2 * progress + rng.normal(0, 0.02, steps), 0, 1)
    frame = pd.DataFrame({
        "global_step": step,
        "train/accuracy": accuracy,
        "train/reward": accuracy + rng.normal(0, 0.01, steps),
        "train/loss": rng.normal(0, 0.05, steps),
        "train/grad_norm": np.abs(rng.normal(1, 0.2, steps)),
        "train/learning_rate": np.full(steps, 1e-3),
        "train/groups_all_fail": all_fail,
        "train/groups_all_correct": all_correct,
        "train/correct_think_len": 40 + rng.normal(0, 3, steps),
        "signal/zero_signal_groups": all_correct if is_care else all_fail + all_correct,
        "signal/fss_neg": np.clip((0.55 if is_care else 0.45) + rng.normal(0, 0.03, steps), 0, 1),
        "signal/fss_fail_derived": np.clip((0.6 if is_care else 0.45) + rng.normal(0, 0.03, steps), 0, 1),
        "signal/nonzero_grad_prompts": 1 - (all_correct if is_care else all_fail + all_correct),
        "signal/adv_mass_pos": np.abs(rng.normal(2, 0.1, steps)),
        "signal/adv_mass_neg": np.abs(rng.normal(1, 0.1, steps)),
    })
    frame.loc[rng.random(steps) < 0.02, "train/correct_think_len"] = np.nan  # no correct rollout that step
    if is_care:
        hist = rng.dirichlet(np.arange(1, k + 2), size=steps)
        for k_prime in range(k + 1):
            frame[f"care/k_prime_hist/{k_prime}"] = hist[:, k_prime]
        frame["care/k_prime_mean"] = hist @ np.arange(k + 1)
        frame["care/eq_factor_mean"] = np.sqrt(k / np.maximum(frame["care/k_prime_mean"], 1))
        frame["care/rescue_rate"] = all_fail
        frame["care/anchor_think_len"] = 35 + rng.normal(0, 3, steps)
    if rgr:
        attempts = rng.integers(4, 12, steps)
        successes = rng.binomial(attempts, 0.6)
        frame["rgr/attempts"] = attempts
        frame["rgr/successes"] = successes
        frame["rgr/repair_rate"] = successes / attempts
    return frame


def write_metrics(run_dir: Path, curves: pd.DataFrame) -> None:
    """metrics.jsonl as care.tracking.RunFiles.append_metrics writes it: sorted keys, NaN as null."""
    columns = list(curves.columns)
    lines = []
    for values in curves.itertuples(index=False, name=None):
        row = {key: _plain(value) for key, value in zip(columns, values, strict=True)}
        row["global_step"] = int(row["global_step"])
        lines.append(json.dumps(row, sort_keys=True) + "\n")
    (run_dir / "metrics.jsonl").write_text("".join(lines))


def write_run(root: str | Path, name: str, *, seed: int = 0, algorithm: str = "care",
              backbone: str = "tiny_qwen2_5_vl", sweep: str | None = None,
              overrides: dict[str, Any] | None = None, after: dict[str, float] | None = None,
              before: dict[str, float] | None = None, curves: pd.DataFrame | None = None,
              status: str = "finished", run_key: str | None = None, repair_rate: float | None = None,
              steps: int = 20, config: dict[str, Any] | None = None) -> Path:
    """Write one run dir under root/name; returns its path.

    `overrides` maps dotted config keys to values (e.g. {"care.k": 2}); `after`/`before`
    map benchmark -> accuracy percent (macro defaults to their mean). status is
    finished, failed or unfinished.
    """
    config = copy.deepcopy(config) if config is not None else base_config(seed, algorithm, backbone)
    for dotted, value in (overrides or {}).items():
        set_dotted(config, dotted, value)
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    choices = {"algorithm": config["algorithm"]["name"], "backbone": config["backbone"]["name"],
               "data": config["data"]["name"]}
    run_json = {"config": config, "run_key": run_key or config_run_key(config), "sweep": sweep,
                "choices": choices, "label": None}
    (run_dir / "run.json").write_text(json.dumps(run_json, indent=2, sort_keys=True))
    rgr_on = bool(config.get("rgr", {}).get("enabled"))
    if curves is None:
        curves = synthetic_curves(steps, seed=seed, algorithm=config["algorithm"]["name"], rgr=rgr_on,
                                  k=config["care"]["k"])
    write_metrics(run_dir, curves)
    if status == "failed":
        (run_dir / "FAILED").write_text("Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
    elif status == "finished":
        after = after if after is not None else {"synthetic": 50.0}
        before = before if before is not None else {bench: 40.0 for bench in after if bench != "macro"}
        final = {"before": _with_macro(before), "after": _with_macro(after),
                 "global_step": int(curves["global_step"].max()), "timings": {"total_s": 1.0}}
        if repair_rate is not None:
            final["rgr"] = {"repair_rate": repair_rate}
        (run_dir / "final.json").write_text(json.dumps(final, indent=2, sort_keys=True))
    elif status != "unfinished":
        raise ValueError(f"status must be finished, failed or unfinished, got {status!r}")
    return run_dir


def set_mtime(path: Path, seconds: float) -> None:
    """Pin a file's mtime (dedupe picks the newest final.json)."""
    os.utime(path, (seconds, seconds))


def _plain(value: Any) -> Any:
    """numpy scalars to JSON-able Python values; non-finite to None like the trainer."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return value if np.isfinite(value) else None


def _with_macro(scores: dict[str, float]) -> dict[str, float]:
    scores = dict(scores)
    benches = [v for k, v in scores.items() if k not in ("macro", "n")]
    scores.setdefault("macro", float(np.mean(benches)))
    scores.setdefault("n", 128)
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
