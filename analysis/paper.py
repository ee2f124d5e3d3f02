"""Regenerate every paper table and figure for which runs exist.

    python -m analysis.paper --runs DIR [DIR...] [--out paper_figures/] [--seeds N] [--smooth W]
    python -m analysis.paper --collected DIR ...   # runs.parquet + curves.parquet from analysis.collect

Writes <out>/tables/<name>.md and .tex and <out>/figures/<name>.png and .pdf. A table or
figure whose sweep has no runs is skipped with the reason printed; one whose sweep has runs
but a cell missing seeds (missing, failed or unfinished runs) is an error: everything else
is still written, the errors are printed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.cells import NoRunsError, SeedCountError, Seeds
from analysis.collect import collect, read_collected
from analysis.figures import ALL_FIGURES
from analysis.tables import ALL_TABLES


@dataclass
class Outcome:
    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason
    failed: dict[str, str] = field(default_factory=dict)  # name -> error


def write_tables(runs: pd.DataFrame, curves: pd.DataFrame, out: Path, seeds: Seeds = None,
                 outcome: Outcome | None = None) -> Outcome:
    outcome = outcome or Outcome()
    folder = out / "tables"
    for name, (_sweep, make_table) in ALL_TABLES.items():
        try:
            table = make_table(runs, curves, seeds=seeds)
        except NoRunsError as reason:
            outcome.skipped[f"table {name}"] = str(reason)
            continue
        except (SeedCountError, ValueError) as error:
            outcome.failed[f"table {name}"] = str(error)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for suffix, text in ((".md", table.markdown()), (".tex", table.latex())):
            path = folder / f"{name}{suffix}"
            path.write_text(text)
            outcome.written.append(path)
    return outcome


def write_figures(runs: pd.DataFrame, curves: pd.DataFrame, out: Path, smooth: int = 1,
                  outcome: Outcome | None = None) -> Outcome:
    outcome = outcome or Outcome()
    for name, (sweep, draw) in ALL_FIGURES.items():  # each figure reads the sweep named beside it
        try:
            outcome.written += draw(runs, curves, out / "figures", sweep=sweep, smooth=smooth)
        except NoRunsError as reason:
            outcome.skipped[f"figure {name}"] = str(reason)
    return outcome


def regenerate(runs: pd.DataFrame, curves: pd.DataFrame, out: str | Path, seeds: Seeds = None,
               smooth: int = 1) -> Outcome:
    """Every table and figure the runs allow, written under out/; see the module docstring."""
    out = Path(out)
    outcome = write_tables(runs, curves, out, seeds)
    return write_figures(runs, curves, out, smooth, outcome)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--runs", nargs="+", help="run dirs or sweep roots")
    source.add_argument("--collected", help="folder with runs.parquet and curves.parquet")
    parser.add_argument("--out", default="paper_figures", help="output folder (default: paper_figures/)")
    parser.add_argument("--seeds", type=int, help="seeds every table cell must have (default: all the sweep used)")
    parser.add_argument("--smooth", type=int, default=1, help="rolling-mean window over steps for curves")
    args = parser.parse_args(argv)

    if args.runs:
        runs, curves, _ = collect(args.runs)
    else:
        runs, curves = read_collected(args.collected)
    outcome = regenerate(runs, curves, args.out, seeds=args.seeds, smooth=args.smooth)
    for path in outcome.written:
        print(f"wrote {path}")
    for name, reason in outcome.skipped.items():
        print(f"skipped {name}: {reason}")
    for name, error in outcome.failed.items():
        print(f"FAILED {name}:\n  " + error.replace("\n", "\n  "), file=sys.stderr)
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
