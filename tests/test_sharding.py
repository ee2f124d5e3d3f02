"""Sharding: the tiny Qwen2.5-VL policy shards over 2 CPU processes and trains like one process.

transformers' Trainer cannot shard on CPU (it silently trains as DDP), so the two ranks apply the
same FSDP2 layout accelerate applies on GPUs, from the settings `care.sharding.sharding_args`
hands it: activation checkpointing on, then `fully_shard` on every wrap class (decoder layers,
vision blocks), then on the root. Sharding is asserted by each rank's local parameter count.
The step is CARE's loss shape: token log-prob ratios against the rollout policy, clip 0.2/0.3,
k3 KL to the reference, several updates on one rollout batch, AdamW.
"""

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from care.config import BackboneConfig
from care.sharding import (
    WRAP_CLASSES,
    NotSharded,
    ShardingCheck,
    check_sharded,
    parameter_counts,
    sharding_args,
    wrap_classes,
)

ROWS, COMPLETION, STEPS = 4, 6, 3
ADVANTAGES = torch.tensor([1.0, -1.0, 0.5, -0.25])
CLIP_LOW, CLIP_HIGH, BETA = 0.2, 0.3, 0.01


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(source: str):
    from transformers import AutoModelForImageTextToText

    from care.models import load_processor
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32, attn_implementation="sdpa")
    return model, load_processor(source, "qwen2_5_vl")


def _batch(processor, rows: range) -> dict:
    """Prompts with a board image each, then a fixed completion of COMPLETION tokens per row."""
    from PIL import Image
    images = [Image.new("RGB", (84, 84), (40 * r, 255 - 40 * r, 90)) for r in rows]
    texts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"board {r}: who wins?"}]}],
        add_generation_prompt=True, tokenize=False) for r in rows]
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    completions = torch.stack([torch.randint(10, 200, (COMPLETION,), generator=torch.Generator().manual_seed(r))
                               for r in rows])
    per_token = {"input_ids": completions, "attention_mask": torch.ones_like(completions),
                 "mm_token_type_ids": torch.zeros_like(completions)}  # completions are text tokens
    return {key: torch.cat([value, per_token[key]], dim=1) if key in per_token else value
            for key, value in batch.items()}


def _completion_logps(model, batch) -> torch.Tensor:
    logits = model(**batch).logits[:, -COMPLETION - 1:-1]
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, batch["input_ids"][:, -COMPLETION:, None])[..., 0]


def _care_loss(logps, old_logps, ref_logps, advantages) -> torch.Tensor:
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH)
    policy = -torch.minimum(ratio * advantages[:, None], clipped * advantages[:, None])
    kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1  # k3
    return (policy + BETA * kl).mean()


def _train(model, batch, advantages) -> list[float]:
    """STEPS AdamW updates on one rollout batch (the rollout policy is also the reference here)."""
    with torch.no_grad():
        old = _completion_logps(model, batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    losses = []
    for _ in range(STEPS):
        loss = _care_loss(_completion_logps(model, batch), old, old, advantages)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())
    return losses


def shard_like_accelerate(model, fsdp_config: dict):
    """What accelerate's FSDP2 preparation does with `fsdp_config`: checkpoint, wrap classes, root."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
    from torch.distributed.fsdp import fully_shard

    classes = set(fsdp_config["transformer_layer_cls_to_wrap"])
    if fsdp_config["activation_checkpointing"]:
        apply_activation_checkpointing(model, check_fn=lambda m: type(m).__name__ in classes)
    for module in reversed(list(model.modules())):  # children before parents
        if type(module).__name__ in classes:
            fully_shard(module, reshard_after_forward=fsdp_config["reshard_after_forward"])
    return fully_shard(model, reshard_after_forward=fsdp_config["reshard_after_forward"])


def run_rank(rank: int, world: int, port: int, source: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        args = sharding_args("fsdp", activation_checkpointing=True, cpu_offload=False,
                             layer_classes=wrap_classes("qwen2_5_vl"))
        model, processor = _load(source)
        # a DDP-wrapped copy keeps every parameter on every rank: the check must refuse it
        ddp = torch.nn.parallel.DistributedDataParallel(_load(source)[0])
        try:
            check_sharded(ddp, world, "fsdp")
            refused = ""
        except NotSharded as err:
            refused = str(err)
        del ddp
        model = shard_like_accelerate(model, args["fsdp_config"])
        callback = ShardingCheck("fsdp", world, activation_checkpointing=True)  # what the Trainer runs
        callback.on_train_begin(None, None, None, model=model)
        counts = callback.counts
        per_rank = ROWS // world
        rows = range(rank * per_rank, (rank + 1) * per_rank)
        losses = torch.stack(_train(model, _batch(processor, rows), ADVANTAGES[rank * per_rank:][:per_rank]))
        torch.distributed.all_reduce(losses)  # each rank's mean over its rows; equal row counts
        torch.save({"counts": counts, "refused": refused, "losses": losses / world,
                    "sharded_modules": sum(type(m).__name__.startswith("FSDP") for m in model.modules())},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_shards_the_tiny_policy_and_trains_like_one_process(cache_dir, tmp_path):
    from care.models import resolve_backbone

    source = resolve_backbone(BackboneConfig(), cache_dir)
    mp.spawn(run_rank, args=(2, _free_port(), str(source), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    model, processor = _load(source)
    total = sum(p.numel() for p in model.parameters())
    locals_ = [r["counts"]["local_params"] for r in ranks]
    assert [r["counts"]["total_params"] for r in ranks] == [total, total]
    assert total <= sum(locals_) <= total * 1.01  # every parameter held once (FSDP pads dim 0 a little)
    assert all(abs(n / total - 0.5) < 0.02 for n in locals_), (locals_, total)
    assert all(r["sharded_modules"] >= 1 + 2 + 2 for r in ranks)  # root + 2 decoder layers + 2 vision blocks
    for r in ranks:  # the unsharded (DDP) copy was refused, naming the strategy and the counts
        assert "parallel=fsdp" in r["refused"] and f"{total:,}" in r["refused"]

    single = torch.stack(_train(model, _batch(processor, range(ROWS)), ADVANTAGES))
    assert torch.allclose(ranks[0]["losses"], single, rtol=1e-4, atol=1e-6), (ranks[0]["losses"], single)
    assert not torch.allclose(single[0], single[-1])  # the updates moved the policy, so the match is not trivial


def test_wrap_classes_are_the_models_own_blocks():
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

    for family, cls in (("qwen2_5_vl", Qwen2_5_VLForConditionalGeneration),
                        ("qwen3_vl", Qwen3VLForConditionalGeneration)):
        assert set(WRAP_CLASSES[family]) == set(cls._no_split_modules)


def test_settings_per_strategy_and_bad_input(tmp_path):
    from transformers import TrainingArguments

    fsdp = sharding_args("fsdp", True, True, wrap_classes("qwen3_vl"))
    assert "gradient_checkpointing" not in fsdp  # FSDP checkpoints activations itself
    # what transformers hands accelerate's FSDP plugin from these keywords (parsed even on CPU)
    plugin = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], **fsdp).fsdp_plugin_args
    assert plugin == {"fsdp_version": 2, "cpu_offload": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                      "transformer_cls_names_to_wrap": "Qwen3VLTextDecoderLayer,Qwen3VLVisionBlock",
                      "cpu_ram_efficient_loading": True, "state_dict_type": "SHARDED_STATE_DICT",
                      "activation_checkpointing": True, "reshard_after_forward": True}
    zero3 = sharding_args("zero3", True, False, ())
    assert zero3["deepspeed"]["zero_optimization"]["stage"] == 3 and zero3["gradient_checkpointing"]
    assert "offload_param" not in zero3["deepspeed"]["zero_optimization"]
    assert sharding_args("ddp", False, False, ()) == {}
    with pytest.raises(ValueError, match="'fsdp2' is not one of ddp, fsdp, zero3"):
        sharding_args("fsdp2", True, False, ())
    with pytest.raises(ValueError, match="cpu_offload needs"):
        sharding_args("ddp", False, True, ())
    with pytest.raises(ValueError, match="'llava'"):
        wrap_classes("llava")
    plain = torch.nn.Linear(4, 4)
    assert parameter_counts(plain) == (20, 20)
    assert check_sharded(plain, 1, "fsdp")["local_fraction"] == 1.0  # one process: nothing to shard over
