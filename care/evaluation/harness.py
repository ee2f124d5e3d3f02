"""`task=eval`: evaluate a checkpoint on benchmarks under the one protocol, over seeds.

Writes per-sample `eval/<benchmark>-seed<k>.jsonl` and `eval_metrics.json` with each
benchmark's accuracy and the macro average as mean ± std over seeds (the macro is taken
per seed, then averaged), plus `final.json` so the run counts as finished. A training
run's before/after check goes through the same `evaluate_policy` (before: cached, `before_rl`).
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from care.config import Config, EvalConfig
from care.data.schema import Record
from care.evaluation.protocol import load_engine, sample, summarize, write_samples
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


def eval_seeds(cfg: EvalConfig) -> list[int]:
    """The passes to run: one per seed, or one in all when decoding is greedy (the seed is irrelevant)."""
    return list(cfg.seeds) if cfg.do_sample else list(cfg.seeds[:1])


def share(records: list[Record], part: int, parts: int) -> list[Record]:
    """The `part`-th of `parts` contiguous slices: in rank order they are `records` again."""
    n = len(records)
    return records[n * part // parts:n * (part + 1) // parts]


def rank_samples(cfg: Config, policy_dir: str, benchmarks: dict[str, list[Record]],
                 seeds: list[int]) -> dict[tuple[str, int], list[dict]]:
    """This process's share of every (benchmark, seed) pass over the policy in `policy_dir`, as
    verified samples.

    The job's processes split each benchmark between them. HF generate runs here; vLLM (and HF with
    `eval.isolate`) runs in a child process per engine (care.evaluation.worker), an engine of
    `eval.vllm_tensor_parallel_size` GPUs.
    """
    from care.distributed import local_rank, rank, world_size

    me, world = rank(), world_size()
    if cfg.eval.engine == "vllm" or cfg.eval.isolate:
        from care.evaluation.worker import child_gpus, run_child

        tp = cfg.eval.vllm_tensor_parallel_size if cfg.eval.engine == "vllm" else 1
        if world % tp:
            raise ValueError(f"eval.vllm_tensor_parallel_size={tp} does not divide this job's {world} processes; "
                             "choose a divisor, or 1 (one engine per GPU)")
        if me % tp:  # this GPU serves the engine of the rank below it
            return {(name, seed): [] for name in benchmarks for seed in seeds}
        mine = {name: share(records, me // tp, world // tp) for name, records in benchmarks.items()}
        return run_child(cfg, policy_dir, mine, seeds, child_gpus(local_rank(), tp))
    model, processor = load_engine(cfg, policy_dir)
    return {(name, seed): sample(model, processor, share(records, me, world), cfg.eval, seed=seed, benchmark=name)
            for seed in seeds for name, records in benchmarks.items()}


def score(samples: dict[tuple[str, int], list[dict]], benchmarks: dict[str, list[Record]], cfg: EvalConfig,
          out_dir: Path | None, tag: str = "", macro_of: list[str] | None = None) -> dict:
    """Every process's samples joined (in rank order: each benchmark's records in order), written as
    `<tag><benchmark>-seed<k>.jsonl` to `out_dir` (none when it is None); accuracy mean +- std over
    seeds, the macro taken per seed over `macro_of` (default: every benchmark)."""
    from accelerate.utils import gather_object

    from care.distributed import world_size

    macro_of = list(benchmarks) if macro_of is None else macro_of
    seeds = sorted({seed for _, seed in samples})
    per_seed: dict[int, dict[str, float]] = {seed: {} for seed in seeds}
    for (name, seed), mine in sorted(samples.items()):
        joined = gather_object(mine) if world_size() > 1 else mine
        if len(joined) != len(benchmarks[name]):
            raise RuntimeError(f"{name} seed {seed}: {len(joined)} samples for {len(benchmarks[name])} records")
        if out_dir is not None:
            write_samples(out_dir / f"{tag}{name}-seed{seed}.jsonl", joined)
        per_seed[seed][name] = summarize(joined)["accuracy"][name] if joined else 0.0
    return {
        "benchmarks": {name: mean_std([per_seed[s][name] for s in seeds]) for name in benchmarks},
        "macro": mean_std([statistics.fmean(per_seed[s][name] for name in macro_of) for s in seeds]),
        "macro_of": macro_of,
        "per_seed": {str(s): per_seed[s] for s in seeds},
        "n": {name: len(records) for name, records in benchmarks.items()},
        "seeds": seeds,
        "protocol": {"do_sample": cfg.do_sample, "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
                     "extraction": cfg.extraction, "engine": cfg.engine},
    }


def evaluate_policy(cfg: Config, policy_dir: str, benchmarks: dict[str, list[Record]], out_dir: Path | None,
                    tag: str = "", macro_of: list[str] | None = None) -> dict:
    """Score the policy in `policy_dir` on `benchmarks`."""
    samples = rank_samples(cfg, policy_dir, benchmarks, eval_seeds(cfg.eval))
    return score(samples, benchmarks, cfg.eval, out_dir, tag=tag, macro_of=macro_of)


def policy_fingerprint(policy_dir: str) -> list:
    """What identifies a saved policy cheaply: its files' names, sizes and modification times."""
    root = Path(policy_dir)
    return [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()]


def before_key(cfg: Config, policy_dir: str, benchmarks: dict[str, list[Record]], macro_of: list[str]) -> str:
    """Everything the before-RL scores depend on: the policy, the protocol, the records, the engine,
    the pixel caps and the job's width (HF batches differ with the share each process gets)."""
    from care.distributed import world_size
    from care.hashing import config_hash, digest

    ev = cfg.eval
    protocol = (ev.engine, ev.isolate, ev.do_sample, ev.temperature, ev.max_new_tokens, ev.batch_size,
                ev.extraction, eval_seeds(ev))
    records = {name: digest(*(f"{r.id}\t{r.answer}\n" for r in recs), length=16) for name, recs in benchmarks.items()}
    backbone = (cfg.backbone.name, cfg.backbone.dtype, cfg.backbone.attn_implementation, cfg.backbone.min_pixels,
                cfg.backbone.max_pixels, cfg.rl.compute_dtype)
    return config_hash("before/v1", policy_fingerprint(policy_dir), protocol, records, macro_of, backbone,
                       world_size())


def before_rl(cfg: Config, policy_dir: str, benchmarks: dict[str, list[Record]], macro_of: list[str],
              eval_dir: Path | None) -> dict:
    """The before-RL scores of the policy RL starts from, evaluated once per policy and protocol.

    Every RL run of a sweep that shares a cold start shares these scores: the first job to need them
    evaluates (under a lock, as the cold start is built) into `cache_dir/eval/before-<key>/`, the
    others wait and reuse it. The run's own eval/ gets a copy of the per-sample files.
    """
    from contextlib import nullcontext

    from care.atomic import staged_directory, write_json_atomic
    from care.cache import build_once
    from care.distributed import is_main_process

    out = Path(cfg.cache_dir).expanduser() / "eval" / f"before-{before_key(cfg, policy_dir, benchmarks, macro_of)}"

    def evaluate() -> None:
        """Every rank scores its share; rank 0 writes the samples and the scores into a folder that
        is published as `out` whole (or dropped, if the evaluation fails)."""
        with staged_directory(out) if is_main_process() else nullcontext() as staging:
            metrics = evaluate_policy(cfg, policy_dir, benchmarks, staging, tag="before-", macro_of=macro_of)
            if staging is not None:
                write_json_atomic(staging / "eval_metrics.json", {**metrics, "checkpoint": policy_dir})

    build_once(out, evaluate, marker="eval_metrics.json")
    if eval_dir is not None:
        eval_dir.mkdir(parents=True, exist_ok=True)
        for path in out.glob("before-*.jsonl"):
            shutil.copyfile(path, eval_dir / path.name)
    metrics = json.loads((out / "eval_metrics.json").read_text())
    del metrics["checkpoint"]
    return metrics


def flat(metrics: dict) -> dict:
    """The final.json view: per-benchmark mean accuracy, macro, its std over seeds, sample counts."""
    return {**{name: m["mean"] for name, m in metrics["benchmarks"].items()}, "macro": metrics["macro"]["mean"],
            "macro_std": metrics["macro"]["std"], "n": sum(metrics["n"].values()), "seeds": metrics["seeds"]}


def run_eval(cfg: Config, files: RunFiles) -> dict:
    from care.atomic import write_json_atomic
    from care.models import resolve_backbone

    source = cfg.checkpoint or resolve_backbone(cfg.backbone, cfg.cache_dir)
    benchmarks = {name: benchmark_records(cfg, name) for name in cfg.eval.benchmarks}
    metrics = {**evaluate_policy(cfg, source, benchmarks, files.eval_dir), "checkpoint": source}
    if files.writer:
        write_json_atomic(files.dir / "eval_metrics.json", metrics)
    return {"after": flat(metrics), "eval": metrics}


def check_benchmarks_reachable(cfg: Config) -> None:
    """Read one record of each benchmark now, so a missing dataset fails before any work."""
    for name in cfg.eval.benchmarks:
        if name != "synthetic":
            from care.data.loading import load_records
            load_records(name, path=cfg.eval.paths.get(name), limit=1)
