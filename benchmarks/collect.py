"""Time `analysis.collect` on a paper-scale results tree: 1,000 run dirs × 500 logged steps.

Run: python benchmarks/collect.py [--runs 1000] [--steps 500] [--keep DIR]. Writes the
synthetic run dirs (every metric key the trainer logs, Hydra multirun layout) into a temp
dir, times one cold `collect` over them, and prints one JSON line last:
{"runs": .., "steps": .., "rows": .., "collect_s": .., "steps_per_s": ..}. Goal: collect_s <= 10.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, like the other scripts

from analysis.collect import collect  # noqa: E402
from analysis.fake_runs import write_run  # noqa: E402

SWEEPS = ("main", "components", "negatives", "rgr", "k_eq", "anchor", "neg_scale", "token_credit")


def write_tree(root: Path, n_runs: int, steps: int) -> None:
    """n_runs distinct runs spread over the paper's sweeps, 100 jobs per multirun dir."""
    for index in range(n_runs):
        sweep = SWEEPS[index % len(SWEEPS)]
        write_run(root / sweep / f"{index // 100:03d}", str(index % 100), seed=index % 5,
                  algorithm="grpo" if index % 4 == 0 else "care", sweep=sweep, steps=steps,
                  overrides={"data.seed": index}, after={"synthetic": 40.0 + index % 7})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--keep", type=Path, help="write the tree here and keep it (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="care-collect-bench-") as scratch:
        root = args.keep or Path(scratch)
        started = time.perf_counter()
        write_tree(root, args.runs, args.steps)
        size_mb = sum(p.stat().st_size for p in root.rglob("metrics.jsonl")) / 2**20
        print(f"wrote {args.runs} runs x {args.steps} steps ({size_mb:.0f} MiB of metrics.jsonl) "
              f"in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        runs, curves, problems = collect([root], quiet=True)
        collect_s = time.perf_counter() - started
    assert len(runs) == args.runs and len(curves) == args.runs * args.steps and problems.empty
    print(json.dumps({"runs": len(runs), "steps": args.steps, "rows": len(curves), "collect_s": round(collect_s, 2),
                      "steps_per_s": round(len(curves) / collect_s)}))


if __name__ == "__main__":
    main()
