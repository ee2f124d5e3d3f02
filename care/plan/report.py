"""Refusing a job that cannot fit (`check_fits`), and printing a plan."""

from __future__ import annotations

import json

from care.config import Config
from care.plan.figures import gpu_type
from care.plan.hours import TimeLimit
from care.plan.jobs import plan_cold_start, plan_eval, plan_job


def _memory_text(m: dict) -> str:
    keys = ("weights", "gradients", "optimizer", "reference", "fsdp_root", "fsdp_layers", "autocast_copies",
            "activations", "recompute", "vision_activations", "vision_recompute", "logits", "pixel_values", "vllm",
            "kv_cache", "cuda_context")
    return ", ".join(f"{key} {m[key]}" for key in keys if key in m and m[key])


def _time_text(entry: dict, steps: str, save_steps: str) -> str:
    wall = ", ".join(f"{key} {value}" for key, value in entry["wall_h"].items() if key != "total")
    if entry["requeues"] is None:
        why = (f"a requeue loses up to {entry['lost_per_requeue_h']} h ({save_steps} of {steps} between checkpoints,"
               f" plus a save and a resume), no less than one run of timeout_min={entry['timeout_min']:g}")
    else:
        why = (f"{entry['requeues']} requeue(s) losing up to {entry['lost_per_requeue_h']} h each ({save_steps} of "
               f"{steps} between checkpoints, plus a save and a resume): ~{entry['needed_h']} h")
    return (f"needs {entry['wall_h']['total']} h of wall time ({wall}); {why}; "
            f"the limit is hydra.launcher.timeout_min={entry['timeout_min']:g} x (max_num_timeout="
            f"{entry['max_num_timeout']} + 1) = {entry['time_limit_h']} h")


def _memory_limit(cfg: Config) -> str:
    if cfg.cluster.gpu_mem_gb is not None:
        return f"cluster.gpu_mem_gb={cfg.cluster.gpu_mem_gb:g}"
    return f"cluster.gpu={cfg.cluster.gpu}: {gpu_type(cfg).name}, cluster.gpu_mem_gb unset"


FIX_TIME = ("raise hydra.launcher.timeout_min (or per_backbone.<backbone>.timeout_min / phases.<phase>.timeout_min) "
            "or max_num_timeout, shorten the run, pick a faster cluster.gpu, or cluster.require_fit=false to queue it "
            "anyway (python run.py task=plan shows the plan)")


def check_fits(cfg: Config, gpus: int | None = None, time_limit: TimeLimit | None = None,
               phase: str | None = None) -> None:
    """Raise ValueError naming the figures when a job's planned peak memory exceeds a GPU's, or its wall hours
    cannot finish within `time_limit` (`launcher_time_limit`), unless `cluster.require_fit=false`.
    `phase`: "rl" (default for task=train), "cold_start", or "eval" (default for task=eval, and a before-RL job)."""
    if not cfg.cluster.require_fit:
        return
    phase = phase or ("eval" if cfg.task == "eval" else "rl")
    if phase == "eval":
        entry = plan_eval(cfg, "task_eval" if cfg.task == "eval" else "before", gpus, time_limit)
        if not entry["fits_time"]:
            raise ValueError(f"{entry['backbone']} {entry['phase']} evaluation needs {entry['wall_h']} h on "
                             f"{entry['gpus']} {entry['gpu']} GPUs ({entry['generations']} generations; a requeue loses "
                             f"up to {entry['lost_per_requeue_h']} h, one benchmark x seed) but "
                             f"hydra.launcher.timeout_min={entry['timeout_min']:g} x (max_num_timeout="
                             f"{entry['max_num_timeout']} + 1) = {entry['time_limit_h']} h; {FIX_TIME}")
        return
    if phase == "cold_start":
        entry = plan_cold_start(cfg, gpus, time_limit)
        what, steps, save_steps = "cold start", f"cold_start steps={entry['steps']}", \
            f"cold_start.save_steps={cfg.cold_start.save_steps}"
        fixes = "a smaller cold_start.micro_batch_size or cold_start.max_length, parallel.offload_optimizer=true"
    else:
        entry = plan_job(cfg, gpus, time_limit=time_limit)
        what, steps, save_steps = "RL job", f"rl.steps={cfg.rl.steps}", f"rl.save_steps={cfg.rl.save_steps}"
        fixes = ("parallel=fsdp, a smaller rl.micro_batch_size or rollout.vllm_gpu_memory_utilization, "
                 "parallel.offload_optimizer=true")
    where = f"{entry['backbone']} {what} on {entry['gpus']} {entry['gpu']} GPUs with parallel={cfg.parallel.strategy}"
    if not entry["fits"]:
        m = entry["memory_gib"]
        raise ValueError(
            f"{where} needs ~{entry['est_gpu_mem_gb']} GiB per GPU > {entry['gpu_mem_gb']} GiB ({_memory_limit(cfg)}; "
            f"{_memory_text(m)}); try {fixes} (python run.py task=plan shows the plan), or cluster.require_fit=false "
            "to queue it anyway")
    if not entry["fits_time"]:
        raise ValueError(f"{where} {_time_text(entry, steps, save_steps)}; {FIX_TIME}")


# ----------------------------------------------------------------------------------------------- printing


def _memory_line(entry: dict, what: str) -> str:
    m = entry["memory_gib"]
    phases = ", ".join(f"{key.removesuffix('_phase')} {m[key]}" for key in
                       ("generation_phase", "scoring_phase", "training_phase") if key in m)
    fit = (f" of {entry['gpu_mem_gb']}: {'fits' if entry['fits'] else 'DOES NOT FIT'}" if entry["gpus"] else "")
    return f"  memory per {what} (GiB): {_memory_text(m)} -> {phases}; peak {m['peak']}{fit}"


def _time_line(entry: dict) -> str:
    if not entry.get("wall_h"):
        return ""
    wall = ", ".join(f"{key} {value}" for key, value in entry["wall_h"].items())
    if entry["time_limit_h"] is None:
        limit = "no time limit (no SLURM launcher)"
    else:
        limit = (f"limit {entry['timeout_min']:g} min x {entry['max_num_timeout'] + 1} runs = {entry['time_limit_h']} h, "
                 f"requeues needed {entry['requeues']} (each losing <= {entry['lost_per_requeue_h']} h): "
                 f"{'fits' if entry['fits_time'] else 'DOES NOT FIT'}")
    return f"\n  wall hours: {wall}; {limit}"


def describe(job: dict) -> str:
    """Human-readable lines for one RL job."""
    where = f"{job['gpus']} {job['gpu']} GPU(s), sharding {job['sharding']}" if job["gpus"] else "CPU"
    lines = [
        f"job {' '.join(job['overrides']) or '(defaults)'}",
        f"  {job['backbone']} / {job['algorithm']} on {where}; rollouts: {job['rollout_engine']}",
        f"  batch: {job['prompts_per_rollout']} prompts x {job['num_generations']} per rollout batch, "
        f"{job['prompts_per_update']} per update; micro-batch {job['micro_batch_size']}, grad accumulation "
        f"{job['gradient_accumulation_steps']}, {job['steps_per_generation']} micro-steps per generation",
        f"  length: {job['optimizer_steps']} optimizer steps ({job['optimizer_steps_per_epoch']} per epoch of "
        f"{job['train_prompts']} {job['data']} prompts = {job['epochs']} epochs); lr {job['learning_rate']}; weights "
        f"{job['weights_dtype']}, compute {job['compute_dtype']}",
        f"  limits: prompt <= {job['max_prompt_length']}, response <= {job['max_response_length']} tokens; "
        f"pixels {job['min_pixels']}..{job['max_pixels']} (<= {job['image_tokens_max']} image tokens a prompt)",
        _memory_line(job, "GPU" if job["gpus"] else "process")
        + "".join(f"\n  to fit, {line}" for line in job["to_fit"]) + _time_line(job),
        f"  disk: checkpoints of {job['disk_gb']['checkpoint']} GB, {job['disk_gb']['checkpoints_kept']} kept "
        f"({job['disk_gb']['checkpoints_peak']} GB while one rotates), policy {job['disk_gb']['policy']} GB",
    ]
    if job["gpus"]:
        a = job["assumed"]
        lines.append(f"  cost: ~{job['gpu_hours']} GPU-hours of RL (assuming {a['decode_tokens_per_s_per_gpu']} decoded "
                     f"tokens/s per {a['gpu']}, MFU {a['mfu']}, mean lengths {a['mean_length_fraction']} of the limits, "
                     f"{a['write_gb_per_s']} GB/s to disk); before/after check (eval.engine={job['eval_engine']}): "
                     f"{job['eval_generations_per_phase']} generations, ~{job['eval_gpu_hours_per_phase']} GPU-hours "
                     "per phase")
    if job.get("dynamic_sampling"):
        ds = job["dynamic_sampling"]
        lines.append(f"  dynamic sampling: the hours above draw one round per rollout batch; each extra round adds "
                     f"~{ds['wall_h_per_extra_round']} wall hours (decoding and scoring), up to "
                     f"{ds['max_rounds'] - 1} extra; the rounds kept wait in host memory (up to two rollout "
                     f"buffers, {2 * job['memory_gib'].get('pixel_values', 0):g} GiB of pixel_values per GPU), so GPU "
                     "memory is as planned")
    return "\n".join(lines)


def describe_cold_start(entry: dict) -> str:
    where = f"{entry['gpus']} {entry['gpu']} GPU(s)" if entry["gpus"] else "CPU"
    return "\n".join([
        f"cold start {entry['cold_start']} for {entry['backbone']} on {where}, shared by {len(entry['jobs'])} job(s)",
        f"  {entry['samples']} samples x {entry['epochs']} epochs, batch {entry['batch_size']} (micro-batch "
        f"{entry['micro_batch_size']}) = {entry['steps']} steps; sequences <= {entry['longest_tokens']} tokens, mean "
        f"{entry['mean_tokens_assumed']} assumed; ~{entry['gpu_hours']} GPU-hours; policy {entry['disk_gb']['policy']} GB",
        _memory_line(entry, "GPU" if entry["gpus"] else "process") + _time_line(entry),
    ])


def describe_eval(entry: dict) -> str:
    where = f"{entry['gpus']} {entry['gpu']} GPU(s)" if entry["gpus"] else "CPU"
    shared = f", for job(s) {entry['jobs']}" if entry["jobs"] else ""
    limit = "" if entry.get("time_limit_h") is None else \
        f"; limit {entry['time_limit_h']} h, {entry['requeues']} requeue(s): {'fits' if entry['fits_time'] else 'DOES NOT FIT'}"
    return (f"eval {entry['phase']} {entry['backbone']} ({'+'.join(entry['benchmarks'])} x {entry['seeds']} seed(s)) "
            f"on {where}{shared}: {entry['generations']} generations, ~{entry['gpu_hours']} GPU-hours, "
            f"wall {entry['wall_h']} h{limit}")


def print_plan(plan) -> None:
    """Print the plan; the last line is its JSON. A list of RL job dicts is printed as a plan of those alone."""
    if isinstance(plan, list):
        total = round(sum(job.get("gpu_hours", 0.0) for job in plan), 1)
        plan = {"jobs": plan, "cold_starts": [], "evals": [],
                "totals": {"gpu_hours": total, "rl": total, "cold_start": 0.0, "eval": 0.0},
                "disk_gb": {"kept": round(sum(j["disk_gb"]["policy"] for j in plan), 1),
                            "peak": round(sum(j["disk_gb"]["policy"] + j["disk_gb"]["checkpoints_peak"] for j in plan), 1)},
                "warnings": []}
    for line in plan["warnings"]:
        print(line)
    for job in plan["jobs"]:
        print(describe(job))
    for entry in plan["cold_starts"]:
        print(describe_cold_start(entry))
    shown = [e for e in plan["evals"] if e["phase"] != "after"]
    afters = [e for e in plan["evals"] if e["phase"] == "after"]
    for entry in shown:
        print(describe_eval(entry))
    if afters:
        print(f"eval after: {len(afters)} (one per RL job, inside it), {sum(e['generations'] for e in afters)} "
              f"generations, ~{round(sum(e['gpu_hours'] for e in afters), 1)} GPU-hours")
    t, d = plan["totals"], plan["disk_gb"]
    print(f"totals: ~{t['gpu_hours']} GPU-hours = RL {t['rl']} + cold starts {t['cold_start']} + evaluations "
          f"{t['eval']}; disk {d['kept']} GB kept, {d['peak']} GB with every job's checkpoints at once")
    print(json.dumps(plan), flush=True)
