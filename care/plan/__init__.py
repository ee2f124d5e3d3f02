"""`task=plan`: a sweep's shape, memory, time, GPU-hours and disk, before anything is queued.

From the typed configs alone (no weights, GPU, data, paths or SLURM): each RL job's batch geometry,
its memory per GPU term by term in each phase (generation, scoring, training), its wall hours per
phase against the launcher's time limit, and the sweep's shared phases (cold starts, before-RL
evaluations, care.phases) counted once. One GPU type (`cluster.gpu`, `GPUS`) gives memory, FLOP/s
and decode rate, so a job's hours and its fit never mix GPUs. The formula, its sources and what is
assumed vs calibrated: docs/plan.md. `check_fits` is what a launcher calls to refuse a job that
cannot fit in memory or in its time limit.

The package reads in the order a plan is made: `figures` (GPU types and assumptions), `memory` (model
sizes, memory per GPU term by term), `hours` (wall hours against the time limit), `jobs` (an RL job,
a cold start, an evaluation, a sweep with its shared phases, the launcher's resources) and `report`
(refusing a job that cannot fit, printing a plan). Everything public is importable from `care.plan`.
"""

from __future__ import annotations

from care.plan.figures import (  # noqa: F401
    ADAMW_STATES,
    ASSUMED_MFU,
    ASSUMED_PROMPT_TOKENS,
    ASSUMED_SFT_MEAN_TOKENS,
    ASSUMED_WRITE_GB_PER_S,
    CUDA_CONTEXT_GIB,
    DTYPE_BYTES,
    GB,
    GIB,
    GPUS,
    LM_HEAD_TOKEN_TILE,
    LM_HEAD_VOCAB_TILE,
    MEAN_LENGTH_FRACTION,
    MERGE,
    PIXEL_BYTES,
    SAVE_TOTAL_LIMIT,
    TEMPORAL_PATCH,
    VISION_R1_COLD_SAMPLES,
    GpuType,
    gpu_memory_gib,
    gpu_type,
)
from care.plan.hours import (  # noqa: F401
    TimeLimit,
    assumed_figures,
    checkpoint_bytes,
    decode_rate,
    disk_figures,
    eval_cost,
    policy_bytes,
    rl_seconds,
    runs_needed,
    save_seconds,
    time_fit,
    train_prompts,
)
from care.plan.jobs import (  # noqa: F401
    RESOURCE_KEYS,
    cold_start_samples,
    fit_advice,
    launcher_gpus,
    launcher_resources,
    launcher_time_limit,
    plan_cold_start,
    plan_eval,
    plan_job,
    plan_sweep,
    warnings_for,
)
from care.plan.memory import (  # noqa: F401
    FAMILY_VISION,
    REAL_VISION,
    Units,
    VisionArch,
    decoder_params,
    fsdp_units,
    image_tokens,
    layer_forward_bytes,
    layer_recompute_bytes,
    lm_head_bytes,
    memory_per_gpu,
    pixel_bytes_per_image,
    sft_memory_per_gpu,
    sizes,
    training_state_bytes,
    vision_arch,
    vision_block_params,
    vision_params,
)
from care.plan.report import (  # noqa: F401
    FIX_TIME,
    check_fits,
    describe,
    describe_cold_start,
    describe_eval,
    print_plan,
)
