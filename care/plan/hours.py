"""Wall hours and GPU-hours of a job's phases, and whether they fit the launcher's time limit."""

from __future__ import annotations

import math
from dataclasses import dataclass

from care.config import Config, batch_geometry
from care.plan.figures import (
    ADAMW_STATES,
    ASSUMED_MFU,
    ASSUMED_PROMPT_TOKENS,
    ASSUMED_WRITE_GB_PER_S,
    CUDA_CONTEXT_GIB,
    DTYPE_BYTES,
    GB,
    MEAN_LENGTH_FRACTION,
    SAVE_TOTAL_LIMIT,
    gpu_type,
)
from care.plan.memory import sizes

# ----------------------------------------------------------------------------------------------- time


@dataclass(frozen=True)
class TimeLimit:
    """A SLURM job's time: `timeout_min` per run, requeued (and resumed) up to `max_num_timeout` times."""

    timeout_min: float
    max_num_timeout: int

    @property
    def hours(self) -> float:
        return self.timeout_min * (self.max_num_timeout + 1) / 60


def runs_needed(work_h: float, lost_h: float, timeout_h: float) -> int | None:
    """SLURM runs (1 + requeues) to do `work_h` hours that resume from checkpoints, each requeue losing up to
    `lost_h`; None: a run cannot get past what it loses, so it never finishes."""
    if work_h <= timeout_h:
        return 1
    if lost_h >= timeout_h:
        return None
    return 1 + math.ceil((work_h - timeout_h) / (timeout_h - lost_h))


def time_fit(work_h: float, lost_h: float, limit: TimeLimit | None) -> dict:
    """The job's time limit, the requeues it needs and whether they fit; no limit (no SLURM launcher): fits."""
    if limit is None:
        return {"time_limit_h": None, "timeout_min": None, "max_num_timeout": None,
                "lost_per_requeue_h": round(lost_h, 2), "requeues": 0, "needed_h": round(work_h, 2), "fits_time": True}
    runs = runs_needed(work_h, lost_h, limit.timeout_min / 60)
    requeues = None if runs is None else runs - 1
    return {"time_limit_h": round(limit.hours, 2), "timeout_min": limit.timeout_min,
            "max_num_timeout": limit.max_num_timeout, "lost_per_requeue_h": round(lost_h, 2), "requeues": requeues,
            "needed_h": None if runs is None else round(work_h + requeues * lost_h, 2),
            "fits_time": runs is not None and runs <= limit.max_num_timeout + 1}


def checkpoint_bytes(cfg: Config) -> float:
    """A Trainer checkpoint: weights + AdamW state in the weights' dtype, one sharded file per rank (no gradients)."""
    return sizes(cfg.backbone).num_params * DTYPE_BYTES[cfg.backbone.dtype] * (1 + ADAMW_STATES)


def policy_bytes(cfg: Config) -> float:
    """The saved policy (the full state dict, in the weights' dtype)."""
    return sizes(cfg.backbone).num_params * DTYPE_BYTES[cfg.backbone.dtype]


def save_seconds(cfg: Config) -> float:
    return checkpoint_bytes(cfg) / (ASSUMED_WRITE_GB_PER_S * GB)


def decode_rate(cfg: Config) -> float:
    """Decoded tokens per second per GPU for this policy on this GPU type (assumed; scales as 7e9 / params)."""
    return gpu_type(cfg).decode_tokens_per_s_7b * 7e9 / sizes(cfg.backbone).num_params


def rl_seconds(cfg: Config, gpus: int) -> dict[str, float]:
    """Wall seconds of RL on `gpus` GPUs: decoding at the assumed rate, training at the assumed MFU (the
    policy's forward + backward, 6N per token, and the old-policy and reference forwards, 2N each, when TRL
    runs them), the checkpoint saves and the final policy save."""
    rl = cfg.rl
    generation, scoring_passes, token_seconds = _rollout_costs(cfg, gpus)
    training = (6 + scoring_passes) * token_seconds
    saves = (rl.steps // rl.save_steps) * save_seconds(cfg) + policy_bytes(cfg) / (ASSUMED_WRITE_GB_PER_S * GB)
    return {"generation": generation, "training": training, "saves": saves}


def extra_round_seconds(cfg: Config, gpus: int) -> float:
    """Wall seconds one more dynamic-sampling round costs per rollout batch over the run: its decoding, and
    its old-policy and reference forwards where TRL runs them (the policy's forward + backward is not repeated:
    the batch trained keeps its size)."""
    generation, scoring_passes, token_seconds = _rollout_costs(cfg, gpus)
    return generation + scoring_passes * token_seconds


def _rollout_costs(cfg: Config, gpus: int) -> tuple[float, int, float]:
    """(seconds decoding every rollout batch of the run, N-FLOP passes per token of TRL's scoring forwards,
    seconds of one N-FLOP pass over every rollout token of the run)."""
    s, rl = sizes(cfg.backbone), cfg.rl
    updates = batch_geometry(rl, 1).updates_per_rollout
    batches = rl.steps / updates
    rollouts = rl.prompts_per_rollout * rl.num_generations
    response = MEAN_LENGTH_FRACTION * rl.max_completion_length
    sequence = MEAN_LENGTH_FRACTION * (rl.max_prompt_length or ASSUMED_PROMPT_TOKENS) + response
    generation = batches * rollouts * response / (decode_rate(cfg) * gpus)
    # TRL: old log-probs when a rollout batch feeds several updates, or vLLM's importance-sampling correction
    old = updates > 1 or (cfg.rollout.engine == "vllm" and cfg.rollout.vllm_importance_sampling_correction)
    scoring_passes = (2 if old else 0) + (2 if cfg.algorithm.beta > 0 else 0)
    token_seconds = batches * rollouts * sequence * s.num_params / (ASSUMED_MFU * gpu_type(cfg).bf16_flops * gpus)
    return generation, scoring_passes, token_seconds


def eval_cost(cfg: Config, held_out: bool = True) -> dict:
    """One evaluation phase: each benchmark of eval.benchmarks (its spec's `approx_rows`, cut to eval.limit)
    plus the held-out slice (a training run's before/after check and the Base scores; `task=eval` only with
    `synthetic`), once per seed, decoded at the GPU type's assumed rate with responses at MEAN_LENGTH_FRACTION
    of eval.max_new_tokens. `_largest_pass_gpu_hours`: one benchmark x one seed, what a requeue can lose (the
    evaluation resumes per benchmark and seed)."""
    from care.data.adapters.registry import get_spec

    ev = cfg.eval
    rows = [get_spec(name).approx_rows for name in ev.benchmarks if name != "synthetic"]
    if held_out or "synthetic" in ev.benchmarks:
        rows.append(cfg.data.eval_size)
    rows = [min(n, ev.limit) if ev.limit else n for n in rows]
    generations = sum(rows) * (len(ev.seeds) if ev.do_sample else 1)
    per_generation_h = MEAN_LENGTH_FRACTION * ev.max_new_tokens / decode_rate(cfg) / 3600
    hours = generations * per_generation_h
    return {"eval_generations_per_phase": generations, "eval_gpu_hours_per_phase": round(hours, 1),
            "_eval_gpu_hours": hours, "_largest_pass_gpu_hours": max(rows) * per_generation_h}


def train_prompts(cfg: Config) -> int:
    """How many prompts one epoch is: data.train_size, or (loading no data) the set's approximate size
    minus the hold-out: care.data.adapters.approx_rows of the rows the config selects (ChartQA's
    data.chartqa_subset over data.chartqa_splits: 49,329 for care_mix by default)."""
    if cfg.data.train_size is not None:
        return cfg.data.train_size
    from care.data.adapters.registry import approx_rows
    from care.data.training import selections
    return max(1, approx_rows(cfg.data.name, selections(cfg.data)) - cfg.data.eval_size)


def assumed_figures(cfg: Config) -> dict:
    g = gpu_type(cfg)
    return {"gpu": cfg.cluster.gpu, "decode_tokens_per_s_per_gpu": round(decode_rate(cfg)), "mfu": ASSUMED_MFU,
            "peak_flops": g.bf16_flops, "mean_length_fraction": MEAN_LENGTH_FRACTION,
            "write_gb_per_s": ASSUMED_WRITE_GB_PER_S, "cuda_context_gib": CUDA_CONTEXT_GIB}


def disk_figures(cfg: Config) -> dict:
    checkpoint = checkpoint_bytes(cfg) / GB
    return {"checkpoint": round(checkpoint, 1), "checkpoints_kept": SAVE_TOTAL_LIMIT,
            # the Trainer writes the newest before it deletes the oldest
            "checkpoints_peak": round((SAVE_TOTAL_LIMIT + 1) * checkpoint, 1), "policy": round(policy_bytes(cfg) / GB, 1)}
