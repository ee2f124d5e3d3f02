"""The paper's figures from `runs` and `curves` (analysis.collect), as PNG and PDF.

Sized for one paper column (3.3 in wide, 7 pt text). Training curves show the mean over
seeds with a ±1 std band (seaborn's errorbar="sd" across the runs of each line), from
finished runs only, one figure per backbone (file suffix `-<backbone>` when a sweep has
several). Figures are drawn on a bare matplotlib Figure, never pyplot, so nothing leaks
between calls and no display is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.cells import METHOD_ORDER, NoRunsError, sweep_runs

COLUMN_WIDTH_IN = 3.3
HEIGHT_IN = 2.2
PAPER_RC = {
    "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.title_fontsize": 7, "lines.linewidth": 1.0, "axes.linewidth": 0.6,
    "grid.linewidth": 0.4, "savefig.dpi": 300, "pdf.fonttype": 42, "ps.fonttype": 42,
}
METRIC_LABELS = {
    "signal/fss_neg": "on failed rollouts (fss_neg)",
    "signal/fss_fail_derived": "on failure-derived samples",
    "signal/zero_signal_groups": "zero-signal groups",
    "train/accuracy": "train accuracy",
    "rgr/repair_rate": "repair rate",
    "care/anchor_think_len": "anchor think length",
}


# Fixed legend order (and so colours) for every figure: methods, RGR variants, anchor strategies.
LEVEL_ORDER = [*METHOD_ORDER, "cue", "no_cue", "random", "off", "shortest_think", "longest_think", "max_logprob"]


def ordered_levels(values: pd.Series) -> list:
    rank = {level: i for i, level in enumerate(LEVEL_ORDER)}
    return sorted(values.dropna().unique(), key=lambda v: (rank.get(v, len(rank)), str(v)))


def run_table(runs: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """Finished runs of a sweep with backbone/method/seed and the ablation levels figures use."""
    selected = sweep_runs(runs, sweep)
    selected = selected[selected["status"] == "finished"].copy()
    if selected.empty:
        raise NoRunsError(f"no finished runs in sweep {sweep!r}")
    selected["anchor"] = selected.get("cfg.care.anchor")
    variant = selected.get("cfg.rgr.variant", pd.Series(None, index=selected.index)).astype(object)
    selected["variant"] = variant.where(selected["cfg.rgr.enabled"].astype(bool), "off")
    return selected[["run_key", "backbone", "method", "seed", "anchor", "variant"]]


def long_curves(runs: pd.DataFrame, curves: pd.DataFrame, sweep: str, metrics: list[str],
                smooth: int = 1) -> pd.DataFrame:
    """One row per (run, step, metric) with the run's labels; optional per-run rolling mean."""
    present = [m for m in metrics if m in curves]
    if not present:
        raise NoRunsError(f"no logged {', '.join(metrics)} in any run")
    meta = run_table(runs, sweep)
    data = curves[curves["run_key"].isin(meta["run_key"])][["run_key", "global_step", *present]]
    data = data.melt(id_vars=["run_key", "global_step"], var_name="metric", value_name="value").dropna()
    if data.empty:
        raise NoRunsError(f"sweep {sweep!r}: no finished run logged {', '.join(metrics)}")
    if smooth > 1:
        data = data.sort_values(["run_key", "metric", "global_step"])
        data["value"] = data.groupby(["run_key", "metric"])["value"].transform(
            lambda v: v.rolling(smooth, min_periods=1).mean())
    data["metric"] = data["metric"].map(lambda m: METRIC_LABELS.get(m, m))
    return data.merge(meta, on="run_key")


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, bbox_inches="tight")
    return paths


def per_backbone(data: pd.DataFrame, name: str, draw: Callable[[pd.DataFrame, object], None],
                 out_dir: Path) -> list[Path]:
    """One column-width figure per backbone, drawn by `draw(data, ax)` in the paper style."""
    written = []
    backbones = sorted(data["backbone"].unique())
    for backbone in backbones:
        with matplotlib.rc_context(PAPER_RC), sns.axes_style("whitegrid", rc=PAPER_RC):
            fig = Figure(figsize=(COLUMN_WIDTH_IN, HEIGHT_IN), layout="constrained")
            ax = fig.add_subplot()
            draw(data[data["backbone"] == backbone], ax)
            if ax.get_legend() is not None:  # above the axes, so it never hides a curve
                sns.move_legend(ax, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False,
                                title=None, handlelength=1.8, columnspacing=1.0)
            suffix = f"-{backbone}" if len(backbones) > 1 else ""
            written += save(fig, Path(out_dir), name + suffix)
    return written


def training_lines(data: pd.DataFrame, ax, hue: str, ylabel: str) -> None:
    """Mean over seeds with a ±1 std band; line style tells metrics apart when there are several."""
    style = "metric" if data["metric"].nunique() > 1 else None
    sns.lineplot(data=data, x="global_step", y="value", hue=hue, hue_order=ordered_levels(data[hue]), style=style,
                 errorbar="sd", ax=ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)


# ---------------------------------------------------------------- the figures

def failure_signal_share(runs, curves, out_dir, sweep: str = "main", smooth: int = 1) -> list[Path]:
    """Share of |A| on failures (fss_neg) and on failure-derived samples, CARE vs GRPO."""
    data = long_curves(runs, curves, sweep, ["signal/fss_neg", "signal/fss_fail_derived"], smooth)
    data = data[data["method"].str.startswith(("CARE", "GRPO"))]
    return per_backbone(data, "failure_signal_share",
                        lambda d, ax: training_lines(d, ax, "method", "failure-signal share"), out_dir)


def zero_signal_groups(runs, curves, out_dir, sweep: str = "main", smooth: int = 1) -> list[Path]:
    """Fraction of groups whose advantages are all zero (no gradient), per method."""
    data = long_curves(runs, curves, sweep, ["signal/zero_signal_groups"], smooth)
    return per_backbone(data, "zero_signal_groups",
                        lambda d, ax: training_lines(d, ax, "method", "zero-signal groups (fraction)"), out_dir)


def accuracy_curves(runs, curves, out_dir, sweep: str = "main", smooth: int = 1) -> list[Path]:
    """Training accuracy (rollouts judged correct) per method."""
    data = long_curves(runs, curves, sweep, ["train/accuracy"], smooth)
    return per_backbone(data, "accuracy_curves",
                        lambda d, ax: training_lines(d, ax, "method", "train accuracy"), out_dir)


def k_prime_histogram(runs, curves, out_dir, sweep: str = "main", smooth: int = 1) -> list[Path]:
    """How many hard negatives groups got (K'), as a share of groups averaged over training."""
    columns = sorted((c for c in curves if c.startswith("care/k_prime_hist/")), key=lambda c: int(c.rsplit("/", 1)[1]))
    data = long_curves(runs, curves, sweep, columns or ["care/k_prime_hist/0"])
    per_run = data.groupby(["run_key", "backbone", "method", "metric"], as_index=False)["value"].mean()
    per_run["K'"] = per_run["metric"].str.rsplit("/", n=1).str[1].astype(int)

    def draw(d, ax):
        sns.barplot(data=d, x="K'", y="value", hue="method", hue_order=ordered_levels(d["method"]), errorbar="sd",
                    ax=ax, err_kws={"linewidth": 0.8})
        ax.set_ylabel("share of groups")

    return per_backbone(per_run, "k_prime_histogram", draw, out_dir)


def rgr_repair_rate(runs, curves, out_dir, sweep: str = "rgr", smooth: int = 1) -> list[Path]:
    """RGR repair success rate over training, per RGR variant."""
    data = long_curves(runs, curves, sweep, ["rgr/repair_rate"], smooth)
    return per_backbone(data, "rgr_repair_rate",
                        lambda d, ax: training_lines(d, ax, "variant", "repair success rate"), out_dir)


def think_length_by_anchor(runs, curves, out_dir, sweep: str = "anchor", smooth: int = 1) -> list[Path]:
    """Think-span length of the chosen anchors over training, per anchor strategy."""
    data = long_curves(runs, curves, sweep, ["care/anchor_think_len"], smooth)
    return per_backbone(data, "think_length_by_anchor",
                        lambda d, ax: training_lines(d, ax, "anchor", "anchor think length (tokens)"), out_dir)


FigureFunction = Callable[..., list[Path]]
# figure name -> (sweep it reads, function); analysis.paper draws them in this order.
ALL_FIGURES: dict[str, tuple[str, FigureFunction]] = {
    "failure_signal_share": ("main", failure_signal_share),
    "zero_signal_groups": ("main", zero_signal_groups),
    "accuracy_curves": ("main", accuracy_curves),
    "k_prime_histogram": ("main", k_prime_histogram),
    "rgr_repair_rate": ("rgr", rgr_repair_rate),
    "think_length_by_anchor": ("anchor", think_length_by_anchor),
}
