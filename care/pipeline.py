"""One training run, as a story: prepare -> cold start -> before RL -> RL -> after RL -> final.

`train(cfg, run_dir)` is the Hydra-free entry (run.py composes and checks the config, tests call it
directly). Each chapter below is one function:

1. `train`: the run directory is claimed (care.run_dir) and run.json written; the data comes prepared
   from run.py's preflight (or is prepared here, once) and is passed down, never loaded again;
2. `_train` runs the phases in order, each reusing what a sweep's shared phases already built:
   the cold start (care.phases.starting_point), the before-RL scores (care.evaluation.harness),
   RL (`_reinforce`, resuming from the newest checkpoint), the after-RL scores, and final.json.

What else a run records lives in modules named for it: care.provenance (code and SLURM job),
care.tracking (run files, W&B), care.run_dir (lock and identity), care.checkpoints (resume points).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from care.config import Config
from care.data.training import TrainingData
from care.seeding import seed_everything
from care.tracking import RunFiles, WandbMirror

log = logging.getLogger(__name__)


def train(cfg: Config, run_dir: str | Path, choices: dict[str, str] | None = None,
          dir_key: str = "run_dir", data: TrainingData | None = None) -> dict:
    """Run one job end to end (training, or `task=eval`); returns what final.json holds.

    `choices` are the config-group selections (Hydra's runtime choices), kept for analysis. `data` is the
    training data preflight prepared (None: prepared here). The run directory is claimed first
    (care.run_dir: its lock, and whose run it holds): a finished run of this key and data returns its
    final.json untouched, another run there is refused (RunDirRefused, naming `dir_key`) unless
    cfg.start_over. run.py has claimed it already; this call then only checks again.
    """
    from care.distributed import is_main_process, join_process_group, leave_process_group, world_size
    from care.identity import data_digest, run_key
    from care.provenance import code_provenance, scheduler_job
    from care.run_dir import claim, release

    join_process_group()  # one task per GPU: every task runs this, rank 0 alone writes
    if cfg.task == "train" and data is None:  # bad data fails here, before run.json or any model
        from care.data.training import prepare
        data = prepare(cfg)
    key, digest = run_key(cfg), data_digest(data) if data is not None else None
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
                final = _train(cfg, data, files, mirror)
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


def _train(cfg: Config, data: TrainingData, files: RunFiles, mirror: WandbMirror) -> dict:
    """The phases of a training run, in order; each reuses what a sweep's shared phases built."""
    from care.console import header, score_table
    from care.distributed import free_accelerator_memory
    from care.evaluation.harness import (
        before_after_benchmarks,
        before_rl,
        before_state,
        evaluate_policy,
        flat,
    )
    from care.phases import base_scores, cold_start_state, starting_point

    started = time.time()
    seed_everything(cfg.seed, cfg.threads)

    # cold start: built once per key (a sweep's launcher built it already); cold_start=none: the backbone
    header(1, 5, "cold start", cold_start_state(cfg))
    start = starting_point(cfg, data)
    timings = {"cold_start_s": time.time() - started}

    # before RL: eval.benchmarks plus the held-out training slice (named after data.name), scored once per
    # cold start and protocol and shared by every run that starts from it; the macro is over eval.benchmarks,
    # or over the held-out slice when the check is the synthetic one alone
    benchmarks, macro_of = before_after_benchmarks(cfg, data.held_out)
    header(2, 5, "before RL", before_state(cfg, start.policy_dir, benchmarks, macro_of))
    before = before_rl(cfg, start.policy_dir, benchmarks, macro_of, files.eval_dir)
    base = base_scores(cfg, start.backbone_dir, benchmarks, macro_of, files.eval_dir) if cfg.eval.base else None
    log.info("before RL: macro %.1f", before["macro"]["mean"])
    free_accelerator_memory()

    # RL: from the cold start, resuming from the newest checkpoint; a job requeued after RL only evaluates
    trained = files.dir / "policy"
    rl = files.read_rl_done()
    header(3, 5, "RL", f"done already (step {rl['global_step']}), {trained}" if rl is not None else
           f"{cfg.algorithm.name}, {cfg.rl.steps} optimizer steps, {cfg.rl.prompts_per_rollout} prompts x "
           f"{cfg.rl.num_generations} rollouts per batch, {len(data.train)} training prompts")
    if rl is None:
        rl = _reinforce(cfg, files, mirror, data.train, start.policy_dir, trained)
    else:
        log.info("%s holds RL's end (step %d); evaluating it", trained, rl["global_step"])
        if files.writer:  # a kill between rl_done.json and the clean-up left them
            shutil.rmtree(files.dir / "checkpoints", ignore_errors=True)
    timings["rl_s"] = rl["rl_s"]

    # after RL: the same benchmarks, the same protocol, the trained policy
    header(4, 5, "after RL", f"scoring {sum(len(r) for r in benchmarks.values())} prompts of {len(benchmarks)} "
           f"benchmark(s) with {trained}")
    after = evaluate_policy(cfg, str(trained), benchmarks, files.eval_dir, tag="after-", macro_of=macro_of)
    log.info("after RL: macro %.1f", after["macro"]["mean"])

    # final.json: what the tables read
    timings["total_s"] = time.time() - started
    final = {"before": flat(before), "after": flat(after), "global_step": rl["global_step"],
             "processes": rl["processes"],
             "timings": timings, "policy_source": start.policy_dir, "data": data.counts,
             "reward": {"accuracy_weight": cfg.rl.accuracy_weight, "format_weight": cfg.rl.format_weight,
                        "extraction": cfg.rl.extraction},
             "eval_protocol": before["protocol"]}
    if base is not None:  # analysis.tables.table1's Base row, with the answer rule it was scored under
        final["base"] = {**flat(base), "extraction": cfg.eval.base_extraction}
    files.write_final(final)
    header(5, 5, "final", f"{files.final_path}")
    log.info("scores (%%, mean over eval seeds):\n%s", score_table(final["before"], final["after"]))
    return final


def _reinforce(cfg: Config, files: RunFiles, mirror: WandbMirror, train_records, policy_dir: str,
               trained: Path) -> dict:
    """RL from `policy_dir`, resuming from the newest checkpoint; saves the policy to `trained`, frees
    the trainer (the after-RL check loads what was saved) and records RL's end in rl_done.json."""
    from datasets import Dataset

    from care.atomic import replace_directory, writing
    from care.checkpoints import resume_point
    from care.console import quiet_trainer
    from care.data.schema import to_prompt_row
    from care.distributed import free_accelerator_memory, wait_for_everyone
    from care.models import load_processor
    from care.sharding import save_whole_model
    from care.trainer import MetricsCallback, build_trainer

    seed_everything(cfg.seed, cfg.threads)
    processor = load_processor(policy_dir, cfg.backbone.family, cfg.backbone.min_pixels, cfg.backbone.max_pixels)
    dataset = Dataset.from_list([to_prompt_row(r) for r in train_records])
    checkpoints = files.dir / "checkpoints"
    trainer = quiet_trainer(build_trainer(cfg, policy_dir, processor, dataset, checkpoints,
                                          callbacks=[MetricsCallback(files, mirror)]), "RL")
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
