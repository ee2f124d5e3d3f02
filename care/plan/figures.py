"""The numbers the plan rests on: GPU types and what is assumed rather than measured (docs/plan.md)."""

from __future__ import annotations

from dataclasses import dataclass

from care.config import Config

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
