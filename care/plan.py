"""`task=plan`: a sweep's shape, memory, time, GPU-hours and disk, before anything is queued.

From the typed configs alone (no weights, GPU, data, paths or SLURM): each RL job's batch geometry,
its memory per GPU term by term in each phase (generation, scoring, training), its wall hours per
phase against the launcher's time limit, and the sweep's shared phases (cold starts, before-RL
evaluations, care.phases) counted once. One GPU type (`cluster.gpu`, `GPUS`) gives memory, FLOP/s
and decode rate, so a job's hours and its fit never mix GPUs. The formula, its sources and what is
assumed vs calibrated: docs/plan.md. `check_fits` is what a launcher calls to refuse a job that
cannot fit in memory or in its time limit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from care.config import ArchSize, BackboneConfig, Config, batch_geometry

GIB = 2 ** 30
GB = 1e9  # disk and bandwidth figures are decimal
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ADAMW_STATES = 2  # exp_avg and exp_avg_sq, in the parameters' dtype
# TRL 1.16 scores tokens through its fused LM head (trl.trainer.utils.add_fused_lm_head, GRPO and SFT alike): the
# logits are never whole, only [4,096 tokens x 32,768 vocab] tiles (trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE,
# trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE); its backward accumulates the lm_head gradient in fp32
LM_HEAD_TOKEN_TILE = 4096
LM_HEAD_VOCAB_TILE = 32768
ASSUMED_PROMPT_TOKENS = 512  # when rl.max_prompt_length is unset (the CPU settings)
MEAN_LENGTH_FRACTION = 0.5  # mean prompt / response length as a share of the limit, for the time estimate
# training throughput: share of the GPU's dense bf16 peak reached, counting 6N per token. Calibrated 2026-12-04 on one
# H200 (benchmarks/gpu_calibrate.py, random-init 4-layer models at the recipe's micro-batch, bf16, checkpointing,
# TRL's fused head; docs/benchmarks.md): Qwen3-VL-8B 0.21 for the whole micro-batch (0.26 for its decoder layers).
# Qwen2.5-VL-7B reached only 0.04 (0.14 for decoder layers): its windowed vision attention under sdpa; re-measure
# with flash_attention_2 before trusting 7B hours. One GPU, no FSDP traffic: an upper bound for a sharded job.
ASSUMED_MFU = 0.2
# Assumed: CUDA context and cuBLAS workspaces (0.67 GiB measured on an H200 by gpu_calibrate.py, 2026-12-04), NCCL communicators for the FSDP world and vLLM's tensor-parallel group (~0.3-0.5 GiB each on an
# NVLink node), and vLLM's CUDA-graph pool, which sleep mode does not release (~0.5 GiB). Outside torch's allocator.
CUDA_CONTEXT_GIB = 2.0
# Assumed: a checkpoint's shards are written (and read back on resume) at 2 GB/s per job, a parallel filesystem
# written by one node's 8 ranks; an NFS home is nearer 1 GB/s (halve it: the save terms double).
ASSUMED_WRITE_GB_PER_S = 2.0
# care/trainer/build.py and care/coldstart.py: `save_total_limit=2` (tests/test_plan.py reads both)
SAVE_TOTAL_LIMIT = 2
VISION_R1_COLD_SAMPLES = 200_000  # Vision-R1-cold, "≈ 200K" (docs/cold_start.md); there is no key for it
# Assumed mean tokens (image + text) of a cold-start sample, capped by cold_start.max_length (16,384 for sft):
# the plan reads no data, so Vision-R1-cold's real mean is not known to it; memory uses the cutoff instead.
ASSUMED_SFT_MEAN_TOKENS = 2_048
MERGE = 2  # Qwen-VL's 2x2 patch merger: one image token per 4 patches
TEMPORAL_PATCH = 2  # an image is two identical frames: each patch is 3 x 2 x patch x patch values
PIXEL_BYTES = 4  # the HF image processor returns pixel_values in float32


@dataclass(frozen=True)
class GpuType:
    """One GPU type's figures. A job's memory fit, its hours and its decode rate all use the same one."""

    name: str
    memory_gib: float  # total memory as torch (and vLLM's gpu_memory_utilization) sees it
    bf16_flops: float  # dense bf16 tensor-core peak, no sparsity
    decode_tokens_per_s_7b: float  # assumed vLLM decode per GPU for a 7B policy at large batch; x 7e9 / params


GPUS = {
    # A100 80GB SXM: torch total_memory 81,120 MiB (nvidia-smi 81,920 MiB); 312 TFLOP/s dense bf16 (NVIDIA A100
    # datasheet). Decode 2,500 tok/s, assumed: under the public 3,363 tok/s of vLLM on DeepSeek-R1-Distill-Qwen-7B
    # alone on one A100 80GB (morphllm.com/vllm-benchmarks), since a colocated engine gets ~0.4 of the memory and TP 2.
    "a100": GpuType("A100 80GB SXM", 79.2, 312e12, 2_500),
    # H100 80GB SXM: torch total_memory 81,089 MiB (nvidia-smi 81,559 MiB); 989 TFLOP/s dense bf16 (NVIDIA H100 SXM
    # datasheet; 1,979 with sparsity). Decode 2x the A100's, assumed from Lambda's vLLM benchmark (H100 ~2x A100
    # throughput; github.com/LambdaLabsML/vllm-benchmark).
    "h100": GpuType("H100 80GB SXM", 79.2, 989e12, 5_000),
    # H200 141GB SXM: torch total_memory 143,156 MiB (nvidia-smi 143,771 MiB); the H100's 989 TFLOP/s dense bf16
    # (NVIDIA H200 datasheet). Decode: the H100's x 1.4, its HBM bandwidth ratio 4.8 / 3.35 TB/s (decode is
    # bandwidth-bound), assumed.
    "h200": GpuType("H200 141GB SXM", 139.8, 989e12, 7_000),
}


def gpu_type(cfg: Config) -> GpuType:
    return GPUS[cfg.cluster.gpu]


def gpu_memory_gib(cfg: Config) -> float:
    """`cluster.gpu_mem_gb` when set, else the GPU type's memory."""
    return cfg.cluster.gpu_mem_gb if cfg.cluster.gpu_mem_gb is not None else gpu_type(cfg).memory_gib


# ----------------------------------------------------------------------------------------------- sizes


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
    block = vision_block_params(VisionArch(depth, hidden, intermediate, patch, gated=not qwen3))
    merged = 4 * hidden
    merger = merged * merged + merged + merged * out_hidden + out_hidden + (2 if qwen3 else 1) * hidden
    extra = 64 * hidden + merger + 6 * hidden if qwen3 else 0  # positions, a DeepStack merger (its norm spans 4x)
    return depth * block + 3 * 2 * patch * patch * hidden + (hidden if qwen3 else 0) + merger + extra


@dataclass(frozen=True)
class VisionArch:
    """The vision tower's shapes: what its activations and the images' pixel values take."""

    depth: int
    hidden: int
    intermediate: int
    patch: int
    gated: bool  # Qwen2.5-VL: gated (SwiGLU) MLP with RMSNorm; Qwen3-VL: GELU MLP with LayerNorm


# vision_config of each hub config.json (Qwen2.5-VL-3B and -7B share one tower; out_hidden_size is the text width)
REAL_VISION = {
    "qwen2_5_vl_3b": VisionArch(depth=32, hidden=1280, intermediate=3420, patch=14, gated=True),
    "qwen2_5_vl_7b": VisionArch(depth=32, hidden=1280, intermediate=3420, patch=14, gated=True),
    "qwen3_vl_8b": VisionArch(depth=27, hidden=1152, intermediate=4304, patch=16, gated=False),
}
FAMILY_VISION = {"qwen2_5_vl": REAL_VISION["qwen2_5_vl_7b"], "qwen3_vl": REAL_VISION["qwen3_vl_8b"]}


def vision_arch(backbone: BackboneConfig) -> VisionArch:
    """A tiny backbone's tower from its TinyArch (care.models.tiny builds it so); a real one's from its hub config."""
    t = backbone.tiny
    if t is not None:
        qwen25 = backbone.family == "qwen2_5_vl"
        return VisionArch(t.vision_depth, t.vision_hidden_size, 2 * t.vision_hidden_size, 14 if qwen25 else 16, qwen25)
    return REAL_VISION.get(backbone.name, FAMILY_VISION[backbone.family])


def vision_block_params(v: VisionArch) -> int:
    """One vision block: qkv + proj with biases, the MLP with biases, two norms."""
    h, i = v.hidden, v.intermediate
    mlp = 3 * h * i + 2 * i + h if v.gated else 2 * h * i + i + h
    return 4 * h * h + 4 * h + mlp + (2 * h if v.gated else 4 * h)


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


@dataclass(frozen=True)
class Units:
    """How FSDP wraps the policy (care.sharding: one unit per decoder layer and per vision block): the root
    unit is everything else (embeddings, lm_head, final norm, patch embedding, merger(s), positions)."""

    root: int
    layer: int
    vision_block: int
    tied: bool


def fsdp_units(backbone: BackboneConfig) -> Units:
    """Parameters per unit, from the sizes; tied embeddings are whichever decoder count matches the text part."""
    s, v = sizes(backbone), vision_arch(backbone)
    text = s.num_params - s.vision_params
    shapes = (s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads, s.intermediate_size, s.vocab_size)
    bias = backbone.family == "qwen2_5_vl"
    tied = abs(decoder_params(*shapes, tied=True, qkv_bias=bias) - text) \
        < abs(decoder_params(*shapes, tied=False, qkv_bias=bias) - text)
    embeddings = s.vocab_size * s.hidden_size * (1 if tied else 2)
    block = vision_block_params(v)
    return Units(root=embeddings + s.hidden_size + max(0, s.vision_params - v.depth * block),
                 layer=(text - embeddings - s.hidden_size) // s.num_layers, vision_block=block, tied=tied)


def image_tokens(backbone: BackboneConfig, token_limit: int | None) -> int:
    """Merged image tokens one prompt can carry: the `max_pixels` cap, and never more than the prompt limit
    (longer prompts are dropped from the data, care.data.training). Qwen2.5-VL at 4,194,304 pixels would be
    ~5,300 tokens: at a 2,048-token limit, an image over ~1.6M pixels never reaches training."""
    at_cap = backbone.max_pixels // (vision_arch(backbone).patch * MERGE) ** 2
    return min(at_cap, token_limit) if token_limit else at_cap


def pixel_bytes_per_image(backbone: BackboneConfig, token_limit: int | None) -> float:
    """What the HF processor stores for one such image: 4 patches per token, 3 x 2 x patch x patch fp32 values."""
    patch = vision_arch(backbone).patch
    return MERGE ** 2 * image_tokens(backbone, token_limit) * 3 * TEMPORAL_PATCH * patch * patch * PIXEL_BYTES


def training_state_bytes(num_params: int, dtype: str) -> dict[str, float]:
    """Unsharded bytes of weights, gradients and AdamW state when training in `dtype`."""
    b = DTYPE_BYTES[dtype]
    return {"weights": num_params * b, "gradients": num_params * b, "optimizer": ADAMW_STATES * num_params * b}


def layer_recompute_bytes(hidden: int, intermediate: int, gated: bool, c: int) -> float:
    """Bytes per token one layer holds while it is recomputed and backpropagated (gradient checkpointing):
    its two norms (an fp32 input, the normalised value and the output in the compute dtype, each), Q, K and V
    (repeated to every head: TRL's padding mask keeps SDPA from native GQA), the attention output and its
    reshaped copy, and the MLP's intermediates -- SwiGLU keeps four I-wide tensors (gate, its SiLU, up, their
    product; I = 5.3x hidden for Qwen2.5-VL-7B) and two I-wide gradients in flight, a GELU MLP two and one.
    Korthikanti et al. 2022 count 34 x hidden for a 4x GELU MLP; this is ~89 x hidden for Qwen2.5-VL-7B."""
    norms = 2 * (4 + 2 * c) * hidden
    attention = 5 * c * hidden
    mlp = (6 if gated else 3) * c * intermediate
    return norms + attention + mlp


def layer_forward_bytes(hidden: int, intermediate: int, c: int) -> float:
    """Bytes per token one decoder layer holds at once in a no-grad forward (the old/reference log-probs): the
    residual and its normalised copy, and three I-wide MLP tensors (SiLU(gate), up, their product). Measured
    exactly so on a CPU (benchmarks/plan_calibrate.py, bf16 and fp32)."""
    return c * (2 * hidden + 3 * intermediate)


def lm_head_bytes(tokens: int, vocab: int, hidden: int, c: int, weight_bytes: int, backward: bool = True) -> float:
    """TRL's fused LM head over `tokens` scored positions: its tile buffer (allocated 32,768 wide whatever the
    vocabulary), the scored hidden states gathered; in backward the fp32 gradients of those hidden states and of
    the whole lm_head weight, and their casts back (a weight held in the compute dtype, FSDP2's gathered one, gets
    a cast copy; an fp32 one does not). On CUDA only the response is scored; without Triton (CPU) every position."""
    tile = min(tokens, LM_HEAD_TOKEN_TILE) * LM_HEAD_VOCAB_TILE * c
    gathered = tokens * hidden * c
    if not backward:
        return tile + gathered
    grads = tokens * hidden * (4 + c) + vocab * hidden * (4 + (weight_bytes if weight_bytes != 4 else 0))
    return tile + gathered + grads


# ----------------------------------------------------------------------------------------------- memory


def _training_terms(cfg: Config, gpus: int, micro_batch_size: int, seq_tokens: int, scored_tokens: int,
                    image_token_limit: int | None, reference: bool) -> dict[str, float]:
    """Bytes per GPU of one training micro-batch's terms, shared by RL and the SFT cold start."""
    s, v, u = sizes(cfg.backbone), vision_arch(cfg.backbone), fsdp_units(cfg.backbone)
    par = cfg.parallel
    on_gpu = gpus > 0
    sharded = par.strategy in ("fsdp", "zero3") and gpus > 1
    shards = gpus if sharded else 1
    b = DTYPE_BYTES[cfg.backbone.dtype]
    c = DTYPE_BYTES[cfg.rl.compute_dtype if on_gpu else cfg.backbone.dtype]
    state = training_state_bytes(s.num_params, cfg.backbone.dtype)
    tokens = micro_batch_size * seq_tokens
    patches = micro_batch_size * MERGE ** 2 * image_tokens(cfg.backbone, image_token_limit)
    return {
        "weights": 0.0 if par.offload_params else state["weights"] / shards,
        "gradients": state["gradients"] / shards,
        "optimizer": 0.0 if par.offload_optimizer else state["optimizer"] / shards,
        "reference": s.num_params * b / shards if reference else 0.0,
        # FSDP2 keeps the root unit gathered (in the compute dtype) from the first forward to the end of backward,
        # its gradients unsharded until the last reduce-scatter; one layer computing, the next prefetched, each
        # with params and gradients in flight
        "fsdp_root": 2 * c * u.root if sharded else 0.0,
        "fsdp_layers": 4 * c * max(u.layer, u.vision_block) if sharded else 0.0,
        # unsharded mixed precision: autocast caches a compute-dtype copy of every weight through the forward
        "autocast_copies": s.num_params * c if on_gpu and not sharded and c != b else 0.0,
        # gradient checkpointing (TRL's default, kept): each layer's input, then one layer recomputed at a time
        "activations": tokens * s.hidden_size * c * s.num_layers,
        "recompute": tokens * layer_recompute_bytes(s.hidden_size, s.intermediate_size, True, c),
        "vision_activations": patches * v.hidden * c * v.depth,
        "vision_recompute": patches * layer_recompute_bytes(v.hidden, v.intermediate, v.gated, c),
        # the fused LM head over the micro-batch's scored tokens (never the whole logits; on a CPU, every token)
        "logits": lm_head_bytes(micro_batch_size * (scored_tokens if on_gpu else seq_tokens), s.vocab_size,
                                s.hidden_size, c, c if sharded else b),
        "cuda_context": CUDA_CONTEXT_GIB * GIB if on_gpu else 0.0,
    }


def _training_phase(t: dict[str, float], extra: float = 0.0) -> float:
    """Resident state, the unsharded units, the layer inputs held through backward, and the largest of what
    comes and goes: the logits (start of backward) or one recomputed layer (text, then vision)."""
    return (t["weights"] + t["gradients"] + t["optimizer"] + t["reference"] + t["fsdp_root"] + t["fsdp_layers"]
            + t["autocast_copies"] + t["cuda_context"] + t["activations"] + t["vision_activations"]
            + max(t["logits"], t["recompute"], t["vision_recompute"]) + extra)


def _gib(parts: dict[str, float]) -> dict[str, float]:
    return {key: round(value / GIB, 2) for key, value in parts.items()}


def memory_per_gpu(cfg: Config, gpus: int, micro_batch_size: int) -> dict:
    """GiB per GPU of an RL job, term by term, and its three phases (docs/plan.md):
    generation (vLLM awake, the previous rollout buffer still referenced), scoring (old/reference log-probs
    of the new buffer while the old one is alive) and training (one micro-batch forward/backward)."""
    s = sizes(cfg.backbone)
    rl, roll = cfg.rl, cfg.rollout
    on_gpu = gpus > 0
    prompt = rl.max_prompt_length or ASSUMED_PROMPT_TOKENS
    sequence = prompt + rl.max_completion_length
    t = _training_terms(cfg, gpus, micro_batch_size, sequence, rl.max_completion_length, rl.max_prompt_length,
                        cfg.algorithm.beta > 0)
    c = DTYPE_BYTES[rl.compute_dtype if on_gpu else cfg.backbone.dtype]
    # TRL processes the whole local generation batch's images after generating and keeps them (on the GPU) in
    # its buffer until the next generation has been scored: prompts_per_rollout x G / GPUs sequences, one image each
    sequences = rl.prompts_per_rollout * rl.num_generations / max(gpus, 1)
    t["pixel_values"] = sequences * pixel_bytes_per_image(cfg.backbone, rl.max_prompt_length)
    vllm = roll.engine == "vllm" and roll.vllm_mode == "colocate" and on_gpu
    t["vllm"] = roll.vllm_gpu_memory_utilization * gpu_memory_gib(cfg) * GIB if vllm else 0.0
    t["kv_cache"] = t["generate_weights"] = 0.0
    if roll.engine == "hf":  # HF generate: gathered full weights + KV cache of this process's share of the rollouts
        t["kv_cache"] = sequences * sequence * 2 * s.num_layers * s.kv_dim * c
        t["generate_weights"] = training_state_bytes(s.num_params, cfg.backbone.dtype)["weights"] - t["weights"]
    awake = 0.0 if roll.vllm_enable_sleep_mode or roll.engine == "hf" else t["vllm"]
    resident = t["weights"] + t["optimizer"] + t["reference"] + t["cuda_context"]
    generation = resident + t["pixel_values"] + t["vllm"] + t["kv_cache"] + t["generate_weights"]
    # old-policy and reference log-probs of the new rollouts, no grad, one micro-batch at a time, while the previous
    # buffer is still referenced: gathered params, one layer's forward, the LM head's tile
    forward = max(micro_batch_size * sequence * layer_forward_bytes(s.hidden_size, s.intermediate_size, c),
                  lm_head_bytes(micro_batch_size * (rl.max_completion_length if on_gpu else sequence), s.vocab_size,
                                s.hidden_size, c, c, backward=False))
    scoring = (resident + 2 * t["pixel_values"] + t["fsdp_root"] / 2 + t["fsdp_layers"] / 2 + t["autocast_copies"]
               + forward + awake)
    training = _training_phase(t, t["pixel_values"] + awake)
    gib = _gib({**t, "generation_phase": generation, "scoring_phase": scoring, "training_phase": training})
    gib["peak"] = max(gib["generation_phase"], gib["scoring_phase"], gib["training_phase"])
    return gib


def sft_memory_per_gpu(cfg: Config, gpus: int, micro_batch_size: int, seq_tokens: int) -> dict:
    """GiB per GPU of the SFT cold start: no reference, no rollouts; every token may be scored (at most)."""
    t = _training_terms(cfg, gpus, micro_batch_size, seq_tokens, seq_tokens, seq_tokens, False)
    t["pixel_values"] = micro_batch_size * pixel_bytes_per_image(cfg.backbone, seq_tokens)
    training = _training_phase(t, t["pixel_values"])
    gib = _gib({**t, "training_phase": training})
    gib["peak"] = gib["training_phase"]
    return gib


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
    s, rl = sizes(cfg.backbone), cfg.rl
    updates = batch_geometry(rl, 1).updates_per_rollout
    batches = rl.steps / updates
    rollouts = rl.prompts_per_rollout * rl.num_generations
    response = MEAN_LENGTH_FRACTION * rl.max_completion_length
    sequence = MEAN_LENGTH_FRACTION * (rl.max_prompt_length or ASSUMED_PROMPT_TOKENS) + response
    generation = batches * rollouts * response / (decode_rate(cfg) * gpus)
    # TRL: old log-probs when a rollout batch feeds several updates, or vLLM's importance-sampling correction
    old = updates > 1 or (cfg.rollout.engine == "vllm" and cfg.rollout.vllm_importance_sampling_correction)
    passes = 6 + (2 if old else 0) + (2 if cfg.algorithm.beta > 0 else 0)
    training = batches * rollouts * sequence * passes * s.num_params / (ASSUMED_MFU * gpu_type(cfg).bf16_flops * gpus)
    saves = (rl.steps // rl.save_steps) * save_seconds(cfg) + policy_bytes(cfg) / (ASSUMED_WRITE_GB_PER_S * GB)
    return {"generation": generation, "training": training, "saves": saves}


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
    (its spec's `approx_rows`) minus the hold-out."""
    if cfg.data.train_size is not None:
        return cfg.data.train_size
    from care.data.adapters.registry import get_spec
    return max(1, get_spec(cfg.data.name).approx_rows - cfg.data.eval_size)


def _assumed(cfg: Config) -> dict:
    g = gpu_type(cfg)
    return {"gpu": cfg.cluster.gpu, "decode_tokens_per_s_per_gpu": round(decode_rate(cfg)), "mfu": ASSUMED_MFU,
            "peak_flops": g.bf16_flops, "mean_length_fraction": MEAN_LENGTH_FRACTION,
            "write_gb_per_s": ASSUMED_WRITE_GB_PER_S, "cuda_context_gib": CUDA_CONTEXT_GIB}


def _disk(cfg: Config) -> dict:
    checkpoint = checkpoint_bytes(cfg) / GB
    return {"checkpoint": round(checkpoint, 1), "checkpoints_kept": SAVE_TOTAL_LIMIT,
            # the Trainer writes the newest before it deletes the oldest
            "checkpoints_peak": round((SAVE_TOTAL_LIMIT + 1) * checkpoint, 1), "policy": round(policy_bytes(cfg) / GB, 1)}


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
        "rl_steps": cfg.rl.steps, "save_steps": cfg.rl.save_steps, "disk_gb": _disk(cfg),
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
        job.update(gpu_hours=round(gpus * rl_h, 1), wall_h=wall, assumed=_assumed(cfg), eval_engine=cfg.eval.engine,
                   **ev, **time_fit(rl_h + after_h, lost_h, time_limit))
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
        "disk_gb": _disk(cfg), "gpu_hours": 0.0, "wall_h": None, **time_fit(0.0, 0.0, None), "jobs": [],
    }
    if gpus:
        flops = samples * cs.epochs * mean_tokens * 6 * sizes(cfg.backbone).num_params
        training = flops / (ASSUMED_MFU * gpu_type(cfg).bf16_flops * gpus)
        saves = (steps // cs.save_steps) * save_seconds(cfg) + policy_bytes(cfg) / (ASSUMED_WRITE_GB_PER_S * GB)
        work_h = (training + saves) / 3600
        lost_h = (cs.save_steps * training / steps + 2 * save_seconds(cfg)) / 3600
        entry.update(gpu_hours=round(gpus * work_h, 1), assumed=_assumed(cfg),
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


# ----------------------------------------------------------------------------------------------- refusing


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
