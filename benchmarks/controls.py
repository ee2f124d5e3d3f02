"""The tables' uncertainty marks on real CPU training: two controls whose answer is known (issue 25, item 6).

    python benchmarks/controls.py --runs DIR [DIR ...] [--method grpo] [--column after.synthetic]

It reads finished run dirs (analysis.collect) and compares, with the tables' own rule
(analysis.uncertainty.compare: Δ with its 95% CI over training seeds and benchmark items, paired
when runs share seeds and a cold start), the method's reference cell (no label, clean rewards) with:
- the same config under another label, trained on other seeds: nothing differs but the seeds, so the
  difference must come out unresolved;
- the same config with `rl.reward_noise` > 0 (0.5: rewards that say nothing about correctness): known
  to be worse, so it must come out resolved and worse.
Made with (the reference cell from the main sweep, seeds 0-4):

    python run.py -m algorithm=grpo seed=5,6,7,8,9 label=twin eval=synthetic hydra.sweep.dir=DIR/twin
    python run.py -m algorithm=grpo seed=0,1,2,3,4 rl.reward_noise=0.5 eval=synthetic hydra.sweep.dir=DIR/noisy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.collect import collect  # noqa: E402
from analysis.uncertainty import column_sample, compare, interval  # noqa: E402


def cells(runs, method: str) -> dict:
    """The method's finished runs split into reference, twin (another label) and noisy-reward cells."""
    runs = runs[(runs["status"] == "finished") & (runs["cfg.algorithm.name"] == method)]
    runs = runs.assign(seed=runs["cfg.seed"].astype(int))
    noise = runs.get("cfg.rl.reward_noise")
    noisy = runs[noise.fillna(0) > 0] if noise is not None else runs.iloc[:0]
    clean = runs.drop(noisy.index)
    labelled = clean["label"].notna()
    return {"reference": clean[~labelled], "twin": clean[labelled], "noisy rewards": noisy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--method", default="grpo")
    parser.add_argument("--column", default="after.synthetic")
    args = parser.parse_args(argv)
    runs, _, _ = collect(args.runs, quiet=True)
    found = cells(runs, args.method)
    reference = column_sample(found["reference"], args.column)
    print(f"{args.method}, {args.column}; reference cell: seeds {list(reference.seeds)}, "
          f"{_interval_text(reference)}")
    failures = 0
    for name, expect in (("twin", "unresolved"), ("noisy rewards", "resolved, worse")):
        if found[name].empty:
            print(f"{name}: no runs")
            failures += 1
            continue
        sample = column_sample(found[name], args.column)
        result = compare(sample, reference)
        verdict = "resolved" if result.resolved else "unresolved"
        if result.resolved:
            verdict += ", worse" if result.delta < 0 else ", better"
        ok = verdict == expect
        failures += not ok
        print(f"{name}: seeds {list(sample.seeds)}, {_interval_text(sample)}; Δ vs reference {result.delta:+.2f} "
              f"[{result.low:+.2f}, {result.high:+.2f}] ({result.basis}, {'paired' if result.paired else 'unpaired'}, "
              f"df {result.df:.1f}), P(improvement) {result.p_improve:.2f}: {verdict} — expected {expect}: "
              f"{'as expected' if ok else 'NOT as expected'}")
    return 1 if failures else 0


def _interval_text(sample) -> str:
    ci = interval(sample)
    return f"mean {ci.mean:.2f} [{ci.low:.2f}, {ci.high:.2f}] ({ci.basis})"


if __name__ == "__main__":
    sys.exit(main())
