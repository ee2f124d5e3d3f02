"""How often the tables' marks are wrong, measured on runs drawn from a known model (issue 25, item 6).

    python -m analysis.calibration [--draws 400] [--seed 0]

The model: one benchmark of ITEMS items with difficulties d_i ~ N(0, 1.5); a run of a config with skill
k draws its own skill k + N(0, SEED_SD) (the training seed) and gets item i right with probability
sigmoid(skill - d_i) (analysis.fake_runs.draw_verdicts). Every cell is a list of such runs. Controls:

- same config, two labels: both cells skill 0, different seeds; a 95% interval should resolve ~5%;
- known-worse config ("noisy rewards"): skill WORSE; it should come out resolved and worse;
- seeds needed: analysis.power's answer for a small gap, then that many seeds drawn again: the gap should
  come out resolved about as often as the asked power (80%); and the spread of the answer from 3-seed
  pilots.

For each, the tables' rule (analysis.uncertainty.compare: closed-form stratified bootstrap, seed part
Student-t) is set beside two plain percentile bootstraps: over seeds only (what rliable does over runs)
and over seeds and items jointly. Nothing here reads run dirs; it takes seconds to a minute on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from analysis.fake_runs import draw_verdicts
from analysis.power import item_parts, seeds_needed
from analysis.uncertainty import Items, Sample, compare

ITEMS = 200
DIFFICULTY_SD = 1.5
SEED_SD = 0.3  # logits: a run's score scatters about 7 points over seeds, twice its items' sampling noise
WORSE = -1.5  # logits: "noisy rewards", about 26 points below
RESAMPLES = 1000


def difficulty(seed: int = 7, items: int = ITEMS) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, DIFFICULTY_SD, items)


def known_cell(rng: np.random.Generator, difficulties: np.ndarray, skill: float, seeds,
               seed_sd: float = SEED_SD, source: str | None = "cold-start", benchmark: str = "synthetic") -> Sample:
    """A cell of runs drawn from the model, as analysis.uncertainty.column_sample would read it."""
    correct = np.vstack([draw_verdicts(rng, difficulties, skill + rng.normal(0, seed_sd))[0] for _ in seeds])
    correct = correct.astype(float)
    scores = 100 * correct.mean(axis=1)
    ids = tuple(f"{benchmark}-{i}" for i in range(len(difficulties)))
    return Sample(list(seeds), scores, {benchmark: scores}, [source] * len(seeds),
                  {benchmark: Items(ids, correct)})


def percentile_resolved(a: Sample, b: Sample, rng: np.random.Generator, items: bool,
                        resamples: int = RESAMPLES) -> bool:
    """Δ's plain 95% percentile interval excludes 0: seeds resampled (jointly when paired) and, with
    `items`, one draw of items per resample for both cells."""
    per_a = np.broadcast_to(a.scores, (resamples, a.n))
    per_b = np.broadcast_to(b.scores, (resamples, b.n))
    if items:
        (left,), (right,) = a.items.values(), b.items.values()
        count = left.correct.shape[1]
        weights = rng.multinomial(count, np.full(count, 1.0 / count), size=resamples)
        per_a, per_b = 100 * weights @ left.correct.T / count, 100 * weights @ right.correct.T / count
    draws_a = rng.integers(0, a.n, size=(resamples, a.n))
    draws_b = draws_a if a.seeds == b.seeds else rng.integers(0, b.n, size=(resamples, b.n))
    delta = np.take_along_axis(per_a, draws_a, 1).mean(1) - np.take_along_axis(per_b, draws_b, 1).mean(1)
    low, high = np.percentile(delta, [2.5, 97.5])
    return bool(low > 0 or high < 0)


def rates(make_pair, draws: int, rng: np.random.Generator) -> dict[str, float]:
    """Share of `draws` pairs resolved (and, for each rule, resolved with Δ < 0) by the three rules."""
    found = {"tables": [], "seeds percentile": [], "seeds+items percentile": [], "worse": []}
    for _ in range(draws):
        a, b = make_pair()
        comparison = compare(a, b)
        found["tables"].append(comparison.resolved)
        found["worse"].append(comparison.resolved and comparison.delta < 0)
        found["seeds percentile"].append(percentile_resolved(a, b, rng, items=False))
        found["seeds+items percentile"].append(percentile_resolved(a, b, rng, items=True))
    return {name: float(np.mean(values)) for name, values in found.items()}


def true_gap(difficulties: np.ndarray, skill: float, seed_sd: float = SEED_SD, draws: int = 20000,
             seed: int = 1) -> float:
    """The model's expected score difference (points) between skill and skill 0, by simulation."""
    rng = np.random.default_rng(seed)
    effects = rng.normal(0, seed_sd, (draws, 1))

    def expected(k: float) -> float:
        return 100 * float(np.mean(1 / (1 + np.exp(-(k + effects - difficulties)))))
    return expected(skill) - expected(0.0)


def calibrate(draws: int = 400, seed: int = 0) -> list[str]:
    """The report's lines (markdown table rows and notes)."""
    rng = np.random.default_rng(seed)
    items = difficulty()
    lines = ["| control | seeds per cell | pairing | tables (t, seeds+items) | percentile, seeds | "
             "percentile, seeds+items |", "| --- | --- | --- | --- | --- | --- |"]
    for seeds in (3, 5):
        for pairing in ("unpaired", "paired"):
            other = range(seeds) if pairing == "paired" else range(seeds, 2 * seeds)
            for name, skill in (("same config, two labels: resolved", 0.0),
                                ("noisy rewards: resolved and worse", WORSE)):
                found = rates(lambda s=skill, o=other, n=seeds: (known_cell(rng, items, s, range(n)),
                                                               known_cell(rng, items, 0.0, o)), draws, rng)
                key = "worse" if skill else "tables"
                lines.append(f"| {name} | {seeds} | {pairing} | {found[key]:.3f} | {found['seeds percentile']:.3f} | "
                             f"{found['seeds+items percentile']:.3f} |")
    # seeds needed for a small gap: from the model's own noise (a 200-seed pilot), checked by drawing that
    # many seeds; and what 3-seed pilots say (their seed variance is itself a guess from 2 df)
    skill = 0.25
    gap = true_gap(items, skill)
    needed = pilot_answer(rng, items, skill, gap, 200)
    lines.append("")
    if needed is None:
        lines.append(f"seeds needed for a {gap:.2f}-point gap: out of reach")
        return lines
    hit = np.mean([compare(known_cell(rng, items, skill, range(needed)),
                           known_cell(rng, items, 0.0, range(needed, 2 * needed))).resolved
                   for _ in range(draws)])
    small = [pilot_answer(rng, items, skill, gap, 3) for _ in range(50)]
    small = [s for s in small if s is not None]
    quartiles = np.percentile(small, [25, 50, 75]).round().astype(int) if small else []
    lines.append(f"seeds needed for a {gap:.2f}-point gap at 80% power (analysis.power.seeds_needed, unpaired), "
                 f"from a 200-seed pilot: {needed} per cell; drawn {draws} times at {needed} seeds per cell, "
                 f"resolved {hit:.3f}. From 3-seed pilots (50 of them) the answer's quartiles: "
                 f"{', '.join(map(str, quartiles))}.")
    return lines


def pilot_answer(rng: np.random.Generator, items: np.ndarray, skill: float, gap: float, seeds: int) -> int | None:
    """analysis.power's answer for `gap` from a pilot of two cells (skill and 0) of `seeds` seeds each."""
    a, b = known_cell(rng, items, skill, range(seeds)), known_cell(rng, items, 0.0, range(seeds, 2 * seeds))
    seed_var = (np.var(a.scores, ddof=1) + np.var(b.scores, ddof=1)) / 2
    fixed, noise = item_parts(a, b)
    return seeds_needed(gap, seed_var, fixed, item_noise=noise)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=400, help="pairs of cells per line (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    print(f"{ITEMS} items, seed sd {SEED_SD} logits, noisy rewards {WORSE} logits; {args.draws} draws per line")
    print("\n".join(calibrate(args.draws, args.seed)))
    print(f"({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
