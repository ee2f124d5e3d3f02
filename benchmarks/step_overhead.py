"""Per-step wall time of CARE (RGR off) vs GRPO on the same tiny backbone, data and seeds.

Both trainers are built once; steps alternate GRPO, CARE, GRPO, ... with the same sampling
seed per round, so drift in machine load hits both alike. Both use the same loss settings
(beta = 0, same clip range): the ratio isolates what CARE adds (span finding, one no-grad
forward for hidden states and old log-probs, the objective), not a KL term.
Last line: {"grpo_step_s": .., "care_step_s": .., "ratio": ..}. Goal: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def endless(loader):
    while True:
        yield from loader


def timed_step(trainer, batches) -> float:
    import torch

    trainer.model.train()
    inputs = next(batches)
    start = time.perf_counter()
    loss = trainer.training_step(trainer.model, inputs, num_items_in_batch=None)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    trainer.state.global_step += 1
    assert torch.isfinite(loss)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per algorithm")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-completion", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from dataclasses import replace

    import torch

    from tests.trainer_helpers import build_tiny_trainer, parity_reward, tiny_config

    cache = Path(os.environ.get("CARE_BENCH_CACHE", ROOT / ".cache" / "care"))
    trainers = {}
    for name in ("grpo", "care"):
        cfg = tiny_config(cache, name, steps=args.steps + args.warmup, prompts_per_step=args.prompts,
                          num_generations=args.generations, max_completion_length=args.max_completion)
        cfg.algorithm = replace(cfg.algorithm, beta=0.0, epsilon_high=0.3, loss_type="dapo")
        cfg.data = replace(cfg.data, train_size=512)
        trainer = build_tiny_trainer(cfg, Path(tempfile.mkdtemp()), reward_funcs=(parity_reward,))
        trainer.create_optimizer_and_scheduler(num_training_steps=args.steps + args.warmup)
        trainer.current_gradient_accumulation_steps = 1  # normally set by the train loop
        trainers[name] = (trainer, endless(trainer.get_train_dataloader()))

    times: dict[str, list[float]] = {name: [] for name in trainers}
    for round_index in range(args.steps + args.warmup):
        for name, (trainer, batches) in trainers.items():
            torch.manual_seed(round_index)
            elapsed = timed_step(trainer, batches)
            if round_index >= args.warmup:
                times[name].append(elapsed)
    grpo, care = statistics.median(times["grpo"]), statistics.median(times["care"])
    print(f"grpo steps: {[round(t, 3) for t in times['grpo']]}")
    print(f"care steps: {[round(t, 3) for t in times['care']]}")
    print(json.dumps({"grpo_step_s": round(grpo, 4), "care_step_s": round(care, 4), "ratio": round(care / grpo, 3),
                      "steps": args.steps, "rollouts_per_step": args.prompts * args.generations}))


if __name__ == "__main__":
    main()
