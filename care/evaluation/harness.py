"""`task=eval`: evaluate a checkpoint on benchmarks under the one protocol, over seeds.

Writes per-sample `eval/<benchmark>-seed<k>.jsonl` and `eval_metrics.json` with each
benchmark's accuracy and the macro average as mean ± std over seeds (the macro is taken
per seed, then averaged), plus `final.json` so the run counts as finished. A training
run's before/after check calls the same `score`.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from care.config import Config, EvalConfig
from care.data.schema import Record
from care.evaluation.protocol import evaluate
from care.tracking import RunFiles


def benchmark_records(cfg: Config, name: str) -> list[Record]:
    """A benchmark's records; `synthetic` is the held-out slice of the configured training data."""
    if name == "synthetic":
        from care.data.training import prepare
        records = prepare(cfg).held_out
        return records[:cfg.eval.limit] if cfg.eval.limit else records
    from care.data.loading import load_records
    return load_records(name, path=cfg.eval.paths.get(name), limit=cfg.eval.limit)


def before_after_benchmarks(cfg: Config, held_out: list[Record]) -> tuple[dict[str, list[Record]], list[str]]:
    """What a training run scores before and after RL, and which of them the macro averages.

    Every benchmark of `eval.benchmarks` plus the run's held-out training slice, reported under the
    training data's name (`data.name`; "synthetic" in the default run). The macro is over
    `eval.benchmarks` as `task=eval` takes it (eval=paper6: the six), or over the held-out slice
    when the check is the synthetic one alone (eval=synthetic, the default).
    """
    held_out = held_out[:cfg.eval.limit] if cfg.eval.limit else held_out
    external = [name for name in cfg.eval.benchmarks if name != "synthetic"]
    benchmarks = {name: benchmark_records(cfg, name) for name in external}
    benchmarks[cfg.data.name] = held_out
    return benchmarks, external or [cfg.data.name]


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def score(model, processor, benchmarks: dict[str, list[Record]], cfg: EvalConfig, out_dir: Path | None,
          tag: str = "", macro_of: list[str] | None = None) -> dict:
    """One pass per seed over every benchmark; accuracy mean ± std over seeds, macro taken per seed over
    `macro_of` (default: every benchmark). Per-sample jsonl files go to `out_dir` (none when it is None)."""
    macro_of = list(benchmarks) if macro_of is None else macro_of
    greedy = not cfg.do_sample
    seeds = cfg.seeds[:1] if greedy else cfg.seeds  # greedy decoding does not depend on the seed
    per_seed: dict[int, dict[str, float]] = {}
    for seed in seeds:
        per_seed[seed] = {}
        for name, records in benchmarks.items():
            path = out_dir / f"{tag}{name}-seed{seed}.jsonl" if out_dir is not None else None
            per_seed[seed][name] = evaluate(model, processor, records, cfg, path, seed=seed,
                                           benchmark=name)["accuracy"][name]
    return {
        "benchmarks": {name: mean_std([per_seed[s][name] for s in per_seed]) for name in benchmarks},
        "macro": mean_std([statistics.fmean(scores[name] for name in macro_of) for scores in per_seed.values()]),
        "macro_of": macro_of,
        "per_seed": {str(s): scores for s, scores in per_seed.items()},
        "n": {name: len(records) for name, records in benchmarks.items()},
        "seeds": list(seeds),
        "protocol": {"do_sample": cfg.do_sample, "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
                     "extraction": cfg.extraction},
    }


def flat(metrics: dict) -> dict:
    """The final.json view: per-benchmark mean accuracy, macro, its std over seeds, sample counts."""
    return {**{name: m["mean"] for name, m in metrics["benchmarks"].items()}, "macro": metrics["macro"]["mean"],
            "macro_std": metrics["macro"]["std"], "n": sum(metrics["n"].values()), "seeds": metrics["seeds"]}


def run_eval(cfg: Config, files: RunFiles) -> dict:
    from care.atomic import write_json_atomic
    from care.models import load_backbone

    cache_dir = Path(cfg.cache_dir).expanduser().resolve()
    benchmarks = {name: benchmark_records(cfg, name) for name in cfg.eval.benchmarks}
    if cfg.eval.engine == "vllm":
        from care.evaluation.protocol import VllmEngine
        from care.models import load_processor, resolve_backbone
        from care.models.loading import vllm_mm_processor_kwargs

        source = cfg.checkpoint or resolve_backbone(cfg.backbone, cache_dir)
        caps = (cfg.backbone.min_pixels, cfg.backbone.max_pixels)  # the prompt text and vLLM's images agree
        processor = load_processor(source, cfg.backbone.family, *caps)
        max_images = max((len(r.images) for records in benchmarks.values() for r in records), default=1)
        model = VllmEngine(source, dtype=cfg.rl.compute_dtype, max_images=max(1, max_images),
                           gpu_memory_utilization=cfg.eval.vllm_gpu_memory_utilization,
                           tensor_parallel_size=cfg.eval.vllm_tensor_parallel_size,
                           mm_processor_kwargs=vllm_mm_processor_kwargs(*caps))
    else:
        model, processor, source = load_backbone(cfg.backbone, cache_dir, source=cfg.checkpoint)
    metrics = {**score(model, processor, benchmarks, cfg.eval, files.eval_dir), "checkpoint": source}
    if files.writer:
        write_json_atomic(files.dir / "eval_metrics.json", metrics)
    return {"after": flat(metrics), "eval": metrics}


def check_benchmarks_reachable(cfg: Config) -> None:
    """Read one record of each benchmark now, so a missing dataset fails before any work."""
    for name in cfg.eval.benchmarks:
        if name != "synthetic":
            from care.data.loading import load_records
            load_records(name, path=cfg.eval.paths.get(name), limit=1)
