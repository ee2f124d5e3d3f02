"""Model sizes and memory per GPU, term by term, in each phase of a job (docs/plan.md)."""

from __future__ import annotations

from dataclasses import dataclass

from care.config import ArchSize, BackboneConfig, Config
from care.plan.figures import (
    ADAMW_STATES,
    ASSUMED_PROMPT_TOKENS,
    CUDA_CONTEXT_GIB,
    DTYPE_BYTES,
    GIB,
    LM_HEAD_TOKEN_TILE,
    LM_HEAD_VOCAB_TILE,
    MERGE,
    PIXEL_BYTES,
    TEMPORAL_PATCH,
    gpu_memory_gib,
)

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
