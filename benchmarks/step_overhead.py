"""Wall time of CARE (RGR off), CARE + RGR and GRPO per rollout batch, on the same tiny backbone, data, seeds.

Two batch geometries, each with all three algorithms:
- `ratio`: today's CPU default, one optimizer update per rollout batch. TRL runs no forward of
  its own before the loss here, so CARE's features need one of their own (or the loss forward).
- `paper_ratio`: the paper's shape, 4 updates per rollout batch (prompts_per_update = 1/4 of
  prompts_per_rollout). TRL runs an old-log-prob forward for every rollout batch anyway (GRPO
  too), and CARE reads its features from that pass.
A round is one rollout batch (1 or 4 training steps, each with its optimizer step); rounds
alternate the six trainers with the same sampling seed per round, so drift in machine load hits
all alike. All use the same loss settings (beta = 0, same clip range): the ratios isolate what
CARE adds (span finding, the features, the objective) and what RGR adds (the features before the
batch is final, one repair decode, the re-score and splice). Last line: JSON with each geometry's
median seconds per round and ratios to GRPO (`ratio`, `rgr_ratio`, `paper_ratio`,
`paper_rgr_ratio`); goals in docs/benchmarks.md. The untrained tiny policy never emits EOS, so
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

UPDATES_PER_ROLLOUT_BATCH = {"": 1, "paper_": 4}  # key prefix in the JSON line -> updates per rollout batch


def endless(loader):
    while True:
        yield from loader


def timed_round(trainer, batches, updates: int) -> float:
    """Seconds for one rollout batch: `updates` training steps (the first one generates), each with its optimizer step."""
    import torch

    trainer.model.train()
    elapsed = 0.0
    for _ in range(updates):
        inputs = next(batches)
        start = time.perf_counter()
        loss = trainer.training_step(trainer.model, inputs, num_items_in_batch=None)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        elapsed += time.perf_counter() - start
        trainer.state.global_step += 1
        assert torch.isfinite(loss)
    return elapsed


def build(name: str, updates: int, args, cache: Path):
    from dataclasses import replace

    from care.config import RGRConfig
    from tests.trainer_helpers import build_tiny_trainer, parity_reward, tiny_config

    rounds = args.steps + args.warmup
    cfg = tiny_config(cache, "grpo" if name == "grpo" else "care", steps=rounds * updates,
                      prompts_per_rollout=args.prompts, prompts_per_update=args.prompts // updates,
                      num_generations=args.generations, max_completion_length=args.max_completion,
                      rgr=RGRConfig(enabled=name == "care_rgr", max_new_tokens=args.max_completion))
    cfg.algorithm = replace(cfg.algorithm, beta=0.0, epsilon_high=0.3, loss_type="dapo")
    cfg.data = replace(cfg.data, train_size=512)
    trainer = build_tiny_trainer(cfg, Path(tempfile.mkdtemp()), reward_funcs=(parity_reward,))
    trainer.create_optimizer_and_scheduler(num_training_steps=rounds * updates)
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps  # set by the train loop
    return trainer, endless(trainer.get_train_dataloader())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8, help="timed rollout batches per trainer")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8, help="prompts per rollout batch (a multiple of 4)")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-completion", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    cache = Path(os.environ.get("CARE_BENCH_CACHE", ROOT / ".cache" / "care"))
    trainers = {(prefix, name): build(name, updates, args, cache)
                for prefix, updates in UPDATES_PER_ROLLOUT_BATCH.items() for name in ("grpo", "care", "care_rgr")}
    for (prefix, _), (trainer, _) in trainers.items():
        old_logp_forward = trainer.args.gradient_accumulation_steps % trainer.args.steps_per_generation != 0
        assert old_logp_forward == (prefix == "paper_"), "paper_ratio is the geometry where TRL runs that forward"

    times: dict[tuple[str, str], list[float]] = {key: [] for key in trainers}
    for round_index in range(args.steps + args.warmup):
        for (prefix, name), (trainer, batches) in trainers.items():
            torch.manual_seed(round_index)
            elapsed = timed_round(trainer, batches, UPDATES_PER_ROLLOUT_BATCH[prefix])
            if round_index >= args.warmup:
                times[(prefix, name)].append(elapsed)
    median = {key: statistics.median(values) for key, values in times.items()}
    for (prefix, name), values in times.items():
        print(f"{prefix or 'default_'}{name} rounds: {[round(t, 3) for t in values]}")
    for prefix in UPDATES_PER_ROLLOUT_BATCH:
        attempts = trainers[(prefix, "care_rgr")][0]._metrics["train"]["rgr/attempts"]
        print(f"{prefix or 'default_'}rgr attempts per rollout batch: {attempts}")
    report = {}
    for prefix in UPDATES_PER_ROLLOUT_BATCH:
        grpo = median[(prefix, "grpo")]
        report.update({f"{prefix}grpo_step_s": round(grpo, 4), f"{prefix}care_step_s": round(median[(prefix, "care")], 4),
                       f"{prefix}ratio": round(median[(prefix, "care")] / grpo, 3),
                       f"{prefix}care_rgr_step_s": round(median[(prefix, "care_rgr")], 4),
                       f"{prefix}rgr_ratio": round(median[(prefix, "care_rgr")] / grpo, 3)})
    print(json.dumps({**report, "steps": args.steps, "rollouts_per_batch": args.prompts * args.generations}))


if __name__ == "__main__":
    main()
