"""`task=eval`: evaluate a checkpoint on benchmarks under the one protocol, over seeds.

Writes per-sample `eval/<benchmark>-seed<k>.jsonl` and `eval_metrics.json` with each
benchmark's accuracy and the macro average as mean ± std over seeds (the macro is taken
per seed, then averaged), plus `final.json` so the run counts as finished.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from care.config import Config
from care.data.schema import Record
from care.evaluation.protocol import evaluate
from care.tracking import RunFiles


def benchmark_records(cfg: Config, name: str) -> list[Record]:
    if name == "synthetic":
        from care.pipeline import load_data
        records = load_data(cfg)[1]
        return records[:cfg.eval.limit] if cfg.eval.limit else records
    from care.data.loading import load_records
    return load_records(name, path=cfg.eval.paths.get(name), limit=cfg.eval.limit)


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def run_eval(cfg: Config, files: RunFiles) -> dict:
    from care.models import load_backbone

    cache_dir = Path(cfg.cache_dir).expanduser().resolve()
    model, processor, source = load_backbone(cfg.backbone, cache_dir, source=cfg.checkpoint)
    benchmarks = {name: benchmark_records(cfg, name) for name in cfg.eval.benchmarks}
    per_seed: dict[int, dict[str, float]] = {}
    for seed in cfg.eval.seeds:
        per_seed[seed] = {}
        for name, records in benchmarks.items():
            summary = evaluate(model, processor, records, cfg.eval, files.dir / "eval" / f"{name}-seed{seed}.jsonl",
                               seed=seed)
            per_seed[seed][name] = summary["accuracy"][name]
    macro_by_seed = [statistics.fmean(scores.values()) for scores in per_seed.values()]
    metrics = {
        "benchmarks": {name: mean_std([per_seed[s][name] for s in per_seed]) for name in benchmarks},
        "macro": mean_std(macro_by_seed),
        "per_seed": {str(s): scores for s, scores in per_seed.items()},
        "n": {name: len(records) for name, records in benchmarks.items()},
        "seeds": list(cfg.eval.seeds),
        "protocol": {"do_sample": cfg.eval.do_sample, "temperature": cfg.eval.temperature,
                     "max_new_tokens": cfg.eval.max_new_tokens},
        "checkpoint": source,
    }
    from care.tracking import write_json_atomic
    write_json_atomic(files.dir / "eval_metrics.json", metrics)
    after = {name: m["mean"] for name, m in metrics["benchmarks"].items()}
    return {"after": {**after, "macro": metrics["macro"]["mean"]}, "eval": metrics}


def check_benchmarks_reachable(cfg: Config) -> None:
    """Read one record of each benchmark now, so a missing dataset fails before any work."""
    for name in cfg.eval.benchmarks:
        if name != "synthetic":
            from care.data.loading import load_records
            load_records(name, path=cfg.eval.paths.get(name), limit=1)
