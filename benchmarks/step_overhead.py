"""Per-step wall time of CARE (RGR off), CARE + RGR and GRPO on the same tiny backbone, data, seeds.

The trainers are built once; steps alternate GRPO, CARE, CARE + RGR, GRPO, ... with the same
sampling seed per round, so drift in machine load hits all alike. All use the same loss
settings (beta = 0, same clip range): the ratios isolate what CARE adds (span finding, the
hidden states read from the loss forward, the objective) and what RGR adds (the features
forward RGR needs before the batch is final, one repair decode, the re-score and splice).
Last line: {"grpo_step_s": .., "care_step_s": .., "ratio": .., "care_rgr_step_s": .., "rgr_ratio": ..}.
Goals: ratio <= 1.10, rgr_ratio <= 1.35 (G = 8). The untrained tiny policy never emits EOS, so
every decode spends its whole budget: repairs get the rollouts' budget (--max-completion), not
RGR's default 512, or the benchmark would time a policy that never stops rather than RGR.
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
    from care.config import RGRConfig

    trainers = {}
    for name in ("grpo", "care", "care_rgr"):
        algorithm = "grpo" if name == "grpo" else "care"
        cfg = tiny_config(cache, algorithm, steps=args.steps + args.warmup, prompts_per_step=args.prompts,
                          num_generations=args.generations, max_completion_length=args.max_completion,
                          rgr=RGRConfig(enabled=name == "care_rgr", max_new_tokens=args.max_completion))
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
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name} steps: {[round(t, 3) for t in values]}")
    print(f"rgr attempts per step: {trainers['care_rgr'][0]._metrics['train']['rgr/attempts']}")
    grpo = median["grpo"]
    print(json.dumps({"grpo_step_s": round(grpo, 4), "care_step_s": round(median["care"], 4),
                      "ratio": round(median["care"] / grpo, 3), "care_rgr_step_s": round(median["care_rgr"], 4),
                      "rgr_ratio": round(median["care_rgr"] / grpo, 3), "steps": args.steps,
                      "rollouts_per_step": args.prompts * args.generations}))


if __name__ == "__main__":
    main()
