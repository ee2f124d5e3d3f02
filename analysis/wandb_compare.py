"""The paper's comparison tables from W&B runs, and a W&B Report with the matching curves.

    python -m analysis.wandb_compare ENTITY/PROJECT --group G [--seeds N] [--no-report]

Runs are read with analysis.wandb_source (scan_history, never the sampled history()), so
the tables are the ones `analysis.paper` writes from run dirs, same checks included. When
the optional `wandb_workspaces` package is importable, a Report with one line-plot panel per
paper figure is saved to the project; without it the panel spec is printed and nothing is
created. The package is the `report` extra (`pip install -e ".[report]"`), and part of `dev`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pandas as pd

from analysis.cells import NoRunsError, SeedCountError, Seeds
from analysis.tables import ALL_TABLES
from analysis.wandb_source import collect_from_wandb

# One line-plot panel per paper figure: title -> metrics (those logged by some run are kept).
PANELS = {
    "Failure-signal share": ["signal/fss_neg", "signal/fss_fail_derived"],
    "Zero-signal groups": ["signal/zero_signal_groups"],
    "Training accuracy": ["train/accuracy"],
    "K' histogram (share of groups)": ["care/k_prime_hist/*"],
    "RGR repair rate": ["rgr/repair_rate"],
    "Think length": ["care/anchor_think_len", "train/correct_think_len"],
}


def comparison_tables(runs: pd.DataFrame, curves: pd.DataFrame, seeds: Seeds = None) -> tuple[list[str], int]:
    """Markdown of every table the runs allow, plus skip/failure lines; returns (blocks, failures)."""
    blocks, failures = [], 0
    for name, (_sweep, make_table) in ALL_TABLES.items():
        try:
            blocks.append(make_table(runs, curves, seeds=seeds).markdown())
        except NoRunsError as reason:
            blocks.append(f"(table {name} skipped: {reason})\n")
        except (SeedCountError, ValueError) as error:
            failures += 1
            blocks.append(f"(table {name} FAILED: {error})\n")
    return blocks, failures


def report_spec(project_path: str, group: str | None, curves: pd.DataFrame | None = None) -> dict[str, Any]:
    """What the Report holds, as plain data: one panel per figure, x = global step."""
    logged = set(curves.columns) if curves is not None else None
    panels = []
    for title, patterns in PANELS.items():
        metrics = []
        for pattern in patterns:
            if pattern.endswith("*"):
                found = sorted((c for c in logged or () if c.startswith(pattern[:-1])),
                               key=lambda c: int(c.rsplit("/", 1)[1]) if c.rsplit("/", 1)[1].isdigit() else -1)
                metrics += found
            elif logged is None or pattern in logged:
                metrics.append(pattern)
        if metrics:
            panels.append({"title": title, "x": "Step", "y": metrics})
    entity, project = project_path.split("/", 1)
    title = f"CARE vs baselines: {group}" if group else "CARE vs baselines"
    return {"entity": entity, "project": project, "group": group, "title": title, "panels": panels}


def build_report(spec: dict[str, Any]):
    """The spec as a wandb_workspaces Report (not yet saved): a title and one panel grid over the group's runs."""
    import wandb_workspaces.reports.v2 as wr

    filters = f"Metric('Group') == '{spec['group']}'" if spec["group"] else ""
    runset = wr.Runset(entity=spec["entity"], project=spec["project"], name=spec["group"] or "all runs",
                       filters=filters)
    panels = [wr.LinePlot(title=p["title"], x=p["x"], y=p["y"]) for p in spec["panels"]]
    return wr.Report(entity=spec["entity"], project=spec["project"], title=spec["title"],
                     blocks=[wr.H1(spec["title"]), wr.PanelGrid(runsets=[runset], panels=panels)])


def create_report(spec: dict[str, Any]) -> str | None:
    """Save the Report via wandb_workspaces and return its URL; None when the package is absent."""
    try:
        report = build_report(spec)
    except ImportError:
        return None
    report.save()
    return report.url


def main(argv: list[str] | None = None, api=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", metavar="ENTITY/PROJECT")
    parser.add_argument("--group", help="W&B group (the sweep name, as the trainer sets it)")
    parser.add_argument("--seeds", type=int, help="seeds every table cell must have (default: all the sweep used)")
    parser.add_argument("--no-report", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)
    if "/" not in args.project:
        parser.error("give the project as ENTITY/PROJECT")

    runs, curves, _ = collect_from_wandb(args.project, group=args.group, api=api)
    blocks, failures = comparison_tables(runs, curves, seeds=args.seeds)
    print("\n".join(blocks))
    if not args.no_report:
        spec = report_spec(args.project, args.group, curves)
        url = create_report(spec)
        if url is None:
            print("wandb_workspaces is not installed: no Report created. Panels it would hold:")
            for panel in spec["panels"]:
                print(f"  {panel['title']}: {', '.join(panel['y'])}")
        else:
            print(f"report: {url}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
