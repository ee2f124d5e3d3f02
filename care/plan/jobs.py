"""Plans of RL jobs, cold starts and evaluations, a sweep's shared phases, and the launcher's resources."""

from __future__ import annotations

import math

from care.config import Config, batch_geometry
from care.plan.figures import (
    ASSUMED_MFU,
    ASSUMED_PROMPT_TOKENS,
    ASSUMED_SFT_MEAN_TOKENS,
    ASSUMED_WRITE_GB_PER_S,
    GB,
    GPUS,
    VISION_R1_COLD_SAMPLES,
    gpu_memory_gib,
    gpu_type,
)
from care.plan.hours import (
    TimeLimit,
    assumed_figures,
    disk_figures,
    eval_cost,
    extra_round_seconds,
    policy_bytes,
    rl_seconds,
    save_seconds,
    time_fit,
    train_prompts,
)
from care.plan.memory import image_tokens, memory_per_gpu, sft_memory_per_gpu, sizes

# ----------------------------------------------------------------------------------------------- jobs


def plan_job(cfg: Config, gpus: int | None = None, overrides: list[str] | None = None,
             time_limit: TimeLimit | None = None) -> dict:
    """One RL job's plan. `gpus`: the launcher's count (SLURM per backbone); default `cluster.gpus`, 0 (CPU)
    for the tiny backbones. `time_limit`: the launcher's (`launcher_time_limit`); None: no limit."""
    if gpus is None:
        gpus = cfg.cluster.gpus if cfg.backbone.tiny is None else 0
    geometry = batch_geometry(cfg.rl, max(gpus, 1), processes_key="GPUs" if gpus else "processes")
    prompts = train_prompts(cfg)
    steps_per_epoch = math.ceil(prompts / geometry.update_prompts)
    memory = memory_per_gpu(cfg, gpus, geometry.micro_batch_size)
    limit = gpu_memory_gib(cfg) if gpus else None
    job = {
        "overrides": overrides or [], "backbone": cfg.backbone.name, "algorithm": cfg.algorithm.name,
        "seed": cfg.seed, "gpus": gpus, "gpu": cfg.cluster.gpu if gpus else None,
        "sharding": cfg.parallel.strategy if gpus > 1 else "none",
        "prompts_per_rollout": geometry.rollout_prompts, "prompts_per_update": geometry.update_prompts,
        "num_generations": cfg.rl.num_generations, "micro_batch_size": geometry.micro_batch_size,
        "gradient_accumulation_steps": geometry.gradient_accumulation_steps,
        "steps_per_generation": geometry.steps_per_generation,
        "optimizer_steps_per_epoch": steps_per_epoch, "optimizer_steps": cfg.rl.steps,
        "epochs": round(cfg.rl.steps / steps_per_epoch, 2), "train_prompts": prompts, "data": cfg.data.name,
        "learning_rate": cfg.rl.learning_rate, "weights_dtype": cfg.backbone.dtype,
        "compute_dtype": cfg.rl.compute_dtype if gpus else cfg.backbone.dtype,
        "max_prompt_length": cfg.rl.max_prompt_length, "max_response_length": cfg.rl.max_completion_length,
        "min_pixels": cfg.backbone.min_pixels, "max_pixels": cfg.backbone.max_pixels,
        "image_tokens_max": image_tokens(cfg.backbone, cfg.rl.max_prompt_length),
        "rollout_engine": cfg.rollout.engine, "memory_gib": memory,
        "memory_gb": {"training": memory["training_phase"], "generation": memory["generation_phase"],
                      "scoring": memory["scoring_phase"], "peak": memory["peak"]},
        "est_gpu_mem_gb": memory["peak"], "gpu_mem_gb": limit,
        "fits": not gpus or memory["peak"] <= limit,
        "rl_steps": cfg.rl.steps, "save_steps": cfg.rl.save_steps, "disk_gb": disk_figures(cfg),
        "gpu_hours": 0.0, "wall_h": None, **time_fit(0.0, 0.0, None),
    }
    job["to_fit"] = fit_advice(cfg, job)
    if gpus:
        ev = eval_cost(cfg)
        secs = rl_seconds(cfg, gpus)
        rl_h = sum(secs.values()) / 3600
        after_h = ev.pop("_eval_gpu_hours") / gpus
        # a requeue during RL loses at most one save interval of work, the save it interrupted, and reading the
        # newest checkpoint back (at the write bandwidth); during the after-RL check, one benchmark x seed pass
        lost_h = max((cfg.rl.save_steps * (secs["generation"] + secs["training"]) / cfg.rl.steps
                      + 2 * save_seconds(cfg)) / 3600, ev.pop("_largest_pass_gpu_hours") / gpus)
        wall = {key: round(value / 3600, 2) for key, value in secs.items()}
        wall.update(after_eval=round(after_h, 2), total=round(rl_h + after_h, 2))
        job.update(gpu_hours=round(gpus * rl_h, 1), wall_h=wall, assumed=assumed_figures(cfg), eval_engine=cfg.eval.engine,
                   **ev, **time_fit(rl_h + after_h, lost_h, time_limit))
        if cfg.algorithm.dynamic_sampling:  # hours above are for one round per rollout batch
            job["dynamic_sampling"] = {"max_rounds": cfg.algorithm.max_sampling_rounds,
                                       "wall_h_per_extra_round": round(extra_round_seconds(cfg, gpus) / 3600, 2)}
    else:
        eval_cost(cfg)  # a misspelt benchmark fails here too
    return job


def fit_advice(cfg: Config, job: dict) -> list[str]:
    """What would make a job that does not fit in memory fit, from its breakdown (printed with the plan)."""
    if job["fits"] or not job["gpus"]:
        return []
    m, limit, name = job["memory_gib"], job["gpu_mem_gb"], cfg.backbone.name
    advice = []
    if m["generation_phase"] > limit and m.get("vllm"):
        share = (limit - (m["generation_phase"] - m["vllm"])) / limit
        advice.append(f"generation phase {m['generation_phase']} GiB: rollout.vllm_gpu_memory_utilization <= "
                      f"{math.floor(share * 100) / 100:.2f}" if share > 0 else
                      f"generation phase {m['generation_phase']} GiB even without vLLM's share")
    if m.get("scoring_phase", 0) > limit:
        advice.append(f"scoring phase {m['scoring_phase']} GiB, two rollout buffers of pixel_values ({m['pixel_values']} "
                      f"GiB each: rl.prompts_per_rollout x G / GPUs sequences): more GPUs per job "
                      f"(hydra.launcher.per_backbone.{name}.gpus_per_node), or free TRL's previous buffer before "
                      "generating (a trainer change)")
    if m["training_phase"] > limit:
        advice.append(f"training phase {m['training_phase']} GiB: a smaller rl.micro_batch_size (now "
                      f"{job['micro_batch_size']}) or more GPUs")
    if m["optimizer"]:
        advice.append(f"any phase: parallel.offload_optimizer=true frees the optimizer's {m['optimizer']} GiB (slower "
                      "steps)")
    if cfg.cluster.gpu != "h200":
        advice.append(f"any phase: cluster.gpu=h200 ({GPUS['h200'].memory_gib} GiB)")
    return advice


def cold_start_samples(cfg: Config) -> int:
    cs = cfg.cold_start
    return VISION_R1_COLD_SAMPLES if cs.name == "sft" else cs.num_demos


def plan_cold_start(cfg: Config, gpus: int | None = None, time_limit: TimeLimit | None = None) -> dict:
    """The SFT cold start a sweep's RL jobs share (built once): its steps, memory per GPU at the longest
    sequence (`cold_start.max_length`, else the RL prompt + response limits), and its hours at the assumed
    mean sample length. `gpus`: the launcher's for the cold_start phase; default `cluster.gpus`, 0 on CPU."""
    cs = cfg.cold_start
    if gpus is None:
        gpus = cfg.cluster.gpus if cfg.backbone.tiny is None else 0
    samples = cold_start_samples(cfg)
    micro = cs.micro_batch_size or max(1, cs.batch_size // max(gpus, 1))
    steps = math.ceil(math.ceil(samples / cs.batch_size) * cs.epochs)
    longest = cs.max_length or (cfg.rl.max_prompt_length or ASSUMED_PROMPT_TOKENS) + cfg.rl.max_completion_length
    mean_tokens = min(longest, ASSUMED_SFT_MEAN_TOKENS)
    memory = sft_memory_per_gpu(cfg, gpus, micro, longest)
    limit = gpu_memory_gib(cfg) if gpus else None
    entry = {
        "backbone": cfg.backbone.name, "cold_start": cs.name, "gpus": gpus, "gpu": cfg.cluster.gpu if gpus else None,
        "samples": samples, "epochs": cs.epochs, "batch_size": cs.batch_size, "micro_batch_size": micro,
        "max_length": cs.max_length, "longest_tokens": longest, "mean_tokens_assumed": mean_tokens,
        "steps": steps, "save_steps": cs.save_steps, "memory_gib": memory,
        "memory_gb": {"training": memory["training_phase"], "peak": memory["peak"]},
        "est_gpu_mem_gb": memory["peak"], "gpu_mem_gb": limit, "fits": not gpus or memory["peak"] <= limit,
        "disk_gb": disk_figures(cfg), "gpu_hours": 0.0, "wall_h": None, **time_fit(0.0, 0.0, None), "jobs": [],
    }
    if gpus:
        flops = samples * cs.epochs * mean_tokens * 6 * sizes(cfg.backbone).num_params
        training = flops / (ASSUMED_MFU * gpu_type(cfg).bf16_flops * gpus)
        saves = (steps // cs.save_steps) * save_seconds(cfg) + policy_bytes(cfg) / (ASSUMED_WRITE_GB_PER_S * GB)
        work_h = (training + saves) / 3600
        lost_h = (cs.save_steps * training / steps + 2 * save_seconds(cfg)) / 3600
        entry.update(gpu_hours=round(gpus * work_h, 1), assumed=assumed_figures(cfg),
                     wall_h={"training": round(training / 3600, 2), "saves": round(saves / 3600, 2),
                             "total": round(work_h, 2)},
                     **time_fit(work_h, lost_h, time_limit))
    return entry


def plan_eval(cfg: Config, phase: str, gpus: int | None = None, time_limit: TimeLimit | None = None,
              overrides: list[str] | None = None) -> dict:
    """An evaluation: `before` (once per cold start, its own job), `after` (inside each RL job), `base` (the
    backbone itself: `eval.base`'s shared phase, or a `task=eval` job with no checkpoint) or `checkpoint`
    (task=eval of a given policy). It resumes per benchmark and seed: a requeue loses at most one such pass."""
    if gpus is None:
        gpus = cfg.cluster.gpus if cfg.backbone.tiny is None else 0
    cost = eval_cost(cfg, held_out=phase != "task_eval")
    if phase == "task_eval":
        phase = "base" if cfg.checkpoint is None else "checkpoint"
    hours = cost["_eval_gpu_hours"] if gpus else 0.0
    entry = {"phase": phase, "backbone": cfg.backbone.name, "overrides": overrides or [], "engine": cfg.eval.engine,
             "benchmarks": list(cfg.eval.benchmarks), "seeds": len(cfg.eval.seeds) if cfg.eval.do_sample else 1,
             "gpus": gpus, "gpu": cfg.cluster.gpu if gpus else None,
             "generations": cost["eval_generations_per_phase"], "gpu_hours": round(hours, 1),
             "wall_h": round(hours / gpus, 2) if gpus else None, "jobs": []}
    if phase == "after":  # part of the RL job: its time is checked there
        entry.update(time_limit_h=None, fits_time=True)
    else:
        entry.update(**time_fit(hours / gpus if gpus else 0.0,
                                cost["_largest_pass_gpu_hours"] / gpus if gpus else 0.0, time_limit))
    return entry


# ----------------------------------------------------------------------------------------------- launcher


RESOURCE_KEYS = ("gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb", "timeout_min")


def _get(node, key):
    """A key of a launcher config (dict or DictConfig) or None; never resolves anything else."""
    if node is None or key not in node:
        return None
    return node.get(key)


def launcher_resources(launcher, backbone: str, phase: str | None = None) -> dict:
    """A job's SLURM resources: the launcher's own, then `per_backbone[backbone]`, then (for a shared phase's
    job, `cold_start` or `eval`) `phases[phase]` on top; keys left unset (None) do not override."""
    merged = {key: _get(launcher, key) for key in (*RESOURCE_KEYS, "nodes")}
    layers = [_get(_get(launcher, "per_backbone"), backbone)]
    if phase is not None:
        layers.append(_get(_get(launcher, "phases"), phase))
    for layer in layers:
        for key in RESOURCE_KEYS:
            value = _get(layer, key)
            if value is not None:
                merged[key] = value
    return merged


def launcher_gpus(launcher, backbone: str, phase: str | None = None) -> int | None:
    """GPUs a SLURM launcher's settings give a job of this backbone (and phase), times `nodes`, or None
    for a launcher without GPU settings."""
    if launcher is None or "gpus_per_node" not in launcher:
        return None
    res = launcher_resources(launcher, backbone, phase)
    return int(res["gpus_per_node"] or 0) * int(res["nodes"] or 1)


def launcher_time_limit(launcher, backbone: str, phase: str | None = None) -> TimeLimit | None:
    """The time a SLURM launcher gives a job of this backbone (and phase): `timeout_min` (per_backbone and
    phases over the launcher's own) per run, `max_num_timeout` requeues (the launcher's). None: no limit."""
    if launcher is None:
        return None
    timeout = launcher_resources(launcher, backbone, phase)["timeout_min"]
    if timeout is None:
        return None
    return TimeLimit(float(timeout), int(_get(launcher, "max_num_timeout") or 0))


def _job_gpus(cfg: Config, launcher, phase: str | None = None) -> int:
    gpus = launcher_gpus(launcher, cfg.backbone.name, phase)
    if gpus is None:
        gpus = cfg.cluster.gpus if cfg.backbone.tiny is None else 0
    return gpus


# ----------------------------------------------------------------------------------------------- sweep


def warnings_for(cfg: Config) -> list[str]:
    """What a plan of a real backbone should not let pass silently (never an error: plan must run)."""
    if cfg.backbone.tiny is not None:
        return []
    name, out = cfg.backbone.name, []
    if cfg.data.name == "synthetic":
        out.append(f"warning: {name} planned on the synthetic task (data=synthetic)")
    if cfg.task == "train" and cfg.cold_start.name == "synthetic":
        out.append(f"warning: {name} cold-started on synthetic demonstrations (cold_start=synthetic)")
    return out


def plan_sweep(entries) -> dict:
    """The whole plan from every composed job of a sweep, in sweep order: `entries` are (typed config, its
    overrides, its launcher config or None). RL jobs go to `jobs`; a cold start (care.phases.cold_start_identity),
    a before-RL evaluation (before_identity) and, with `eval.base`, the Base scores (base_identity) once however
    many jobs share them; each RL job's after-RL check and every `task=eval` job to `evals`. Totals count each
    entry once."""
    from care import phases

    jobs, cold_starts, shared, afters, others, warnings = [], {}, {}, [], [], []

    def share(kind: str, key: str, cfg: Config, launcher, index: int) -> None:
        """Plan a shared evaluation once per identity and note which RL jobs use it."""
        if key not in shared:
            shared[key] = {"id": key, **plan_eval(cfg, kind, _job_gpus(cfg, launcher, "eval"),
                                                   launcher_time_limit(launcher, cfg.backbone.name, "eval"))}
        shared[key]["jobs"].append(index)

    for cfg, overrides, launcher in entries:
        warnings += [w for w in warnings_for(cfg) if w not in warnings]
        name = cfg.backbone.name
        if cfg.task == "eval":
            others.append(plan_eval(cfg, "task_eval", _job_gpus(cfg, launcher), launcher_time_limit(launcher, name),
                                    overrides))
            continue
        index = len(jobs)
        job = plan_job(cfg, _job_gpus(cfg, launcher), overrides, launcher_time_limit(launcher, name))
        job["cold_start_id"] = job["base_id"] = None
        if phases.builds_cold_start(cfg):
            key = phases.cold_start_identity(cfg)
            if key not in cold_starts:
                cold_starts[key] = {"id": key, **plan_cold_start(cfg, _job_gpus(cfg, launcher, "cold_start"),
                                                                  launcher_time_limit(launcher, name, "cold_start"))}
            cold_starts[key]["jobs"].append(index)
            job["cold_start_id"] = key
        if getattr(cfg.eval, "base", False) and hasattr(phases, "base_identity"):
            job["base_id"] = phases.base_identity(cfg)
            share("base", job["base_id"], cfg, launcher, index)
        job["before_id"] = phases.before_identity(cfg)
        share("before", job["before_id"], cfg, launcher, index)
        after = plan_eval(cfg, "after", job["gpus"])
        after["jobs"].append(index)
        afters.append(after)
        jobs.append(job)
    cold_starts, evals = list(cold_starts.values()), [*shared.values(), *afters, *others]
    rl, cs, ev = (sum(e["gpu_hours"] for e in group) for group in (jobs, cold_starts, evals))
    kept = sum(e["disk_gb"]["policy"] for e in jobs + cold_starts)
    checkpoints = sum(e["disk_gb"]["checkpoints_peak"] for e in jobs + cold_starts)
    return {"jobs": jobs, "cold_starts": cold_starts, "evals": evals,
            "totals": {"gpu_hours": round(rl + cs + ev, 1), "rl": round(rl, 1), "cold_start": round(cs, 1),
                       "eval": round(ev, 1)},
            # kept: what stays once every job is done (policies, cold starts); peak: with every job's
            # checkpoints on disk at once (all jobs running together)
            "disk_gb": {"kept": round(kept, 1), "peak": round(kept + checkpoints, 1)},
            "warnings": warnings}
