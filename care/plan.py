"""`task=plan`: a job's shape and cost, before anything is queued.

From the typed config alone (no weights, GPU, data or SLURM): the batch geometry TRL will use,
optimizer steps, a GPU-hours estimate and the peak memory per GPU broken down by what holds it,
against `cluster.gpu_mem_gb`. The formula and its assumptions are in docs/plan.md; the estimate of
parameters + gradients + AdamW state is checked against torch on the tiny backbone
(tests/test_plan.py). `check_fits` is what a launcher calls to refuse a job that cannot fit.
"""

from __future__ import annotations

import json
import math

from care.config import ArchSize, BackboneConfig, Config, batch_geometry

GIB = 2 ** 30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ADAMW_STATES = 2  # exp_avg and exp_avg_sq, in the parameters' dtype
LOGIT_BYTES = 8  # per completion token x vocab entry: bf16 logits, their fp32 log-softmax, the gradient
ACTIVATION_BYTES_PER_LAYER = 34  # x tokens x hidden, 16-bit activations, no attention matrix (Korthikanti et al. 2022)
ASSUMED_PROMPT_TOKENS = 512  # when rl.max_prompt_length is unset (the CPU settings)
MEAN_LENGTH_FRACTION = 0.5  # mean prompt / response length as a share of the limit, for the time estimate
ASSUMED_MFU = 0.3  # training throughput: share of the GPU's peak bf16 FLOP/s actually reached
PEAK_FLOPS = 989e12  # H100 SXM dense bf16
ASSUMED_DECODE_TOKENS_PER_S_7B = 2_500  # vLLM decode per GPU for a 7B policy at large batch; scales as 7e9 / params


def decoder_params(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int,
                   tied: bool, qkv_bias: bool) -> int:
    """Parameters of a Qwen2/Qwen3 decoder: embeddings, attention, gated MLP, RMSNorms."""
    kv_dim = hidden // heads * kv_heads
    attention = 2 * hidden * hidden + 2 * hidden * kv_dim + (hidden + 2 * kv_dim if qkv_bias else 0)
    layer = attention + 3 * hidden * intermediate + 2 * hidden
    return vocab * hidden * (1 if tied else 2) + layers * layer + hidden


def vision_params(depth: int, hidden: int, intermediate: int, out_hidden: int, patch: int, qwen3: bool) -> int:
    """Parameters of a Qwen-VL vision tower and its 2x2 patch merger(s), biases and norms included.
    Qwen2.5-VL: gated MLP, RMSNorm. Qwen3-VL: plain MLP, LayerNorm, learned positions (64 in the
    tiny build), one extra DeepStack merger per tapped layer (one in the tiny build)."""
    if qwen3:  # fc1, fc2 with biases
        mlp = 2 * hidden * intermediate + intermediate + hidden
    else:  # gate, up, down with biases
        mlp = 3 * hidden * intermediate + 2 * intermediate + hidden
    norms = 4 * hidden if qwen3 else 2 * hidden
    block = 4 * hidden * hidden + 4 * hidden + mlp + norms
    merged = 4 * hidden
    merger = merged * merged + merged + merged * out_hidden + out_hidden + (2 if qwen3 else 1) * hidden
    extra = 64 * hidden + merger + 6 * hidden if qwen3 else 0  # positions, a DeepStack merger (its norm spans 4x)
    return depth * block + 3 * 2 * patch * patch * hidden + (hidden if qwen3 else 0) + merger + extra


def sizes(backbone: BackboneConfig) -> ArchSize:
    """A real backbone's sizes from its YAML (`backbone.arch`), a tiny one's from its TinyArch."""
    if backbone.arch is not None:
        return backbone.arch
    t = backbone.tiny
    if t is None:
        raise ValueError(f"backbone {backbone.name!r} has no backbone.arch sizes; task=plan needs them "
                         "(num_params, vision_params, hidden_size, ... from the hub config.json)")
    qwen25 = backbone.family == "qwen2_5_vl"
    vision = vision_params(t.vision_depth, t.vision_hidden_size, 2 * t.vision_hidden_size, t.hidden_size,
                           14 if qwen25 else 16, qwen3=not qwen25)
    text = decoder_params(t.hidden_size, t.num_layers, t.num_heads, t.num_kv_heads, t.intermediate_size,
                          t.vocab_size, tied=True, qkv_bias=qwen25)
    return ArchSize(text + vision, vision, t.hidden_size, t.num_layers, t.num_heads, t.num_kv_heads,
                    t.intermediate_size, t.vocab_size)


def training_state_bytes(num_params: int, dtype: str) -> dict[str, float]:
    """Unsharded bytes of weights, gradients and AdamW state when training in `dtype`."""
    b = DTYPE_BYTES[dtype]
    return {"weights": num_params * b, "gradients": num_params * b, "optimizer": ADAMW_STATES * num_params * b}


def memory_per_gpu(cfg: Config, gpus: int, micro_batch_size: int) -> dict:
    """Peak GiB per GPU: the larger of the generation and the training phase (docs/plan.md)."""
    s = sizes(cfg.backbone)
    par, rl, roll = cfg.parallel, cfg.rl, cfg.rollout
    shards = gpus if par.strategy in ("fsdp", "zero3") and gpus > 1 else 1
    state = training_state_bytes(s.num_params, cfg.backbone.dtype)
    weights = 0.0 if par.offload_params else state["weights"] / shards
    gradients = state["gradients"] / shards
    optimizer = 0.0 if par.offload_optimizer else state["optimizer"] / shards
    reference = s.num_params * DTYPE_BYTES[cfg.backbone.dtype] / shards if cfg.algorithm.beta > 0 else 0.0
    on_gpu = gpus > 0
    compute = DTYPE_BYTES[rl.compute_dtype if on_gpu else cfg.backbone.dtype]
    prompt = rl.max_prompt_length or ASSUMED_PROMPT_TOKENS
    tokens = micro_batch_size * (prompt + rl.max_completion_length)
    # gradient checkpointing (TRL's default, kept): each layer's input, plus one layer recomputed
    activations = tokens * s.hidden_size * compute * (s.num_layers + ACTIVATION_BYTES_PER_LAYER / 2)
    logits = micro_batch_size * rl.max_completion_length * s.vocab_size * LOGIT_BYTES
    vllm_share = roll.vllm_gpu_memory_utilization * cfg.cluster.gpu_mem_gb * GIB \
        if roll.engine == "vllm" and roll.vllm_mode == "colocate" and on_gpu else 0.0
    if roll.engine == "hf":  # HF generate: gathered weights + KV cache of this process's share of the rollouts
        sequences = rl.prompts_per_step * rl.num_generations // max(gpus, 1)
        kv_cache = sequences * (prompt + rl.max_completion_length) * 2 * s.num_layers * s.kv_dim * compute
        generation_extra = (state["weights"] - weights) + kv_cache
    else:
        generation_extra = vllm_share
    resident = weights + optimizer + reference  # stays on the GPU in both phases
    generation = resident + generation_extra
    asleep = roll.vllm_enable_sleep_mode or roll.engine == "hf"
    training = resident + gradients + activations + logits + (0.0 if asleep else vllm_share)
    parts = {"weights": weights, "gradients": gradients, "optimizer": optimizer, "activations": activations,
             "reference": reference, "vllm": vllm_share, "logits": logits, "generation_phase": generation,
             "training_phase": training}
    gib = {key: round(value / GIB, 2) for key, value in parts.items()}
    gib["peak"] = max(gib["generation_phase"], gib["training_phase"])
    return gib


def gpu_hours(cfg: Config, gpus: int) -> dict:
    """Hours of the whole run on `gpus` GPUs: decode at an assumed rate plus training at an assumed MFU."""
    s, rl = sizes(cfg.backbone), cfg.rl
    rollouts_per_batch = rl.prompts_per_step * rl.num_generations
    batches = rl.steps / batch_geometry(rl, 1).updates_per_rollout
    response = MEAN_LENGTH_FRACTION * rl.max_completion_length
    sequence = MEAN_LENGTH_FRACTION * (rl.max_prompt_length or ASSUMED_PROMPT_TOKENS) + response
    decode_rate = ASSUMED_DECODE_TOKENS_PER_S_7B * 7e9 / s.num_params
    decode_s = batches * rollouts_per_batch * response / (decode_rate * gpus)
    # forward + backward of the policy (6 N per token) plus the old-policy and reference forwards (2 N each)
    passes = 6 + 2 + (2 if cfg.algorithm.beta > 0 else 0)
    train_s = batches * rollouts_per_batch * sequence * passes * s.num_params / (ASSUMED_MFU * PEAK_FLOPS * gpus)
    return {"gpu_hours": round(gpus * (decode_s + train_s) / 3600, 1),
            "assumed": {"decode_tokens_per_s_per_gpu": round(decode_rate), "mfu": ASSUMED_MFU,
                        "peak_flops": PEAK_FLOPS, "mean_length_fraction": MEAN_LENGTH_FRACTION}}


def eval_cost(cfg: Config) -> dict:
    """One before/after phase: each benchmark of eval.benchmarks (its spec's `approx_rows`, cut to
    eval.limit) plus the held-out slice, once per seed, decoded at the rollouts' assumed rate with
    responses at MEAN_LENGTH_FRACTION of eval.max_new_tokens. Before is shared by the runs of a sweep
    that start from the same cold start; after is each run's own."""
    from care.data.adapters.registry import get_spec

    ev, s = cfg.eval, sizes(cfg.backbone)
    rows = [get_spec(name).approx_rows for name in ev.benchmarks if name != "synthetic"] + [cfg.data.eval_size]
    prompts = sum(min(n, ev.limit) if ev.limit else n for n in rows)
    generations = prompts * (len(ev.seeds) if ev.do_sample else 1)
    decode_rate = ASSUMED_DECODE_TOKENS_PER_S_7B * 7e9 / s.num_params
    hours = generations * MEAN_LENGTH_FRACTION * ev.max_new_tokens / decode_rate / 3600
    return {"eval_generations_per_phase": generations, "eval_gpu_hours_per_phase": round(hours, 1)}


def train_prompts(cfg: Config) -> int:
    """How many prompts one epoch is: data.train_size, or (loading no data) the set's approximate size
    (its spec's `approx_rows`) minus the hold-out."""
    if cfg.data.train_size is not None:
        return cfg.data.train_size
    from care.data.adapters.registry import get_spec
    return max(1, get_spec(cfg.data.name).approx_rows - cfg.data.eval_size)


def plan_job(cfg: Config, gpus: int | None = None, overrides: list[str] | None = None) -> dict:
    """One job's plan. `gpus`: the launcher's count (SLURM per backbone); default `cluster.gpus`, 0 on CPU."""
    if gpus is None:
        gpus = cfg.cluster.gpus if cfg.backbone.tiny is None else 0
    geometry = batch_geometry(cfg.rl, max(gpus, 1), processes_key="GPUs" if gpus else "processes")
    prompts = train_prompts(cfg)
    steps_per_epoch = math.ceil(prompts / geometry.update_prompts)
    memory = memory_per_gpu(cfg, gpus, geometry.micro_batch_size)
    job = {
        "overrides": overrides or [], "backbone": cfg.backbone.name, "algorithm": cfg.algorithm.name,
        "gpus": gpus, "sharding": cfg.parallel.strategy if gpus > 1 else "none",
        "prompts_per_rollout": geometry.rollout_prompts, "prompts_per_update": geometry.update_prompts,
        "num_generations": cfg.rl.num_generations, "micro_batch_size": geometry.micro_batch_size,
        "gradient_accumulation_steps": geometry.gradient_accumulation_steps,
        "steps_per_generation": geometry.steps_per_generation,
        "optimizer_steps_per_epoch": steps_per_epoch, "optimizer_steps": cfg.rl.steps,
        "epochs": round(cfg.rl.steps / steps_per_epoch, 2), "train_prompts": prompts,
        "learning_rate": cfg.rl.learning_rate, "weights_dtype": cfg.backbone.dtype,
        "compute_dtype": cfg.rl.compute_dtype if gpus else cfg.backbone.dtype,
        "max_prompt_length": cfg.rl.max_prompt_length, "max_response_length": cfg.rl.max_completion_length,
        "min_pixels": cfg.backbone.min_pixels, "max_pixels": cfg.backbone.max_pixels,
        "rollout_engine": cfg.rollout.engine, "memory_gib": memory, "est_gpu_mem_gb": memory["peak"],
        "gpu_mem_gb": cfg.cluster.gpu_mem_gb if gpus else None,
        "fits": not gpus or memory["peak"] <= cfg.cluster.gpu_mem_gb,
    }
    if gpus:
        job.update(gpu_hours(cfg, gpus), eval_engine=cfg.eval.engine, **eval_cost(cfg))
    return job


def launcher_gpus(launcher, backbone: str) -> int | None:
    """GPUs a SLURM launcher's settings give a job of this backbone (`per_backbone` over the
    launcher's own `gpus_per_node`, times `nodes`), or None for a launcher without GPU settings."""
    if "gpus_per_node" not in launcher:
        return None
    own = (launcher.get("per_backbone") or {}).get(backbone) or {}
    gpus, nodes = (own.get(key, launcher.get(key)) for key in ("gpus_per_node", "nodes"))
    return int(gpus or 0) * int(nodes or 1)


def check_fits(cfg: Config, gpus: int | None = None) -> None:
    """Raise ValueError naming the numbers when the job's planned peak memory exceeds a GPU's,
    unless `cluster.require_fit=false` says to queue it anyway."""
    job = plan_job(cfg, gpus)
    if not job["fits"] and cfg.cluster.require_fit:
        m = job["memory_gib"]
        raise ValueError(
            f"{job['backbone']} on {job['gpus']} GPUs with parallel={job['sharding']} needs ~{job['est_gpu_mem_gb']} GiB "
            f"per GPU > cluster.gpu_mem_gb={job['gpu_mem_gb']} (weights {m['weights']}, gradients {m['gradients']}, "
            f"optimizer {m['optimizer']}, activations {m['activations']}, reference {m['reference']}, vLLM "
            f"{m['vllm']}, logits {m['logits']}); try parallel=fsdp, parallel.offload_optimizer=true, a smaller "
            "rl.micro_batch_size or rollout.vllm_gpu_memory_utilization (python run.py task=plan shows the plan), "
                "or cluster.require_fit=false to queue it anyway")


def describe(job: dict) -> str:
    """Human-readable lines for one job."""
    m = job["memory_gib"]
    where = f"{job['gpus']} GPU(s), sharding {job['sharding']}" if job["gpus"] else "CPU"
    lines = [
        f"job {' '.join(job['overrides']) or '(defaults)'}",
        f"  {job['backbone']} / {job['algorithm']} on {where}; rollouts: {job['rollout_engine']}",
        f"  batch: {job['prompts_per_rollout']} prompts x {job['num_generations']} per rollout batch, "
        f"{job['prompts_per_update']} per update; micro-batch {job['micro_batch_size']}, grad accumulation "
        f"{job['gradient_accumulation_steps']}, {job['steps_per_generation']} micro-steps per generation",
        f"  length: {job['optimizer_steps']} optimizer steps ({job['optimizer_steps_per_epoch']} per epoch of "
        f"{job['train_prompts']} prompts = {job['epochs']} epochs); lr {job['learning_rate']}; weights "
        f"{job['weights_dtype']}, compute {job['compute_dtype']}",
        f"  limits: prompt <= {job['max_prompt_length']}, response <= {job['max_response_length']} tokens; "
        f"pixels {job['min_pixels']}..{job['max_pixels']}",
        f"  memory per {'GPU' if job['gpus'] else 'process'} (GiB): weights {m['weights']}, gradients "
        f"{m['gradients']}, optimizer {m['optimizer']}, activations {m['activations']}, reference "
        f"{m['reference']}, vLLM {m['vllm']}, logits {m['logits']} -> generation {m['generation_phase']}, "
        f"training {m['training_phase']}, peak {m['peak']}"
        + (f" of {job['gpu_mem_gb']}: {'fits' if job['fits'] else 'DOES NOT FIT'}" if job["gpus"] else ""),
    ]
    if "gpu_hours" in job:
        a = job["assumed"]
        lines.append(f"  cost: ~{job['gpu_hours']} GPU-hours (assuming {a['decode_tokens_per_s_per_gpu']} decoded "
                     f"tokens/s per GPU, MFU {a['mfu']}, mean lengths {a['mean_length_fraction']} of the limits)")
        lines.append(f"  before/after check (eval.engine={job['eval_engine']}): {job['eval_generations_per_phase']} "
                     f"generations per phase, ~{job['eval_gpu_hours_per_phase']} GPU-hours each at that decode rate "
                     "(before is shared by the runs that start from the same cold start)")
    return "\n".join(lines)


def print_plan(jobs: list[dict]) -> None:
    for job in jobs:
        print(describe(job))
    print(json.dumps({"jobs": jobs}), flush=True)

