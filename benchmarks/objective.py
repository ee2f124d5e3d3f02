"""Time CARE advantages against GRPO's for one training batch: 512 prompts x 8 rollouts, D = 3584.

Run: python benchmarks/objective.py [--repeats 15]. Prints info lines, then one JSON line
{"care_ms": .., "grpo_ms": .., "ratio": ..} last (medians after warm-up, 2 torch threads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from care.objective import CareConfig, care_advantages, grpo_advantages


def make_batch(n_prompts: int, group_size: int, hidden: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic batch with a realistic mix of all-fail, mixed and all-correct groups."""
    generator = torch.Generator().manual_seed(seed)
    solve_rate = torch.rand(n_prompts, 1, generator=generator)
    correct = torch.rand(n_prompts, group_size, generator=generator) < solve_rate
    return {
        "correct": correct,
        "rewards": correct.float() + 0.1 * torch.rand(n_prompts, group_size, generator=generator),
        "think_len": torch.randint(0, 1024, (n_prompts, group_size), generator=generator),
        "answer_len": torch.randint(1, 32, (n_prompts, group_size), generator=generator),
        "embeddings": torch.randn(n_prompts, group_size, hidden, generator=generator),
        "logprob_sum": -100 * torch.rand(n_prompts, group_size, generator=generator),
    }


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=3584)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    torch.set_num_threads(2)
    batch = make_batch(args.prompts, args.group_size, args.hidden)
    cfg = CareConfig()
    generator = torch.Generator().manual_seed(0)

    def care() -> object:
        return care_advantages(cfg=cfg, generator=generator, **batch)

    def grpo() -> object:
        return grpo_advantages(batch["rewards"], batch["correct"])

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.prompts}x{args.group_size}x{args.hidden}"
    )
    care_ms = median_ms(care, args.repeats)
    grpo_ms = median_ms(grpo, args.repeats)
    print(
        json.dumps(
            {"care_ms": round(care_ms, 3), "grpo_ms": round(grpo_ms, 3), "ratio": round(care_ms / grpo_ms, 1)}
        )
    )


if __name__ == "__main__":
    main()
