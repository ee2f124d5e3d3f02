"""How sure a table number is: a 95% CI per cell, Δ vs a reference row, P(improvement), IQM.

A cell's score (a method's after-RL accuracy on a benchmark, or the macro over benchmarks) is uncertain
for two reasons, and the interval counts both:

- training seeds: the cell has S runs, one per RL seed, whose scores scatter (final.json);
- benchmark items: a benchmark is a sample of items. Every run of a table is scored on the same items,
  and each run's eval/ folder holds the verdict on every one (analysis.samples).

The interval comes from a stratified bootstrap: training seeds resampled (items fixed), and items
resampled within each benchmark (seeds fixed; benchmarks are the strata, the macro averages them), the
two variances added. For a mean, and a difference of means, each is known in closed form (resampling m
values with replacement: their plug-in variance / m), so the tables use it rather than Monte-Carlo draws
(`bootstrap` draws the same resampling; tests/test_analysis_uncertainty.py checks they agree). One
correction at the seed level: a bootstrap of S values shrinks their variance by (S-1)/S and never leaves
[min, max]; at S = 3 a percentile interval of three paired differences excludes 0 whenever they share a
sign, 1 null comparison in 4. So the seed component is s²/S (ddof = 1) and the interval is mean ± t·SE,
with Welch-Satterthwaite degrees of freedom (the item component, hundreds of items, counts as infinitely
many). Each run's own sampling noise (right or wrong on an item, seed by seed) is in both components,
so the interval errs wide, not narrow; a joint bootstrap of seeds and items would count it a third time
(their interaction).

Comparisons (`compare`): Δ = mean(a) - mean(b) with its interval. Runs that share a cold start
(final.json `policy_source`) and a seed are paired: the seed component is then the spread of the per-seed
differences. Items are always paired when both cells were scored on the same items. A difference is
*resolved* when its 95% interval, which must cover seeds, excludes 0. The probability of improvement is rliable's (Agarwal et al.,
"Deep RL at the edge of the statistical precipice", NeurIPS 2021, `rliable.metrics.probability_of_improvement`):
P(X > Y) = the Mann-Whitney U statistic of the per-seed scores / (S_x S_y), ties counting one half, averaged
over the benchmarks (tasks) the column covers. With ≥ 5 seeds a cell also gets the interquartile mean (IQM,
rliable's aggregate: the mean of the middle 50% of seeds, scipy.stats.trim_mean at 0.25) with a percentile
interval from `bootstrap`.

rliable itself is not a dependency: it resamples runs within tasks but not items, and it brings arch and
statsmodels; scipy gives the t quantiles, the U statistic and the trimmed mean.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.samples import TAGS, verdicts

LEVEL = 0.95
IQM_MIN_SEEDS = 5
RESAMPLES = 2000
BOOKKEEPING = ("macro", "n", "macro_std", "seeds", "extraction")


@dataclass(frozen=True)
class Items:
    """One benchmark's items as a cell's runs were scored on them."""

    ids: tuple[str, ...]
    correct: np.ndarray  # (seeds, items): fraction of eval passes right, in [0, 1]


@dataclass
class Sample:
    """A cell's score in one column: its value per training seed and, where every run left its per-sample
    files, the items of each benchmark the column averages (one benchmark, or the macro's)."""

    seeds: list
    scores: np.ndarray  # (S,) percent
    tasks: dict[str, np.ndarray]  # benchmark -> (S,) per-seed score; the column is their mean per seed
    sources: list  # per seed, the cold start its run started from (None: unknown)
    items: dict[str, Items] | None = None

    @property
    def n(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    se: float
    df: float
    basis: str  # what the interval covers: "seeds+items", "seeds", "items" or "none"


@dataclass(frozen=True)
class Comparison:
    delta: float
    low: float
    high: float
    se: float
    df: float
    basis: str
    paired: bool
    p_improve: float

    @property
    def resolved(self) -> bool:
        """The 95% CI excludes 0, and it covers training seeds (with one seed a side their spread is
        unknown: an items-only interval says nothing about the methods)."""
        return "seeds" in self.basis and bool(self.low > 0 or self.high < 0)


# ---------------------------------------------------------------- building samples from runs

def column_sample(runs: pd.DataFrame, column: str, by: str | None = "seed") -> Sample:
    """The Sample of `column` (e.g. `after.mathvista`, `after.macro`, `before.synthetic`, or a per-run
    extra such as `repair_rate`) over `runs`, one unit per value of `by` (runs sharing a seed are averaged,
    as the Base row does), or one per run when `by` is None."""
    runs = runs.reset_index(drop=True)
    units = list(runs.groupby(by, sort=True)) if by else [(i, runs.iloc[[i]]) for i in range(len(runs))]
    seeds = [unit for unit, _ in units]
    values = [group[column].astype(float).mean() if column in group else np.nan for _, group in units]
    scores = np.asarray(values, dtype=float)
    sources = [_one(group.get("final.policy_source")) for _, group in units]
    prefix, _, name = column.partition(".")
    if prefix + "." not in TAGS or not name:
        return Sample(seeds, scores, {column: scores}, sources)
    benches = macro_benchmarks(runs, prefix) if name == "macro" else [name]
    if not benches:
        return Sample(seeds, scores, {column: scores}, sources)
    tasks = {b: np.asarray([g[f"{prefix}.{b}"].astype(float).mean() for _, g in units]) for b in benches}
    items = {}
    for bench in benches:
        found = unit_items(units, f"{prefix}.{bench}", tasks[bench])
        if found is None:
            return Sample(seeds, scores, tasks, sources)
        items[bench] = found
    return Sample(seeds, scores, tasks, sources, items)


def unit_items(units: list, column: str, expected: np.ndarray) -> Items | None:
    """Each unit's verdicts on a benchmark (a unit of several runs: their mean), or None when a run has
    no per-sample files, the units disagree on the items, or the verdicts do not give final.json's score."""
    ids, rows = None, []
    for (_, group), score in zip(units, expected, strict=True):
        found = [verdicts(path, column) for path in group["path"]]
        if any(v is None for v in found) or len({v.ids for v in found}) != 1:
            return None
        if ids is None:
            ids = found[0].ids
        elif found[0].ids != ids:
            return None
        correct = np.mean([v.correct for v in found], axis=0)
        if not abs(100.0 * correct.mean() - score) <= 1e-6 * max(1.0, abs(score)):
            return None  # not the eval behind the reported score
        rows.append(correct)
    return Items(ids, np.vstack(rows)) if rows else None


def macro_benchmarks(runs: pd.DataFrame, prefix: str) -> list[str] | None:
    """The benchmarks a macro averages: eval.benchmarks but the held-out slice when it has others (else
    the held-out slice, named after data.name), as care.evaluation.harness takes it; failing that, every
    benchmark the runs report. The one whose per-run mean is the macro, or None."""
    present = [c[len(prefix) + 1:] for c in runs if c.startswith(prefix + ".") and runs[c].notna().any()
               and c[len(prefix) + 1:] not in BOOKKEEPING]
    candidates = []
    if "cfg.eval.benchmarks" in runs and runs["cfg.eval.benchmarks"].nunique() == 1:
        listed = json.loads(runs["cfg.eval.benchmarks"].iloc[0]) if isinstance(runs["cfg.eval.benchmarks"].iloc[0],
                                                                               str) else []
        external = [b for b in listed if b != "synthetic"]
        data = runs["cfg.data.name"].iloc[0] if "cfg.data.name" in runs else None
        candidates.append(external or ([data] if data else []))
    candidates.append(present)
    macro = runs.get(f"{prefix}.macro")
    if macro is None:
        return None
    for benches in candidates:
        if not benches or any(f"{prefix}.{b}" not in runs for b in benches):
            continue
        mean = runs[[f"{prefix}.{b}" for b in benches]].astype(float).mean(axis=1)
        if np.allclose(mean, macro.astype(float), rtol=1e-9, atol=1e-6):
            return list(benches)
    return None


def _one(values) -> str | None:
    if values is None:
        return None
    found = {v for v in values if isinstance(v, str)}
    return found.pop() if len(found) == 1 else None


# ---------------------------------------------------------------- intervals

def seed_part(scores: np.ndarray) -> tuple[float, float]:
    """(variance of the mean over seeds, its degrees of freedom); NaN with one seed (unknown)."""
    scores = np.asarray(scores, dtype=float)
    if len(scores) < 2:
        return math.nan, 0.0
    return float(np.var(scores, ddof=1)) / len(scores), float(len(scores) - 1)


def item_part(sample: Sample) -> float | None:
    """Variance of the column's mean from resampling items within each benchmark (closed form), or None
    without per-sample files."""
    if sample.items is None:
        return None
    per_task = [plugin_variance(100.0 * items.correct.mean(axis=0)) for items in sample.items.values()]
    return sum(per_task) / len(per_task) ** 2


def plugin_variance(values: np.ndarray) -> float:
    """The bootstrap variance of the mean of `values` (resampled with replacement): var(ddof=0) / m."""
    values = np.asarray(values, dtype=float)
    return float(np.var(values)) / len(values) if len(values) else math.nan


def t_interval(center: float, parts: list[tuple[float, float]], level: float = LEVEL
               ) -> tuple[float, float, float, float]:
    """(low, high, se, df): center ± t·SE, SE² the sum of the parts' variances, df by Welch-Satterthwaite
    (a part with infinite df, the items, adds no term)."""
    variance = sum(v for v, _ in parts)
    if not parts or not math.isfinite(variance):
        return math.nan, math.nan, math.nan, math.nan
    terms = sum(v * v / df for v, df in parts if math.isfinite(df) and v > 0)
    df = variance * variance / terms if terms > 0 else math.inf
    half = float(sps.t.ppf((1 + level) / 2, df)) * math.sqrt(variance) if variance > 0 else 0.0
    return center - half, center + half, math.sqrt(variance), df


def interval(sample: Sample, level: float = LEVEL) -> Interval:
    """The 95% CI of the cell's mean (module docstring); with one seed, items only (labelled), and with
    neither more than one seed nor items, none."""
    mean = float(np.mean(sample.scores)) if sample.n and not np.isnan(sample.scores).all() else math.nan
    seeds, df = seed_part(sample.scores)
    items = item_part(sample)
    parts, basis = [], []
    if math.isfinite(seeds):
        parts.append((seeds, df))
        basis.append("seeds")
    if items is not None:
        parts.append((items, math.inf))
        basis.append("items")
    if not parts or math.isnan(mean):
        return Interval(mean, math.nan, math.nan, math.nan, math.nan, "none")
    low, high, se, dof = t_interval(mean, parts, level)
    return Interval(mean, low, high, se, dof, "+".join(basis))


def paired(a: Sample, b: Sample) -> bool:
    """Seed by seed from the same cold start: the same seeds, each pair of runs with one policy_source."""
    return (a.n > 1 and list(a.seeds) == list(b.seeds)
            and all(x is not None and x == y for x, y in zip(a.sources, b.sources, strict=True)))


def delta_item_part(a: Sample, b: Sample) -> float | None:
    """Variance of Δ from resampling items: per benchmark the per-item differences when both were scored on
    the same items (one draw of items serves both), else the two variances added."""
    if a.items is None or b.items is None or set(a.items) != set(b.items):
        return None
    per_task = []
    for bench, items in a.items.items():
        other = b.items[bench]
        if items.ids == other.ids:
            per_task.append(plugin_variance(100.0 * (items.correct.mean(axis=0) - other.correct.mean(axis=0))))
        else:
            per_task.append(plugin_variance(100.0 * items.correct.mean(axis=0))
                            + plugin_variance(100.0 * other.correct.mean(axis=0)))
    return sum(per_task) / len(per_task) ** 2


def compare(a: Sample, b: Sample, level: float = LEVEL) -> Comparison:
    """Δ = mean(a) - mean(b) with its 95% CI (paired by seed when the runs share cold starts), and
    rliable's probability that a run of `a` beats a run of `b`."""
    delta = float(np.mean(a.scores) - np.mean(b.scores))
    is_paired = paired(a, b)
    parts, basis = [], []
    if is_paired:
        parts.append(seed_part(a.scores - b.scores))
    elif a.n > 1 and b.n > 1:
        parts += [seed_part(a.scores), seed_part(b.scores)]
    if parts:
        basis.append("seeds")
    items = delta_item_part(a, b)
    if items is not None:
        parts.append((items, math.inf))
        basis.append("items")
    p = probability_of_improvement(a.tasks, b.tasks)
    if not parts or math.isnan(delta):
        return Comparison(delta, math.nan, math.nan, math.nan, math.nan, "none", is_paired, p)
    low, high, se, df = t_interval(delta, parts, level)
    return Comparison(delta, low, high, se, df, "+".join(basis), is_paired, p)


def probability_of_improvement(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> float:
    """P(X > Y) as rliable defines it (Agarwal et al. 2021, eq. in §4.3): per task the Mann-Whitney U of
    X's runs against Y's over |X||Y| (a tie counts 1/2), averaged over the tasks both have."""
    tasks = [t for t in x if t in y]
    values = []
    for task in tasks:
        a, b = np.asarray(x[task], dtype=float), np.asarray(y[task], dtype=float)
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if len(a) and len(b):
            values.append(float(sps.mannwhitneyu(a, b).statistic) / (len(a) * len(b)))
    return float(np.mean(values)) if values else math.nan


# ---------------------------------------------------------------- Monte-Carlo bootstrap (IQM)

def bootstrap(sample: Sample, statistic, resamples: int = RESAMPLES, seed: int = 0, seeds: bool = True,
              items: bool = True) -> np.ndarray:
    """`statistic(values, axis=1)` over `resamples` stratified draws of the per-seed scores: seeds with
    replacement and, where the sample has them, items with replacement within each benchmark (one draw of
    items per resample, for all seeds); `seeds`/`items` False holds that level fixed."""
    count = sample.n
    if sample.items is None or not items:
        per_seed = np.broadcast_to(sample.scores, (resamples, count))
    else:
        per_seed = np.zeros((resamples, count))
        for found in sample.items.values():
            weights = item_weights(found.ids, resamples, seed)  # (resamples, items)
            per_seed = per_seed + 100.0 * (weights @ found.correct.T) / len(found.ids)
        per_seed = per_seed / len(sample.items)
    if not seeds:
        return statistic(per_seed, axis=1)
    draws = np.random.default_rng([seed, count]).integers(0, count, size=(resamples, count))
    return statistic(np.take_along_axis(per_seed, draws, axis=1), axis=1)


@functools.lru_cache(maxsize=12)  # ~14 MB each at paper scale (1730 items x 2000 resamples)
def item_weights(ids: tuple[str, ...], resamples: int, seed: int) -> np.ndarray:
    """How often each item is drawn in each resample (multinomial counts), one set per benchmark's items and
    seed, shared by every cell scored on them (drawn once: a table has many cells, a draw costs ~0.3 s)."""
    rng = np.random.default_rng([seed, zlib.crc32("\n".join(ids).encode())])
    count = len(ids)
    weights = rng.multinomial(count, np.full(count, 1.0 / count), size=resamples).astype(np.float32)
    weights.setflags(write=False)
    return weights


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean (rliable's `aggregate_iqm`): the mean of the middle 50%."""
    return float(sps.trim_mean(np.asarray(scores, dtype=float), 0.25))


def iqm_interval(sample: Sample, level: float = LEVEL, resamples: int = RESAMPLES) -> tuple[float, float, float]:
    """(IQM, low, high) with a percentile interval from `bootstrap`, as rliable reports it; NaN below
    IQM_MIN_SEEDS seeds."""
    if sample.n < IQM_MIN_SEEDS or np.isnan(sample.scores).any():
        return math.nan, math.nan, math.nan
    draws = bootstrap(sample, lambda v, axis: sps.trim_mean(v, 0.25, axis=axis), resamples)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return iqm(sample.scores), float(low), float(high)


def interval_fields(sample: Sample) -> dict[str, float | str]:
    """The stats-frame columns for one cell and column: low, high, se, df, basis, iqm, iqm_low, iqm_high."""
    found = interval(sample)
    center, low, high = iqm_interval(sample)
    return {"low": found.low, "high": found.high, "se": found.se, "df": found.df, "basis": found.basis,
            "iqm": center, "iqm_low": low, "iqm_high": high}


def comparison_fields(comparison: Comparison) -> dict[str, float | bool | str]:
    return {"delta": comparison.delta, "delta_low": comparison.low, "delta_high": comparison.high,
            "delta_basis": comparison.basis, "paired": comparison.paired, "p_improve": comparison.p_improve,
            "resolved": comparison.resolved}
