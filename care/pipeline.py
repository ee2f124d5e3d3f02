"""The Hydra-free training entry: config + run directory in, run files out.

data -> backbone -> cold start (cached) -> eval before (cached) -> RL -> policy/ + rl_done.json
-> eval after -> final.json.
Tests call `train` directly; run.py only composes and validates the config first.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch

from care.config import Config
from care.seeding import seed_everything
from care.tracking import RunFiles, WandbMirror

log = logging.getLogger(__name__)


def train(cfg: Config, run_dir: str | Path, choices: dict[str, str] | None = None,
          dir_key: str = "run_dir") -> dict:
    """Run one job end to end (training, or `task=eval`); returns what final.json holds.

    `choices` are the config-group selections (Hydra's runtime choices), kept for analysis. The run
    directory is claimed first (care.run_dir: its lock, and whose run it holds): a finished run of this
    key and data returns its final.json untouched, another run there is refused (RunDirRefused, naming
    `dir_key`) unless cfg.start_over. run.py has claimed it already; this call then only checks again.
    """
    from care.distributed import is_main_process, join_process_group, leave_process_group, world_size
    from care.identity import data_digest, run_key
    from care.run_dir import claim, release

    join_process_group()  # one task per GPU: every task runs this, rank 0 alone writes
    key = run_key(cfg)
    data = None
    if cfg.task == "train":  # bad data fails here, before run.json or any model (preflight already tried)
        from care.data.training import prepare
        data = prepare(cfg)
    digest = data_digest(data) if data is not None else None
    claimed = claim(cfg, Path(run_dir), key=key, digest=digest, writer=is_main_process(), dir_key=dir_key)
    if claimed.final is not None:  # a re-issued or requeued job that already finished: nothing to do
        log.info("%s already holds final.json; skipping", run_dir)
        return claimed.final
    try:
        files = RunFiles(run_dir, writer=is_main_process())
        files.write_run_json(cfg, run_key=key, sweep=cfg.sweep, label=cfg.label, choices=choices or {},
                             world_size=world_size(), code=code_provenance(), job=scheduler_job(),
                             data=data.counts if data is not None else None, data_digest=digest)
        mirror = WandbMirror(cfg, files.dir, run_id=key, choices=choices or {}, enabled=files.writer)
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
        # final.json whole under "final" (before and after, counts, timings), so W&B alone holds what the
        # analysis reads; final/<benchmark> are the after-RL scores as flat keys for W&B's run table
        mirror.summary({"final": final, **{f"final/{k}": v for k, v in final["after"].items() if isinstance(v, float)}})
        mirror.finish()
        leave_process_group()
        return final
    finally:
        if claimed.held:  # taken here (a direct caller); run.py releases its own
            release(Path(run_dir))


def _train(cfg: Config, files: RunFiles, mirror: WandbMirror) -> dict:
    from care.evaluation.harness import before_after_benchmarks, before_rl, evaluate_policy, flat
    from care.phases import base_scores, starting_point

    started = time.time()
    seed_everything(cfg.seed, cfg.threads)
    # the shared phases (care.phases): a sweep's launcher ran them already, so these reuse the cache
    start = starting_point(cfg)  # the cold start, built once per key; cold_start=none: the backbone
    data, policy_dir = start.data, start.policy_dir
    timings = {"cold_start_s": time.time() - started}

    # eval.benchmarks plus the held-out training slice (named after data.name); the macro is over
    # eval.benchmarks, or over the held-out slice when the check is the synthetic one alone
    benchmarks, macro_of = before_after_benchmarks(cfg, data.held_out)
    before = before_rl(cfg, policy_dir, benchmarks, macro_of, files.eval_dir)  # shared by runs that start alike
    base = base_scores(cfg, start.backbone_dir, benchmarks, macro_of, files.eval_dir) if cfg.eval.base else None
    log.info("before RL: macro %.1f", before["macro"]["mean"])
    free_accelerator_memory()

    trained = files.dir / "policy"
    rl = files.read_rl_done()
    if rl is None:
        rl = _reinforce(cfg, files, mirror, data.train, policy_dir, trained)
    else:  # requeued after RL finished: only the after-RL check was left to do
        log.info("%s holds RL's end (step %d); evaluating it", trained, rl["global_step"])
        if files.writer:  # a kill between rl_done.json and the clean-up left them
            shutil.rmtree(files.dir / "checkpoints", ignore_errors=True)
    timings["rl_s"] = rl["rl_s"]
    after = evaluate_policy(cfg, str(trained), benchmarks, files.eval_dir, tag="after-", macro_of=macro_of)
    log.info("after RL: macro %.1f", after["macro"]["mean"])
    timings["total_s"] = time.time() - started
    final = {"before": flat(before), "after": flat(after), "global_step": rl["global_step"],
             "processes": rl["processes"],
             "timings": timings, "policy_source": policy_dir, "data": data.counts,
             "reward": {"accuracy_weight": cfg.rl.accuracy_weight, "format_weight": cfg.rl.format_weight,
                        "extraction": cfg.rl.extraction},
             "eval_protocol": before["protocol"]}
    if base is not None:  # analysis.tables.table1's Base row, with the answer rule it was scored under
        final["base"] = {**flat(base), "extraction": cfg.eval.base_extraction}
    files.write_final(final)
    return final


def _reinforce(cfg: Config, files: RunFiles, mirror: WandbMirror, train_records, policy_dir: str,
               trained: Path) -> dict:
    """RL from `policy_dir`, resuming from the newest checkpoint; saves the policy to `trained`, frees
    the trainer (the after-RL check loads what was saved) and records RL's end in rl_done.json."""
    from datasets import Dataset

    from care.atomic import replace_directory, writing
    from care.checkpoints import resume_point
    from care.data.schema import to_prompt_row
    from care.distributed import wait_for_everyone
    from care.models import load_processor
    from care.sharding import save_whole_model
    from care.trainer import MetricsCallback, build_trainer

    seed_everything(cfg.seed, cfg.threads)
    processor = load_processor(policy_dir, cfg.backbone.family, cfg.backbone.min_pixels, cfg.backbone.max_pixels)
    dataset = Dataset.from_list([to_prompt_row(r) for r in train_records])
    checkpoints = files.dir / "checkpoints"
    trainer = build_trainer(cfg, policy_dir, processor, dataset, checkpoints,
                            callbacks=[MetricsCallback(files, mirror)])
    resume_from = resume_point(checkpoints)  # rank 0 chooses, every rank resumes the same one
    # requeued, preempted or re-issued: continue from the newest checkpoint, or start over if the
    # attempt before died ahead of its first one; either way no step is logged twice
    step = int(Path(resume_from).name.split("-")[-1]) if resume_from is not None else 0
    files.truncate_metrics(step)
    if resume_from is not None:
        log.info("resuming RL from %s (step %d)", resume_from, step)
    rl_started = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    rl = {"global_step": trainer.state.global_step, "processes": trainer.accelerator.num_processes,
          "rl_s": time.time() - rl_started}
    # every rank gathers, rank 0 writes (the processor too) into a staging folder, renamed to policy/
    # whole: a kill or a full disk mid-save never leaves a policy/ that looks complete
    staging = trained.parent / f".{trained.name}.staging"
    if files.writer:  # what an attempt killed mid-save left
        shutil.rmtree(staging, ignore_errors=True)
    with writing(staging):
        save_whole_model(trainer, staging)
    if files.writer:
        replace_directory(staging, trained)  # over a policy/ a kill left before rl_done.json
    trainer.accelerator.free_memory()
    del trainer
    free_accelerator_memory()
    wait_for_everyone()  # every rank reads what rank 0 saved
    files.write_rl_done(rl)
    if files.writer:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return rl


def free_accelerator_memory() -> None:
    """Return what a finished trainer held, so an evaluation engine can have the GPU."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def scheduler_job() -> dict:
    """The SLURM job running this (all None outside SLURM); restart_count counts requeues."""
    import os

    names = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
             "restart_count": "SLURM_RESTART_COUNT", "tasks": "SLURM_NTASKS", "cpus_per_task": "SLURM_CPUS_PER_TASK",
             "gpus_on_node": "SLURM_GPUS_ON_NODE"}
    return {key: os.environ.get(name) for key, name in names.items()}


def code_provenance() -> dict:
    """Which code ran: the package directory (a sweep's snapshot, when it ran from one) and its commit."""
    import subprocess

    import care

    code_dir = Path(care.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=code_dir, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"dir": str(code_dir), "commit": commit, "dirty": bool(status) if status is not None else None}
