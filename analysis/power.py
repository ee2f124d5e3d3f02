"""How many training seeds would resolve a gap, estimated from pilot runs.

    python -m analysis.power --runs DIR [DIR...] --gap 1.0 [--sweep NAME] [--column after.macro]
    python -m analysis.power --collected DIR --gap 1.0 [--power 0.8] [--alpha 0.05]

A table marks a difference resolved when the 95% CI of Δ excludes 0 (analysis.uncertainty). Its half-width
has two parts: the training-seed spread, which shrinks as seeds are added, and the benchmark-item spread,
which mostly does not (the benchmark is fixed). From pilot runs, grouped into cells by their config less
the seed, this estimates the seed variance (pooled within cells), the item variance of a Δ (per-sample
files; median over pairs of cells scored on the same items), split into what stays as seeds are added
(how the two configs differ item by item) and what shrinks as 1/seeds (each run's own right/wrong noise
per item, which the table's item part also carries), and, where cells are paired (same seeds from one
cold start), the variance of the per-seed differences. Then, for a true gap of `--gap` points, the fewest
seeds per cell at which the two-sided test behind the mark (Welch t, Satterthwaite df, items as infinite
df) has the asked power: unpaired, and paired by seed where the pilot shows pairs. A gap smaller than the
fixed item spread allows is reported as out of reach by seeds: it needs more items.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.cells import in_sweep
from analysis.uncertainty import Sample, column_sample, delta_item_part, paired

MAX_SEEDS = 1000


@dataclass
class Pilot:
    """What pilot runs say about one score column's noise."""

    column: str
    cells: int
    runs: int
    seed_var: float  # pooled within-cell variance of a run's score (points²)
    seed_df: int
    item_var: float  # the part of a Δ's item variance that seeds do not shrink (points²; 0 without files)
    item_noise: float  # the part that shrinks: item_noise / seeds (points² at one seed per cell)
    item_pairs: int
    paired_var: float  # pooled variance of per-seed differences between paired cells (NaN: no pairs)
    paired_df: int
    pairs: int


def cell_groups(runs: pd.DataFrame) -> list[pd.DataFrame]:
    """Finished runs grouped by everything in their config but the seed (and by their label)."""
    finished = runs[runs["status"] == "finished"].copy()
    if "cfg.seed" not in finished or finished["cfg.seed"].isna().any():
        raise ValueError("pilot runs need cfg.seed")
    finished["seed"] = finished["cfg.seed"].astype(int)
    config = [c for c in finished if (c.startswith(("cfg.", "choice.")) or c == "label") and c != "cfg.seed"]
    key = finished[config].astype(object).map(repr).agg("|".join, axis=1) if config else pd.Series("", index=finished.index)
    return [group.sort_values("seed") for _, group in finished.groupby(key, sort=True)]


def pilot(runs: pd.DataFrame, column: str = "after.macro", sweep: str | None = None) -> Pilot:
    """The noise of `column` in `runs` (one sweep's, with `sweep`); see the module docstring."""
    if sweep is not None:
        runs = runs[in_sweep(runs, sweep)]
    groups = [g for g in cell_groups(runs) if column in g and g[column].notna().all()]
    if not groups:
        raise ValueError(f"no finished runs with {column}" + (f" in sweep {sweep!r}" if sweep else ""))
    samples = [column_sample(g, column) for g in groups]
    spread = [(float(np.var(s.scores, ddof=1)), s.n - 1) for s in samples if s.n > 1]
    seed_df = sum(df for _, df in spread)
    seed_var = sum(v * df for v, df in spread) / seed_df if seed_df else math.nan
    item, pairs = [], []
    for a, b in itertools.combinations(samples, 2):
        found = item_parts(a, b)
        if found is not None:
            item.append(found)
        if paired(a, b):
            pairs.append((float(np.var(a.scores - b.scores, ddof=1)), a.n - 1))
    paired_df = sum(df for _, df in pairs)
    fixed, noise = np.median(np.asarray(item), axis=0) if item else (0.0, 0.0)
    return Pilot(column=column, cells=len(groups), runs=sum(s.n for s in samples), seed_var=seed_var,
                 seed_df=seed_df, item_var=float(fixed), item_noise=float(noise), item_pairs=len(item),
                 paired_var=sum(v * df for v, df in pairs) / paired_df if paired_df else math.nan,
                 paired_df=paired_df, pairs=len(pairs))


def item_parts(a: Sample, b: Sample) -> tuple[float, float] | None:
    """(fixed, noise) parts of the item variance of Δ = a - b (points²): the table's item part
    (uncertainty.delta_item_part) is about fixed + noise / seeds. Per benchmark, each cell's noise is the
    mean over items of its verdicts' variance over seeds; what the per-item differences vary beyond that
    is fixed. None unless both cells have ≥ 2 seeds scored on the same items."""
    if a.items is None or b.items is None or set(a.items) != set(b.items) or min(a.n, b.n) < 2:
        return None
    fixed = noise = 0.0
    for bench, left in a.items.items():
        right = b.items[bench]
        if left.ids != right.ids:
            return None
        count = len(left.ids)
        noise_a = 1e4 * float(np.var(left.correct, axis=0, ddof=1).mean())
        noise_b = 1e4 * float(np.var(right.correct, axis=0, ddof=1).mean())
        spread = count * delta_item_part(Sample(a.seeds, a.scores, {}, a.sources, {bench: left}),
                                         Sample(b.seeds, b.scores, {}, b.sources, {bench: right}))
        fixed += max(0.0, spread - noise_a / a.n - noise_b / b.n) / count
        noise += (noise_a + noise_b) / count
    benches = len(a.items)
    return fixed / benches ** 2, noise / benches ** 2


def power_at(seeds: int, gap: float, seed_var: float, item_var: float = 0.0, is_paired: bool = False,
             alpha: float = 0.05, item_noise: float = 0.0) -> float:
    """The chance that a true gap of `gap` points comes out resolved with `seeds` seeds per cell.

    `seed_var`: a run's score variance (unpaired) or a per-seed difference's (paired); the Δ's item variance
    is `item_var + item_noise / seeds`. Two-sided t test at `alpha` (the CI excluding 0), noncentral t.
    """
    if seeds < 2:
        return math.nan
    seed_part = seed_var / seeds if is_paired else 2 * seed_var / seeds
    seed_df = seeds - 1 if is_paired else 2 * (seeds - 1)
    variance = seed_part + item_var + item_noise / seeds
    if variance <= 0:
        return 1.0 if gap != 0 else alpha
    df = variance ** 2 / (seed_part ** 2 / seed_df) if seed_part > 0 else math.inf
    critical = sps.t.ppf(1 - alpha / 2, df)
    shift = abs(gap) / math.sqrt(variance)
    normal = float(sps.norm.sf(critical - shift) + sps.norm.cdf(-critical - shift))
    if math.isinf(df):
        return normal
    exact = float(sps.nct.sf(critical, df, shift) + sps.nct.cdf(-critical, df, shift))
    return exact if math.isfinite(exact) else normal  # scipy's nct gives NaN far in the tail


def out_of_reach(gap: float, item_var: float, power: float = 0.8, alpha: float = 0.05) -> bool:
    """Whether even infinitely many seeds, which leave the fixed item part, miss `power`."""
    return item_var > 0 and sps.norm.sf(sps.norm.ppf(1 - alpha / 2) - abs(gap) / math.sqrt(item_var)) < power


def seeds_needed(gap: float, seed_var: float, item_var: float = 0.0, is_paired: bool = False,
                 power: float = 0.8, alpha: float = 0.05, max_seeds: int = MAX_SEEDS,
                 item_noise: float = 0.0) -> int | None:
    """The fewest seeds per cell (≥ 2) with `power_at` ≥ `power`; None when no count up to `max_seeds`
    reaches it (in particular when the fixed item spread alone keeps the gap unresolved: more items)."""
    if not math.isfinite(seed_var) or out_of_reach(gap, item_var, power, alpha):
        return None
    low, high = 2, max_seeds
    if power_at(high, gap, seed_var, item_var, is_paired, alpha, item_noise) < power:
        return None
    while low < high:  # power grows with seeds
        middle = (low + high) // 2
        if power_at(middle, gap, seed_var, item_var, is_paired, alpha, item_noise) >= power:
            high = middle
        else:
            low = middle + 1
    return low


def report(found: Pilot, gap: float, power: float = 0.8, alpha: float = 0.05) -> str:
    """What `main` prints: the pilot's noise and the seeds needed, unpaired and paired."""
    level = f"{100 * (1 - alpha):g}%"
    lines = [f"pilot: {found.column}, {found.cells} cells, {found.runs} runs; seed std "
             f"{math.sqrt(found.seed_var):.2f} points ({found.seed_df} df)" if math.isfinite(found.seed_var) else
             f"pilot: {found.column}, {found.cells} cells, {found.runs} runs; no cell has 2 seeds: no seed spread"]
    if found.item_pairs:
        lines.append(f"item SE of a Δ: {math.sqrt(found.item_var):.2f} points that seeds do not shrink, plus "
                     f"{math.sqrt(found.item_noise):.2f}/√seeds (median of {found.item_pairs} pairs of cells)")
    else:
        lines.append("item SE of a Δ: unknown (no per-sample eval files): seeds only")
    lines.append(f"gap {gap:g} points, resolved by a two-sided {level} CI with power {power:g}:")

    def needed(variance: float, is_paired: bool) -> str:
        count = seeds_needed(gap, variance, found.item_var, is_paired, power, alpha, item_noise=found.item_noise)
        if count is not None:
            return f"{count} seeds per cell"
        if out_of_reach(gap, found.item_var, power, alpha):
            return "out of reach by seeds (the item spread alone hides it: more benchmark items needed)"
        return f"more than {MAX_SEEDS} seeds"

    if math.isfinite(found.seed_var):
        lines.append(f"  unpaired (cells from different cold starts or seeds): {needed(found.seed_var, False)}")
    if math.isfinite(found.paired_var):
        lines.append(f"  paired by seed (shared cold start; std of per-seed Δ {math.sqrt(found.paired_var):.2f} "
                     f"from {found.pairs} pairs of cells): {needed(found.paired_var, True)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--runs", nargs="+", help="pilot run dirs or sweep roots")
    source.add_argument("--collected", help="folder with runs.parquet (analysis.collect)")
    parser.add_argument("--gap", type=float, required=True, help="the difference to resolve, in points (%%)")
    parser.add_argument("--sweep", help="only this sweep's runs")
    parser.add_argument("--column", default="after.macro", help="score column (default after.macro)")
    parser.add_argument("--power", type=float, default=0.8, help="wanted chance of resolving it (default 0.8)")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - CI level (default 0.05)")
    args = parser.parse_args(argv)
    if args.runs:
        from analysis.collect import collect
        runs = collect(args.runs, quiet=True)[0]
    else:
        from analysis.collect import read_collected
        runs = read_collected(args.collected)[0]
    try:
        found = pilot(runs, args.column, args.sweep)
    except ValueError as error:
        print(f"analysis.power: {error}", file=sys.stderr)
        return 1
    print(report(found, args.gap, args.power, args.alpha))
    return 0


if __name__ == "__main__":
    sys.exit(main())
