"""`task=eval`: evaluate a checkpoint on benchmarks under the one protocol, over seeds.

Writes per-sample `eval/<benchmark>-seed<k>.jsonl` and `eval_metrics.json` with each
benchmark's accuracy and the macro average as mean ± std over seeds (the macro is taken
per seed, then averaged), plus `final.json` so the run counts as finished. A training
run's before/after check goes through the same `evaluate_policy` (before: cached, `before_rl`).
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path

from care.config import Config, EvalConfig
from care.data.schema import Record
from care.evaluation.protocol import load_engine, sample, summarize, write_samples
from care.tracking import RunFiles

log = logging.getLogger(__name__)


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


def pass_file(tag: str, name: str, seed: int) -> str:
    """The per-sample file of one (benchmark, seed) pass."""
    return f"{tag}{name}-seed{seed}.jsonl"


def rank_samples(cfg: Config, policy_dir: str, benchmarks: dict[str, list[Record]],
                 passes: list[tuple[str, int]]) -> Iterator[tuple[tuple[str, int], list[dict]]]:
    """This process's share of each (benchmark, seed) pass of `passes` over the policy in `policy_dir`, as
    verified samples, pass by pass in the order given (nothing is loaded when there is none).

    The job's processes split each benchmark between them. HF generate runs here; vLLM (and HF with
    `eval.isolate`) runs in a child process per engine (care.evaluation.worker), an engine of
    `eval.vllm_tensor_parallel_size` GPUs, over all of `passes` at once.
    """
    from care.distributed import local_rank, rank, world_size

    if not passes:
        return
    me, world = rank(), world_size()
    if cfg.eval.engine == "vllm" or cfg.eval.isolate:
        from care.evaluation.worker import child_gpus, run_child

        tp = cfg.eval.vllm_tensor_parallel_size if cfg.eval.engine == "vllm" else 1
        if world % tp:
            raise ValueError(f"eval.vllm_tensor_parallel_size={tp} does not divide this job's {world} processes; "
                             "choose a divisor, or 1 (one engine per GPU)")
        if me % tp:  # this GPU serves the engine of the rank below it
            yield from (((name, seed), []) for name, seed in passes)
            return
        names = [name for name in benchmarks if any(name == wanted for wanted, _ in passes)]
        seeds = list(dict.fromkeys(seed for _, seed in passes))
        mine = {name: share(benchmarks[name], me // tp, world // tp) for name in names}
        made = run_child(cfg, policy_dir, mine, seeds, child_gpus(local_rank(), tp))
        yield from ((done, made[done]) for done in passes)
        return
    model, processor = load_engine(cfg, policy_dir)
    for name, seed in passes:
        yield (name, seed), sample(model, processor, share(benchmarks[name], me, world), cfg.eval, seed=seed,
                                   benchmark=name)


def pass_accuracy(joined: list[dict], name: str) -> float:
    """One pass's accuracy on benchmark `name` (percent; 0 for a benchmark without records)."""
    return summarize(joined)["accuracy"][name] if joined else 0.0


def finished_passes(out_dir: Path | None, tag: str, benchmarks: dict[str, list[Record]],
                    passes: list[tuple[str, int]]) -> dict[tuple[str, int], float]:
    """The passes of `passes` whose file in `out_dir` is complete (published whole, one sample per record in
    order), with their accuracy: what an evaluation killed midway had finished. Also removes the temporary
    files of writes a kill cut short. Nothing without `out_dir` (the processes that do not write)."""
    from care.evaluation.protocol import read_samples

    done: dict[tuple[str, int], float] = {}
    if out_dir is None:
        return done
    for name, seed in passes:
        path = out_dir / pass_file(tag, name, seed)
        for torn in out_dir.glob(f".{path.name}-*"):  # care.atomic's temporary file, left by a kill
            torn.unlink(missing_ok=True)
        if not path.is_file():
            continue
        try:
            joined = read_samples(path)
        except (OSError, ValueError):
            joined = None
        if joined is None or [(s.get("id"), s.get("benchmark")) for s in joined] != \
                [(r.id, name) for r in benchmarks[name]]:
            log.warning("%s does not hold this pass's samples (one per record, in order); evaluating it again", path)
            continue
        done[(name, seed)] = pass_accuracy(joined, name)
    return done


def score(accuracy: dict[tuple[str, int], float], benchmarks: dict[str, list[Record]], cfg: EvalConfig,
          macro_of: list[str] | None = None) -> dict:
    """Each (benchmark, seed) pass's accuracy summed up: accuracy mean +- std over seeds, the macro taken per
    seed over `macro_of` (default: every benchmark)."""
    macro_of = list(benchmarks) if macro_of is None else macro_of
    seeds = sorted({seed for _, seed in accuracy})
    per_seed: dict[int, dict[str, float]] = {seed: {} for seed in seeds}
    for (name, seed), value in sorted(accuracy.items()):
        per_seed[seed][name] = value
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
    """Score the policy in `policy_dir` on `benchmarks`, one (benchmark, seed) pass at a time.

    Every process's samples of a pass are joined (in rank order: each benchmark's records in order) and
    published as `out_dir/<tag><benchmark>-seed<k>.jsonl` as soon as the pass is done (rank 0 writes,
    atomically; nothing when `out_dir` is None). A pass whose file is already there, complete, is read
    back instead of generated again, so an evaluation killed midway (a preempted or requeued job) resumes
    with the passes it had finished: rank 0 decides which, every process skips the same.
    """
    from accelerate.utils import gather_object

    from care.console import Progress
    from care.distributed import main_process_decides, world_size

    passes = [(name, seed) for seed in eval_seeds(cfg.eval) for name in benchmarks]
    accuracy = main_process_decides(finished_passes(out_dir, tag, benchmarks, passes))
    if accuracy:
        log.info("resuming evaluation: %d of %d passes done", len(accuracy), len(passes))
    todo = [p for p in passes if p not in accuracy]
    with Progress(len(todo), f"{tag or 'eval-'}passes", unit="pass") as progress:
        for (name, seed), mine in rank_samples(cfg, policy_dir, benchmarks, todo):
            joined = gather_object(mine) if world_size() > 1 else mine
            if len(joined) != len(benchmarks[name]):
                raise RuntimeError(f"{name} seed {seed}: {len(joined)} samples for {len(benchmarks[name])} records")
            if out_dir is not None:
                write_samples(out_dir / pass_file(tag, name, seed), joined)
            accuracy[(name, seed)] = pass_accuracy(joined, name)
            progress.update()
    return score(accuracy, benchmarks, cfg.eval, macro_of)


def policy_fingerprint(policy_dir: str) -> list:
    """What identifies a saved policy wherever it lies: its files' names, sizes and content digests
    (care.hashing.tree_digest: memoised per machine, so weights are read once, not per job)."""
    from care.hashing import tree_digest

    return tree_digest(policy_dir)


def record_digest(record: Record) -> str:
    """Everything of a record the model sees or is scored on: id, prompt text (question, choices),
    answer, answer type, source, and each image's content (care.data.adapters.common.image_content_digest)."""
    from care.data.adapters.common import image_content_digest
    from care.data.schema import prompt_text
    from care.hashing import digest

    scored = [record.id, prompt_text(record), record.choices, record.answer, record.answer_type, record.source]
    return digest(json.dumps(scored), *(f"\n{image_content_digest(image)}" for image in record.images), length=16)


def before_key(cfg: Config, policy_dir: str, benchmarks: dict[str, list[Record]], macro_of: list[str]) -> str:
    """Everything the before-RL scores depend on: the policy's content, the protocol, every record's
    content (text and image bytes: a changed picture under the same id is scored again), the engine and
    the pixel caps; never a path, so a copied cache is reused. Not the width of the job that reads them:
    a sweep's before-RL phase is scored once, by its own job, and runs of any width reuse it
    (eval_metrics.json records the processes that scored it; sampled HF scores move with how the prompts
    were split, within sampling noise)."""
    from care.hashing import config_hash, digest

    ev = cfg.eval
    protocol = (ev.engine, ev.isolate, ev.do_sample, ev.temperature, ev.max_new_tokens, ev.batch_size,
                ev.extraction, eval_seeds(ev))
    records = {name: digest(*(f"{record_digest(r)}\n" for r in recs), length=16) for name, recs in benchmarks.items()}
    backbone = (cfg.backbone.name, cfg.backbone.dtype, cfg.backbone.attn_implementation, cfg.backbone.min_pixels,
                cfg.backbone.max_pixels, cfg.rl.compute_dtype)
    return config_hash("before/v3", policy_fingerprint(policy_dir), protocol, records, macro_of, backbone)


def before_dir(cfg: Config, policy_dir: str, benchmarks: dict[str, list[Record]], macro_of: list[str],
               tag: str = "before-") -> Path:
    """Where the before-RL scores of `policy_dir` under this protocol are cached (done once it holds
    eval_metrics.json); tag `base-` holds the backbone's own scores (care.phases.BASE)."""
    return Path(cfg.cache_dir).expanduser() / "eval" / f"{tag}{before_key(cfg, policy_dir, benchmarks, macro_of)}"


def before_state(cfg: Config, policy_dir: str, benchmarks: dict[str, list[Record]], macro_of: list[str]) -> str:
    """What the before-RL phase will do, for the console: reuse the cached scores or score them."""
    cached = before_dir(cfg, policy_dir, benchmarks, macro_of)
    if (cached / "eval_metrics.json").is_file():
        return f"reusing {cached}"
    prompts = sum(len(records) for records in benchmarks.values())
    return f"scoring {prompts} prompts of {len(benchmarks)} benchmark(s) x {len(eval_seeds(cfg.eval))} pass(es)"


def before_rl(cfg: Config, policy_dir: str, benchmarks: dict[str, list[Record]], macro_of: list[str],
              eval_dir: Path | None, tag: str = "before-") -> dict:
    """The before-RL scores of the policy RL starts from, evaluated once per policy and protocol.

    Every RL run of a sweep that shares a cold start shares these scores: the first job to need them
    evaluates (under a lock, as the cold start is built) into `cache_dir/eval/before-<key>/`, the
    others wait and reuse it. The run's own eval/ gets a copy of the per-sample files.
    """
    import os

    from care.atomic import write_json_atomic
    from care.cache import build_once
    from care.distributed import is_main_process, world_size

    out = before_dir(cfg, policy_dir, benchmarks, macro_of, tag)

    def evaluate() -> None:
        """Every rank scores its share; rank 0 publishes each finished pass into `.<out>.partial/`, which
        outlives a kill (the next build of this key resumes from the passes there), then the scores beside
        them, and renames the folder to `out` whole."""
        partial = out.parent / f".{out.name}.partial"
        if is_main_process():  # a killed build's finished passes stay; whatever else it left goes
            partial.mkdir(parents=True, exist_ok=True)
            passes = {pass_file(tag, name, seed) for seed in eval_seeds(cfg.eval) for name in benchmarks}
            for path in partial.iterdir():
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.name not in passes:
                    path.unlink()
        metrics = evaluate_policy(cfg, policy_dir, benchmarks, partial if is_main_process() else None, tag=tag,
                                  macro_of=macro_of)
        if is_main_process():
            write_json_atomic(partial / "eval_metrics.json",
                              {**metrics, "checkpoint": policy_dir, "processes": world_size()})
            os.rename(partial, out)

    build_once(out, evaluate, marker="eval_metrics.json")
    if eval_dir is not None:
        eval_dir.mkdir(parents=True, exist_ok=True)
        for path in out.glob(f"{tag}*.jsonl"):
            shutil.copyfile(path, eval_dir / path.name)
    metrics = json.loads((out / "eval_metrics.json").read_text())
    del metrics["checkpoint"]
    metrics.pop("processes", None)
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


def check_benchmarks_reachable(cfg: Config, problems: list[str] | None = None) -> None:
    """Read one record of each benchmark now, so a missing dataset fails before any work.

    Every unreachable benchmark is named, not just the first: appended to `problems` when given (preflight
    lists them with its other problems), else raised (one as it was raised, several in one ValueError).
    """
    from care.data.loading import load_records

    errors: list[Exception] = []
    for name in cfg.eval.benchmarks:
        if name != "synthetic":
            try:
                load_records(name, path=cfg.eval.paths.get(name), limit=1)
            except (ValueError, OSError) as err:  # DatasetUnavailable, MalformedRow, an image that does not open
                errors.append(err)
    if problems is not None:
        problems += [str(err) for err in errors]
    elif len(errors) == 1:
        raise errors[0]
    elif errors:
        raise ValueError("; ".join(str(err) for err in errors))
