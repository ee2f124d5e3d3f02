"""Worker for the 2-process test: one CPU rank of a real distributed (gloo) CARE training step."""

import os
import sys
from pathlib import Path

import torch


def join_as_rank(rank: int, world: int, port: int) -> None:
    """This process as rank `rank` of a `world`-process gloo job on this machine, offline, one thread."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), WANDB_MODE="disabled",
                      HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    torch.set_num_threads(1)


def run_rank(rank: int, world: int, port: int, cache_dir: str, out_dir: str) -> None:
    join_as_rank(rank, world, port)
    import care.trainer.care_step as module
    from care.config import RGRConfig
    from care.trainer.trl_surface import LOSS_MASK
    from tests.trainer_helpers import build_tiny_trainer, tiny_config

    recorded = {}
    select, score = module.select_subgroups, module.score_subgroups

    def recording_select(*args, **kwargs):
        recorded["args"] = list(args[:6])
        return select(*args, **kwargs)

    def recording_score(selection, rewards, cfg, outcome=None, reward=None):
        result = score(selection, rewards, cfg, outcome, reward)
        recorded.update(advantages=result.advantages, in_subgroup=result.in_subgroup, anchor_index=result.anchor_index,
                        negative_index=result.negative_index, repair_outcome=outcome, repair_reward=reward)
        return result

    module.select_subgroups, module.score_subgroups = recording_select, recording_score
    cfg = tiny_config(Path(cache_dir), "care", steps=1, prompts_per_rollout=3, num_generations=4)
    cfg.rgr = RGRConfig(max_new_tokens=8)  # RGR on: repairs may sit on either rank
    trainer = build_tiny_trainer(cfg, Path(out_dir) / f"trainer{rank}")
    generate_calls = []
    original_generate = trainer._generate_single_turn
    trainer._generate_single_turn = lambda *a, **k: generate_calls.append(len(a[0])) or original_generate(*a, **k)
    outputs = []
    original_step = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: outputs.append(original_step(inputs)) or outputs[-1]
    trainer.train()
    local = outputs[-1]
    torch.save({"recorded": {k: v for k, v in recorded.items() if k != "args"}, "generate_calls": generate_calls,
                "args": recorded["args"], "local_advantages": local["advantages"],
                "local_rows": local["completion_ids"].size(0), "loss_mask": local[LOSS_MASK]},
               Path(out_dir) / f"rank{rank}.pt")
    from care.distributed import leave_process_group

    leave_process_group()


def run_dynamic_rank(rank: int, world: int, port: int, cache_dir: str, out_dir: str) -> None:
    """DAPO's dynamic sampling on 2 ranks, 3 prompts x G=4: the middle group straddles the ranks."""
    join_as_rank(rank, world, port)
    from care.trainer.trl_surface import trained_tokens
    from tests.trainer_helpers import build_tiny_trainer, half_the_prompts_teach, tiny_config

    cfg = tiny_config(Path(cache_dir), "dapo", steps=1, prompts_per_rollout=3, num_generations=4)
    cfg.algorithm.mask_truncated_completions = False
    trainer = build_tiny_trainer(cfg, Path(out_dir) / f"trainer{rank}", reward_funcs=(half_the_prompts_teach,))
    rounds, outputs = [], []
    sample, step = trainer.sample, trainer._generate_and_score_completions

    def recording_sample(inputs, read_features):
        rollouts = sample(inputs, read_features)
        rounds.append({"ids": [row["id"] for row in inputs], "completion_ids": rollouts.batch["completion_ids"],
                       "completion_mask": rollouts.batch["completion_mask"],
                       "rewards": rollouts.rewards_per_func[:, 0].cpu()})
        return rollouts
    trainer.sample = recording_sample
    trainer._generate_and_score_completions = lambda inputs: outputs.append(step(inputs)) or outputs[-1]
    trainer.train()
    local = outputs[-1]
    torch.save({"rounds": rounds, "completion_ids": local["completion_ids"], "completion_mask": local["completion_mask"],
                "trained": trained_tokens(local), "num_items": local["num_items_in_batch"],
                "logged": {k: v for k, v in trainer.state.log_history[0].items() if k.startswith("dynamic/")}},
               Path(out_dir) / f"rank{rank}.pt")
    from care.distributed import leave_process_group

    leave_process_group()
