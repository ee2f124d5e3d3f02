"""Shard the policy across GPUs (FSDP2 or DeepSpeed ZeRO-3) and check, in the job, that it happened.

Two halves, both on plain arguments so they do not depend on how the config names them:

- `sharding_args(...)`: the TrainingArguments / GRPOConfig keywords that make transformers and
  accelerate apply the strategy themselves (FSDP2 full shard, auto-wrapped per decoder layer and
  per vision block, then the root; or a ZeRO-3 DeepSpeed config).
- `check_sharded(model, world_size, strategy)`: run by the training job after the model is
  wrapped. transformers 5.17 silently trains as plain DDP when FSDP is asked for on CPU
  (`use_cpu=True`; see docs/sharding.md), so the job counts what each rank actually holds and
  stops with the counts if that is not about 1/world of the model. `ShardingCheck` is the same
  check as a Trainer callback (it runs at `on_train_begin`, after accelerate has wrapped the model).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

STRATEGIES = ("ddp", "fsdp", "zero3")
# Blocks that are wrapped (and checkpointed) one by one; transformers lists them as `_no_split_modules`.
WRAP_CLASSES = {
    "qwen2_5_vl": ("Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"),
    "qwen3_vl": ("Qwen3VLTextDecoderLayer", "Qwen3VLVisionBlock"),
}
# A rank holding more than this multiple of total/world is not sharded (FSDP pads dim 0 per rank and
# ZeRO-3 partitions flat buffers, so a sharded rank sits close to 1/world, an unsharded one at 1).
SHARD_SLACK = 1.5


class NotSharded(RuntimeError):
    pass


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"parallel strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    return strategy


def wrap_classes(family: str) -> tuple[str, ...]:
    if family not in WRAP_CLASSES:
        raise ValueError(f"no wrap classes known for backbone family {family!r}; known: {', '.join(WRAP_CLASSES)}")
    return WRAP_CLASSES[family]


def sharding_args(strategy: str, activation_checkpointing: bool, cpu_offload: bool,
                  layer_classes: tuple[str, ...] | list[str]) -> dict:
    """Keyword arguments for `GRPOConfig(...)` (any `TrainingArguments`) that apply `strategy`.

    `ddp` adds nothing but (optional) gradient checkpointing; it cannot offload.
    """
    check_strategy(strategy)
    if strategy == "fsdp" and not layer_classes:
        raise ValueError("fsdp needs the decoder-layer class names to wrap (e.g. wrap_classes('qwen2_5_vl'))")
    checkpointing = {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    if strategy == "ddp":
        if cpu_offload:
            raise ValueError("cpu_offload needs parallel=fsdp or parallel=zero3; ddp keeps every parameter on the GPU")
        return dict(checkpointing) if activation_checkpointing else {}
    if strategy == "fsdp":
        # FSDP's own activation checkpointing, not `gradient_checkpointing` (which adds an all-gather per layer)
        # full shard = FSDP2 resharding after forward; the string form ("full_shard auto_wrap") is deprecated
        return {"fsdp": True,
                "fsdp_config": {"version": 2, "reshard_after_forward": True, "cpu_offload": cpu_offload,
                                "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                "transformer_layer_cls_to_wrap": list(layer_classes),
                                "activation_checkpointing": activation_checkpointing,
                                "cpu_ram_efficient_loading": True, "state_dict_type": "SHARDED_STATE_DICT"}}
    return {"deepspeed": zero3_config(cpu_offload), **(checkpointing if activation_checkpointing else {})}


def zero3_config(cpu_offload: bool) -> dict:
    """A DeepSpeed ZeRO-3 config; "auto" values are filled in by transformers from the TrainingArguments."""
    offload = {"device": "cpu", "pin_memory": True}
    zero = {"stage": 3, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
            "stage3_gather_16bit_weights_on_model_save": True}
    if cpu_offload:
        zero.update(offload_param=dict(offload), offload_optimizer=dict(offload))
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto"}


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(held by this rank, in the whole model): FSDP2 DTensors, ZeRO-3 partitions and plain tensors."""
    local = total = 0
    for param in model.parameters():
        if hasattr(param, "ds_numel"):  # DeepSpeed ZeRO-3: `param` is an empty placeholder
            local += param.ds_tensor.numel()
            total += param.ds_numel
        elif hasattr(param, "to_local"):  # torch DTensor (FSDP2)
            local += param.to_local().numel()
            total += param.numel()
        else:
            local += param.numel()
            total += param.numel()
    return local, total


def check_sharded(model: torch.nn.Module, world_size: int, strategy: str) -> dict:
    """Raise `NotSharded` if `strategy` shards but this rank holds much more than 1/world of the model."""
    check_strategy(strategy)
    local, total = parameter_counts(model)
    counts = {"strategy": strategy, "world_size": world_size, "local_params": local, "total_params": total,
              "local_fraction": local / total if total else 0.0}
    if strategy == "ddp" or world_size <= 1:
        return counts
    if local > SHARD_SLACK * total / world_size:
        raise NotSharded(
            f"parallel={strategy} over {world_size} processes should leave about 1/{world_size} of the "
            f"{total:,} parameters on each rank ({total // world_size:,}), but this rank holds {local:,} "
            f"({counts['local_fraction']:.0%}): the model was not sharded (transformers falls back to plain DDP "
            f"on CPU, use_cpu=True, or when accelerate's FSDP/DeepSpeed plugin is not active). Run on GPUs under "
            f"`accelerate launch`/torchrun, or choose parallel=ddp if the model fits unsharded.")
    return counts


def disable_kv_cache(model: torch.nn.Module) -> None:
    """Training forwards must not build a KV cache under FSDP's activation checkpointing.

    The recompute in backward runs each layer again with the same cache object, which appends the
    keys a second time (Qwen2.5-VL: "size of tensor a (96) must match ... b (48)"). The Trainer
    clears only the top-level `config.use_cache`; Qwen-VL's text model reads its `text_config`.
    `generate()` passes `use_cache=True` itself, so rollouts keep their cache.
    """
    for config in (model.config, getattr(model.config, "text_config", None)):
        if config is not None:
            config.use_cache = False


class ShardingCheck(TrainerCallback):
    """At the start of training, after accelerate has wrapped the model: `check_sharded`, and no KV
    cache in training forwards when FSDP checkpoints activations."""

    def __init__(self, strategy: str, world_size: int, activation_checkpointing: bool):
        self.strategy, self.world_size = check_strategy(strategy), world_size
        self.activation_checkpointing = activation_checkpointing
        self.counts: dict | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.strategy == "fsdp" and self.activation_checkpointing:
            disable_kv_cache(model)
        self.counts = check_sharded(model, self.world_size, self.strategy)


def save_whole_model(trainer, out_dir: Path | str) -> None:
    """`trainer.save_model(out_dir)` with the whole model in it; every rank calls it (gathering a
    sharded model is collective) and rank 0 writes.

    Under FSDP the Trainer saves nothing unless the plugin's state dict type is FULL_STATE_DICT, and
    care's FSDP settings checkpoint with SHARDED_STATE_DICT (fast, resumable): the final save switches
    to full, the use accelerate's `set_state_dict_type` documents ("trains with sharded, but final save
    with full"). ZeRO-3 gathers through `stage3_gather_16bit_weights_on_model_save` (zero3_config).
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(out_dir))
