"""Worker for the 2-process test: one CPU rank of a real distributed (gloo) CARE training step."""

import os
import sys
from pathlib import Path

import torch


def run_rank(rank: int, world: int, port: int, cache_dir: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), WANDB_MODE="disabled",
                      HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    torch.set_num_threads(1)
    import care.trainer.care_trainer as module
    from tests.trainer_helpers import build_tiny_trainer, tiny_config

    recorded = {}
    original = module.care_advantages

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        recorded["inputs"] = {"args": [a for a in args[:6]], "cfg": args[6] if len(args) > 6 else kwargs["cfg"]}
        recorded["advantages"] = result.advantages
        recorded["in_subgroup"] = result.in_subgroup
        recorded["negative_index"] = result.negative_index
        recorded["anchor_index"] = result.anchor_index
        return result

    module.care_advantages = recording
    cfg = tiny_config(Path(cache_dir), "care", steps=1, prompts_per_step=3, num_generations=4)
    trainer = build_tiny_trainer(cfg, Path(out_dir) / f"trainer{rank}")
    outputs = []
    original_step = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: outputs.append(original_step(inputs)) or outputs[-1]
    trainer.train()
    local = outputs[-1]
    torch.save({"recorded": {k: v for k, v in recorded.items() if k != "inputs"},
                "args": recorded["inputs"]["args"], "local_advantages": local["advantages"],
                "local_rows": local["completion_ids"].size(0), "tool_mask": local["tool_mask"]},
               Path(out_dir) / f"rank{rank}.pt")
