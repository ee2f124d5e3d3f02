"""Build the shared trainer from the typed config, logging every step to the run files.

TRL's own reporting is off (`report_to=[]`): our callback writes `metrics.jsonl` and the
W&B mirror with one naming scheme, whatever the algorithm. Accuracy and format are
separate reward functions so the objective can tell "correct" from "well formatted".
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from transformers import TrainerCallback

from care.config import Config, batch_geometry
from care.distributed import world_size
from care.tracking import RunFiles, WandbMirror


class MetricsCallback(TrainerCallback):
    """Append each TRL log (one per logging step) to metrics.jsonl and W&B."""

    def __init__(self, files: RunFiles, mirror: WandbMirror, prefix: str = "train/"):
        self.files, self.mirror, self.prefix = files, mirror, prefix

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_runtime" in logs:  # the end-of-training summary is not a step
            return
        metrics = {(k if "/" in k else self.prefix + k): v for k, v in logs.items()}
        self.files.append_metrics(state.global_step, metrics)
        self.mirror.log(state.global_step, metrics)


def batch_args(cfg: Config, num_processes: int) -> dict:
    """TRL's batch keys from the rollout batch, the update and the micro-batch (care.config.batch_geometry)."""
    geometry = batch_geometry(cfg.rl, num_processes, processes_key="processes (world size)")
    return {"per_device_train_batch_size": geometry.micro_batch_size,
            "gradient_accumulation_steps": geometry.gradient_accumulation_steps,
            "steps_per_generation": geometry.steps_per_generation}


def rollout_args(cfg: Config) -> dict:
    """GRPOConfig keys for the rollout engine; vLLM is only ever imported by TRL, and only when asked for."""
    rollout = cfg.rollout
    if rollout.engine == "hf":
        return {"use_vllm": False}
    args = {"use_vllm": True, "vllm_mode": rollout.vllm_mode,
            "vllm_importance_sampling_correction": rollout.vllm_importance_sampling_correction}
    if rollout.vllm_mode == "colocate":
        args.update(vllm_gpu_memory_utilization=rollout.vllm_gpu_memory_utilization,
                    vllm_tensor_parallel_size=rollout.vllm_tensor_parallel_size,
                    vllm_enable_sleep_mode=rollout.vllm_enable_sleep_mode)
    elif rollout.vllm_server_base_url:
        args["vllm_server_base_url"] = rollout.vllm_server_base_url
    return args


def cap_colocated_vllm_images(min_pixels: int, max_pixels: int) -> None:
    """Give TRL's colocated vLLM engine the backbone's pixel caps.

    TRL 1.16 builds that engine from the model directory with no processor arguments
    (trl.generation.vllm_generation calls its module-level `LLM`), so a hub snapshot's own pixel
    range would win and rollouts would see other image tokens than training. The seam is listed in
    care.trainer.trl_surface (VLLM_ENGINE). Re-applying replaces, never stacks, the caps.
    """
    import functools

    import trl.generation.vllm_generation as generation

    from care.models.loading import vllm_mm_processor_kwargs

    engine = getattr(generation, "LLM", None)
    if engine is None:
        raise ValueError("rollout=vllm_colocate needs vLLM (pip install -r requirements-gpu.lock); or use rollout=hf")
    engine = getattr(engine, "func", engine)  # a partial this function made before
    generation.LLM = functools.partial(engine, mm_processor_kwargs=vllm_mm_processor_kwargs(min_pixels, max_pixels))


def precision_args(cfg: Config, on_gpu: bool) -> dict:
    """Weights (and AdamW's state) in backbone.dtype; on GPUs, autocast to rl.compute_dtype (mixed
    precision: float32 weights + bfloat16 compute at paper scale). CPUs compute in the weights' dtype."""
    compute = cfg.rl.compute_dtype if on_gpu else cfg.backbone.dtype
    return {"use_cpu": not on_gpu, "bf16": on_gpu and compute == "bfloat16", "fp16": on_gpu and compute == "float16"}


def device_args(cfg: Config) -> dict:
    import torch

    return precision_args(cfg, on_gpu=torch.cuda.is_available())


def grpo_args(cfg: Config, output_dir: Path):
    from trl import GRPOConfig

    rl, algo = cfg.rl, cfg.algorithm
    return GRPOConfig(
        output_dir=str(output_dir), max_steps=rl.steps, learning_rate=rl.learning_rate, lr_scheduler_type="constant",
        weight_decay=rl.weight_decay, max_grad_norm=rl.max_grad_norm, **batch_args(cfg, world_size()),
        num_generations=rl.num_generations, temperature=rl.temperature, top_p=rl.top_p,
        max_completion_length=rl.max_completion_length, beta=algo.beta, epsilon=algo.epsilon,
        epsilon_high=algo.epsilon_high, loss_type=algo.loss_type, scale_rewards=algo.scale_rewards,
        importance_sampling_level=algo.importance_sampling_level, delta=algo.delta,
        use_bias_correction_kl=algo.kl_bias_correction,
        mask_truncated_completions=algo.mask_truncated_completions,
        reward_weights=[rl.accuracy_weight, rl.format_weight] if rl.format_weight > 0 else [rl.accuracy_weight],
        logging_steps=rl.logging_steps, save_strategy="steps", save_steps=rl.save_steps, save_total_limit=2,
        save_only_model=False, report_to=[], seed=cfg.seed, data_seed=cfg.seed,
        dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False, log_completions=False,
        model_init_kwargs={"dtype": cfg.backbone.dtype, "attn_implementation": cfg.backbone.attn_implementation},
        **device_args(cfg), **rollout_args(cfg), **parallel_args(cfg),
    )


def parallel_args(cfg: Config) -> dict:
    """parallel=ddp|fsdp|zero3 as TRL/accelerate's own FSDP2 / DeepSpeed settings (care.sharding)."""
    from care.sharding import sharding_args, wrap_classes

    p = cfg.parallel
    return sharding_args(p.strategy, p.activation_checkpointing, p.offload_params or p.offload_optimizer,
                         wrap_classes(cfg.backbone.family))


def reward_functions(cfg: Config) -> list:
    from care.verifiers.reward import FormatReward, VerifierReward

    funcs = [VerifierReward(name="accuracy", extraction=cfg.rl.extraction, flip_rate=cfg.rl.reward_noise)]
    if cfg.rl.format_weight > 0:
        funcs.append(FormatReward())
    return funcs


def build_trainer(cfg: Config, policy_dir: str, processor, train_dataset, output_dir: Path, callbacks=(),
                  reward_funcs: list | None = None):
    """`reward_funcs` replaces the verifier rewards (first = correctness) — for tests and custom tasks."""
    from care.objective import CareConfig
    from care.sharding import ShardingCheck
    from care.trainer.care_trainer import CareGRPOTrainer

    reward_funcs = reward_funcs or reward_functions(cfg)
    if cfg.rollout.engine == "vllm" and cfg.rollout.vllm_mode == "colocate":
        cap_colocated_vllm_images(cfg.backbone.min_pixels, cfg.backbone.max_pixels)
    # the job itself checks, after wrapping, that the policy is sharded as asked (a silent DDP
    # fallback is what transformers does with fsdp on CPU); the host that submitted cannot know
    sharding_check = ShardingCheck(cfg.parallel.strategy, world_size(), cfg.parallel.activation_checkpointing)
    return CareGRPOTrainer(model=policy_dir, reward_funcs=reward_funcs, args=grpo_args(cfg, output_dir),
                           train_dataset=train_dataset, processing_class=processor,
                           callbacks=[*callbacks, sharding_check],
                           algorithm=cfg.algorithm, care_config=CareConfig(**asdict(cfg.care)), seed=cfg.seed,
                           rgr=cfg.rgr)
