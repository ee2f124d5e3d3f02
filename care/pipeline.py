"""The Hydra-free training entry: config + run directory in, run files out.

data -> backbone -> cold start (cached) -> eval before -> RL -> eval after -> final.json.
Tests call `train` directly; run.py only composes and validates the config first.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from pathlib import Path

import torch

from care.config import Config
from care.tracking import RunFiles, WandbMirror

log = logging.getLogger(__name__)


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def newest_checkpoint(directory: Path) -> str | None:
    """The newest complete Trainer checkpoint on disk (never from a pickled submission)."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(directory)) if directory.is_dir() else None


def load_data(cfg: Config):
    from care.data.synthetic import make_splits
    return make_splits(cfg.data.seed, cfg.data.train_size, cfg.data.eval_size, cfg.data.grid, cfg.data.cell_px)


def train(cfg: Config, run_dir: str | Path, choices: dict[str, str] | None = None) -> dict:
    """Run one job end to end (training, or `task=eval`); returns what final.json holds.

    `choices` are the config-group selections (Hydra's runtime choices), kept for analysis.
    """
    from care.identity import run_key

    key = run_key(cfg)
    files = RunFiles(run_dir)
    done = files.read_final()
    if done is not None:  # a re-issued or requeued job that already finished: nothing to do
        log.info("%s already holds final.json; skipping", files.dir)
        return done
    files.write_run_json(cfg, run_key=key, sweep=cfg.sweep, label=cfg.label, choices=choices or {})
    mirror = WandbMirror(cfg, files.dir, run_id=key, choices=choices or {})
    try:
        if cfg.task == "eval":
            from care.evaluation.harness import run_eval
            final = run_eval(cfg, files)
            files.write_final(final)
        else:
            final = _train(cfg, files, mirror)
    except BaseException as err:
        files.mark_failed(err)
        mirror.finish(exit_code=1)
        raise
    mirror.summary({f"final/{k}": v for k, v in final["after"].items() if isinstance(v, float)})
    mirror.finish()
    return final


def _train(cfg: Config, files: RunFiles, mirror: WandbMirror) -> dict:
    from datasets import Dataset

    from care.coldstart import run_cold_start
    from care.data.schema import to_prompt_row
    from care.evaluation.harness import flat, score
    from care.models import load_backbone, resolve_backbone
    from care.trainer import MetricsCallback, build_trainer

    started = time.time()
    seed_everything(cfg.seed, cfg.threads)
    cache_dir = Path(cfg.cache_dir).expanduser().resolve()
    train_records, held_out = load_data(cfg)
    policy_dir = resolve_backbone(cfg.backbone, cache_dir)
    if cfg.cold_start.enabled:
        policy_dir = str(run_cold_start(cfg, train_records, policy_dir, cache_dir))
    timings = {"cold_start_s": time.time() - started}

    model, processor, _ = load_backbone(cfg.backbone, cache_dir, source=policy_dir)
    benchmarks = {"synthetic": held_out}
    before = score(model, processor, benchmarks, cfg.eval, files.dir / "eval", tag="before-")
    log.info("before RL: macro %.1f", before["macro"]["mean"])
    del model

    seed_everything(cfg.seed, cfg.threads)
    dataset = Dataset.from_list([to_prompt_row(r) for r in train_records])
    checkpoints = files.dir / "checkpoints"
    trainer = build_trainer(cfg, policy_dir, processor, dataset, checkpoints,
                            callbacks=[MetricsCallback(files, mirror)])
    resume_from = newest_checkpoint(checkpoints)
    if resume_from is not None:  # requeued, preempted or re-issued: continue, never log a step twice
        step = int(Path(resume_from).name.split("-")[-1])
        files.truncate_metrics(step)
        log.info("resuming RL from %s (step %d)", resume_from, step)
    rl_started = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    timings["rl_s"] = time.time() - rl_started
    trainer.save_model(str(files.dir / "policy"))
    processor.save_pretrained(files.dir / "policy")
    shutil.rmtree(checkpoints, ignore_errors=True)

    after = score(trainer.model, processor, benchmarks, cfg.eval, files.dir / "eval", tag="after-")
    log.info("after RL: macro %.1f", after["macro"]["mean"])
    timings["total_s"] = time.time() - started
    final = {"before": flat(before), "after": flat(after), "global_step": trainer.state.global_step,
             "timings": timings, "policy_source": policy_dir}
    files.write_final(final)
    return final


def preflight(cfg: Config) -> None:
    """Cheap checks that must fail before any work is queued (e.g. unreachable weights)."""
    import importlib.util

    engines = {"rollout.engine": (cfg.rollout.engine, "rollout=hf")}
    if cfg.task == "eval":
        engines["eval.engine"] = (cfg.eval.engine, "eval.engine=hf")
    for key, (engine, fallback) in engines.items():
        if engine != "vllm":
            continue
        if importlib.util.find_spec("vllm") is None:
            raise ValueError(f"{key}='vllm' needs the vllm extra (GPU machines): pip install -e '.[vllm]'; "
                             f"or use {fallback}")
        if not torch.cuda.is_available():
            raise ValueError(f"{key}='vllm' needs a CUDA GPU; on CPU use {fallback}")
    if cfg.backbone.tiny is None and not cfg.checkpoint:
        from care.models import resolve_backbone
        resolve_backbone(cfg.backbone, cfg.cache_dir)
    if cfg.checkpoint and not (Path(cfg.checkpoint) / "config.json").is_file():
        raise ValueError(f"checkpoint={cfg.checkpoint!r} holds no model (no config.json there); "
                         "point it at a saved policy, e.g. <run_dir>/policy")
    if cfg.task == "eval":
        from care.evaluation.harness import check_benchmarks_reachable
        check_benchmarks_reachable(cfg)
