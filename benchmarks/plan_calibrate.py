"""task=plan's memory terms (care/plan/memory.py) against what torch holds on this CPU, term by term.

Two random-init models, built with transformers from config dicts (benchmarks/gpu_calibrate.py's builder; nothing
downloaded): `mid`, Qwen2.5-VL-7B's real widths (text 3584 / 18944 / 28 heads / 4 KV heads, vision 1280 / 3420 /
16 heads, patch 14) with 2 decoder layers, 2 vision blocks and a 16,384-token vocabulary, computing in bf16 as the
recipe does; and the tiny Qwen2.5-VL backbone (care.config.TinyArch), computing in fp32 as the plan prices CPU jobs.
Each measurement is the peak torch allocates above what was resident (the profiler's memory events), for one
micro-batch of one TRL-shaped sequence: a prompt with an image, a scored response, a padding mask.

  flock /tmp/care-torch.lock .venv/bin/python benchmarks/plan_calibrate.py     # ~2-3 min, < 12 GB

Prints one line per term (measured, the plan's formula, their ratio), what stays assumed, and a JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import gpu_calibrate as gc_  # noqa: E402
import torch  # noqa: E402

from care import plan  # noqa: E402
from care.config import TinyArch  # noqa: E402

MID = {"family": "qwen2_5_vl", "tied": False, "text": {**gc_.ARCH["qwen2_5_vl_7b"]["text"]},
       "vision": {**gc_.ARCH["qwen2_5_vl_7b"]["vision"]}}
T = TinyArch()
TINY = {"family": "qwen2_5_vl", "tied": True, "text": dict(
    hidden_size=T.hidden_size, intermediate_size=T.intermediate_size, num_hidden_layers=T.num_layers,
    num_attention_heads=T.num_heads, num_key_value_heads=T.num_kv_heads, vocab_size=T.vocab_size, rope_theta=10_000.0,
    mrope_section=[8, 4, 4]), "vision": dict(
    depth=T.vision_depth, hidden_size=T.vision_hidden_size, intermediate_size=2 * T.vision_hidden_size, num_heads=4,
    out_hidden_size=T.hidden_size, patch_size=14, window_size=56, fullatt_block_indexes=[T.vision_depth - 1])}


def rows_for(r: dict, c: int) -> list[tuple[str, float | None, float | None, str]]:
    """(term, measured, plan, unit) for one model's measurements, the plan's formulas at the same shapes."""
    h, inter, vocab, kv = r["hidden"], r["intermediate"], r["vocab"], r["kv_dim"]
    vh, vi, depth, patch = r["vision_hidden"], r["vision_intermediate"], r["vision_depth"], r["patch"]
    k = r.get("constants", {})
    text = plan.decoder_params(h, r["layers"], r["heads"], r["kv_heads"], inter, vocab, r["tied"], True)
    vision = plan.vision_params(depth, vh, vi, h, patch, qwen3=False)
    out = [("parameters (decoder + vision tower)", r["params"], text + vision, "count")]
    if "state_bytes_per_param" in k:
        out.append(("weights + gradients + AdamW state, fp32", k["state_bytes_per_param"],
                    sum(plan.training_state_bytes(1, "float32").values()), "B/param"))
        out.append(("AdamW step transient (foreach temporaries)", k["optimizer_step_transient_gib"] * 2 ** 30
                    / r["params"], None, "B/param"))
    if "activation_bytes_per_token_per_layer" in k:
        out.append(("checkpointed layer input", k["activation_bytes_per_token_per_layer"], c * h, "B/token/layer"))
    if "recompute_bytes_per_token" in k:
        out.append(("one decoder layer recomputed + backpropagated", k["recompute_bytes_per_token"],
                    plan.layer_recompute_bytes(h, inter, True, c), "B/token"))
    if "forward_bytes_per_token" in k:
        out.append(("one decoder layer, no-grad forward (scoring)", k["forward_bytes_per_token"],
                    plan.layer_forward_bytes(h, inter, c), "B/token"))
    if "vision_bytes_per_patch_per_block" in k:
        out.append(("checkpointed vision block input", k["vision_bytes_per_patch_per_block"], c * vh, "B/patch/block"))
    if "vision_recompute_bytes_per_patch" in k:
        out.append(("one vision block recomputed + backpropagated", k["vision_recompute_bytes_per_patch"],
                    plan.layer_recompute_bytes(vh, vi, True, c), "B/patch"))
    if "lm_head_gib" in k:
        out.append((f"fused LM head, {k['lm_head_scored_tokens']} scored tokens", k["lm_head_gib"] * 2 ** 30,
                    plan.lm_head_bytes(k["lm_head_scored_tokens"], vocab, h, c, c), "B"))
    rows_cpu = r["tokens"] - r["micro_batch"]  # without Triton TRL scores every position, not only the response
    if "scoring_bytes_per_token" in k:
        planned = max(plan.layer_forward_bytes(h, inter, c),
                      plan.lm_head_bytes(rows_cpu, vocab, h, c, c, backward=False) / r["tokens"])
        out.append(("no-grad scoring forward (old/reference log-probs)", k["scoring_bytes_per_token"], planned,
                    "B/token"))
        tiles = min(rows_cpu, plan.LM_HEAD_TOKEN_TILE) * min(vocab, plan.LM_HEAD_VOCAB_TILE) * 4
        fallback = max(plan.layer_forward_bytes(h, inter, c) * r["tokens"],
                       plan.lm_head_bytes(rows_cpu, vocab, h, c, c, backward=False) + CPU_FORWARD_COPIES * tiles)
        out.append(("  ... with the CPU fallback's fp32 copies (3 tiles)", k["scoring_bytes_per_token"],
                    fallback / r["tokens"], "B/token"))
    tokens_per_image = r["patches"] // r["micro_batch"] // 4
    out.append(("pixel_values of one image", k["pixel_values_bytes_per_image"],
                4 * tokens_per_image * 3 * 2 * patch * patch * 4, "B"))
    if "kv_bytes_per_token_per_layer" in k:
        out.append(("HF generate KV cache", k["kv_bytes_per_token_per_layer"], 2 * kv * c, "B/token/layer"))
    if "train_full" in r and "error" not in r["train_full"]:
        # the plan's training activations for this unsharded micro-batch: every layer's input, every vision block's
        # input, and the largest of the LM head (every position, as on a CPU) and the recomputed layers
        lm_head = plan.lm_head_bytes(rows_cpu, vocab, h, c, c)
        held = r["tokens"] * c * h * r["layers"] + r["patches"] * c * vh * depth
        recomputed = max(r["tokens"] * plan.layer_recompute_bytes(h, inter, True, c),
                         r["patches"] * plan.layer_recompute_bytes(vh, vi, True, c))
        out.append(("whole micro-batch forward+backward (checkpointed)", r["train_full"]["peak_bytes"],
                    held + max(lm_head, recomputed), "B"))
        # TRL's LM head without Triton: fp32 copies of a weight chunk and of each tile (CPU_TILE_COPIES alive at
        # once in its torch fallback); the CUDA path accumulates in fp32 without them
        fallback = min(vocab, plan.LM_HEAD_VOCAB_TILE) * h * 4 \
            + CPU_TILE_COPIES * min(rows_cpu, plan.LM_HEAD_TOKEN_TILE) * min(vocab, plan.LM_HEAD_VOCAB_TILE) * 4
        out.append(("  ... with the CPU fallback's fp32 copies (4 tiles)", r["train_full"]["peak_bytes"],
                    held + max(lm_head + fallback, recomputed), "B"))
    return out


def show(name: str, rows: list) -> list[dict]:
    print(f"\n{name}")
    print(f"  {'term':52s} {'measured':>14s} {'plan':>14s} {'ratio':>7s}  unit")
    table = []
    for term, measured, planned, unit in rows:
        ratio = measured / planned if measured is not None and planned else None
        print(f"  {term:52s} {measured:14,.1f} {planned if planned is not None else float('nan'):14,.1f} "
              f"{ratio if ratio is not None else float('nan'):7.3f}  {unit}")
        table.append({"term": term, "measured": measured, "plan": planned, "ratio": ratio, "unit": unit})
    return table


CPU_TILE_COPIES = 4  # y, z, p and the gradient in trl.kernels.chunked_logprob._backward_tile (torch fallback)
CPU_FORWARD_COPIES = 3  # z, exp(z - max) and their product (the entropy) in its _forward_tile
ASSUMED = [
    "CUDA context + NCCL + vLLM's CUDA-graph pool: CUDA_CONTEXT_GIB = 2.0 (gpu_calibrate.py measures the context)",
    "vLLM's share: rollout.vllm_gpu_memory_utilization x the GPU's memory, its KV cache and weights inside it",
    "FSDP2's gathered root unit and layers in flight (no FSDP on one CPU process)",
    "allocator fragmentation (keep headroom below the GPU's memory)",
    "TRL's LM head on CUDA: Triton folds each tile in place and scores the response only; on a CPU its torch "
    "fallback scores every position with fp32 copies (the '... CPU fallback' rows)",
    "throughput: the decode rate per GPU type, MFU 0.3, 2 GB/s checkpoint writes (gpu_calibrate.py measures HF "
    "decode and MFU; vLLM's rate needs vLLM)",
]


def main() -> None:
    torch.set_num_threads(2)
    out = {}
    gc_.COMPUTE = torch.bfloat16
    mid = gc_.measure(MID, "cpu", dict(layers=2, vision_layers=2, vocab=16_384), micro=1, prompt=1024, image=256,
                      response=512, gen=(4, 256, 32))
    mid.update(heads=MID["text"]["num_attention_heads"], kv_heads=MID["text"]["num_key_value_heads"], tied=False)
    gc_.derive(mid)
    out["mid_bf16"] = show("mid: Qwen2.5-VL-7B widths, 2 layers, 2 vision blocks, vocab 16,384; bf16 compute "
                           "(1 x 1,536 tokens: 1,024-token prompt with a 256-token image, 512 scored)", rows_for(mid, 2))
    gc_.COMPUTE = None
    tiny = gc_.measure(TINY, "cpu", dict(layers=T.num_layers, vision_layers=None, vocab=None), micro=4, prompt=128,
                       image=9, response=64, gen=(8, 64, 32))
    tiny.update(heads=T.num_heads, kv_heads=T.num_kv_heads, tied=True)
    gc_.derive(tiny)
    out["tiny_fp32"] = show("tiny_qwen2_5_vl (TinyArch), fp32 compute as the plan prices CPU jobs "
                            "(4 x 192 tokens: 128-token prompts with a 9-token image, 64 scored)", rows_for(tiny, 4))
    print("\nstill assumed (not measurable on this CPU):")
    for line in ASSUMED:
        print(f"  - {line}")
    print(json.dumps(out, default=float), flush=True)


if __name__ == "__main__":
    main()
