"""The paper's tables, one function each: runs (and curves) in, a rendered `Table` out.

Each reads one sweep, named in its docstring (the `sweep` field of run.json), checks
that every cell holds the expected seeds (analysis.cells.finished_cells: a missing or
failed run raises SeedCountError), and reports after-RL accuracy as mean ± std over seeds,
best per column and backbone in bold, with the paper's numbers beside ours where they exist.
`seeds` is the expected seed count or list; by default every seed the sweep used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from analysis import paper_numbers as paper
from analysis.cells import (
    METHOD_ORDER,
    NO_VALUE,
    RESOLVED_ABOVE,
    RESOLVED_BELOW,
    SeedCountError,
    Seeds,
    Table,
    add_comparison_columns,
    best_style,
    cell_parts,
    column_label,
    compare_cells,
    comparison_text,
    finish_table,
    finished_cells,
    format_paper,
    format_score,
    is_true,
    order_rows,
    require_full_grid,
    row_above,
    score_columns,
    summarize,
    sweep_runs,
    uncertainty_note,
    versus,
    wide,
    with_comparisons,
)
from analysis.uncertainty import column_sample, interval_fields

SHARED_COLUMNS = ["backbone", "method", "column", "mean", "std", "n", "low", "high", "se", "df", "basis", "iqm",
                  "iqm_low", "iqm_high"]
BASELINE = "GRPO"  # the row every method of main and table1 is compared with
SELECTOR_ORDER = ["cosine", "nearest", "mixed", "farthest", "random"]
ANCHOR_ORDER = ["shortest_think", "random", "longest_think", "max_logprob"]
RGR_ORDER = ["cue", "no_cue", "random", "off"]
NEG_SCALE_DEFAULT = 0.5  # care.s's default (care/objective/config.py): the reference level of neg_scale


def main_table(runs: pd.DataFrame, curves: pd.DataFrame | None = None, seeds: Seeds = None) -> Table:
    """Sweep `main`: rows backbone × method, columns per-benchmark accuracy and macro.

    A Base row per backbone gives the before-RL scores (mean over the runs of each seed,
    then over seeds). Paper rows (italic) follow each method the paper reports.
    """
    selected = sweep_runs(runs, "main")
    keys = ["backbone", "method"]
    finished = finished_cells(selected, keys, "main", seeds)
    columns = score_columns(finished)
    stats = pd.concat([base_stats(finished, columns), summarize(finished, keys, columns, "main")])
    stats = order_rows(stats, "method", METHOD_ORDER)
    stats = with_comparisons(stats, compare_cells(finished, keys, columns, versus("method", BASELINE),
                                                  label=lambda cell: cell["method"]), keys)
    stats["paper"] = published_scores(stats, paper.MAIN)
    text, means = wide(stats, keys, columns)
    labels = [column_label(c) for c in columns]
    style = best_style(means, labels)
    text, style = with_paper_rows(text, style, columns)
    text, style = add_comparison_columns(text, style, stats, keys, BASELINE)
    caption = "After-RL accuracy (%), mean ± std over seeds; paper rows in italics." + uncertainty_note(stats, BASELINE)
    return finish_table("main", caption, text, style, stats, {"backbone": "Backbone", "method": "Method"})


def published_scores(stats: pd.DataFrame, published: dict) -> list:
    """The paper's number for each (backbone, method, score column) row of `stats`; None where it gives none."""
    return [published.get((b, m), {}).get(c.split(".", 1)[1]) for b, m, c in
            zip(stats["backbone"], stats["method"], stats["column"], strict=True)]


def base_stats(finished: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Before-RL scores as a 'Base' method: averaged within each seed, then mean ± std over seeds."""
    before = {c: "before." + c.split(".", 1)[1] for c in columns}
    present = {after: b for after, b in before.items() if b in finished}
    per_seed = finished.groupby(["backbone", "seed"])[list(present.values())].mean().reset_index()
    records = []
    for backbone, group in per_seed.groupby("backbone"):
        runs = finished[finished["backbone"] == backbone]
        for after, b in present.items():
            values = group[b].astype(float)
            records.append({"backbone": backbone, "method": "Base", "column": after, "mean": values.mean(),
                            "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                            "n": int(values.notna().sum()), **interval_fields(column_sample(runs, b))})
    return pd.DataFrame.from_records(records, columns=SHARED_COLUMNS)


def with_paper_rows(text: pd.DataFrame, style: pd.DataFrame, columns: list[str],
                    numbers: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Insert an italic '<method> (paper)' row under each of our rows the paper reports (in `numbers`,
    paper.MAIN by default)."""
    numbers = paper.MAIN if numbers is None else numbers
    rows, styles = [], []
    for i in text.index:
        rows.append(text.loc[i])
        styles.append(style.loc[i])
        published = numbers.get((text.at[i, "backbone"], text.at[i, "method"]))
        if published:
            row = text.loc[i].copy()
            row["method"] = f"{text.at[i, 'method']} (paper)"
            for column in columns:
                row[column_label(column)] = format_paper(published.get(column.split(".", 1)[1]))
            rows.append(row)
            styles.append(pd.Series("italic", index=style.columns).where(style.columns != "backbone", ""))
    return pd.DataFrame(rows).reset_index(drop=True), pd.DataFrame(styles).reset_index(drop=True)


TABLE1_ROWS = ["Base", "Cold start", "GRPO", "DAPO", "GSPO", "CARE w/o RGR", "CARE"]


def table1(runs: pd.DataFrame, curves: pd.DataFrame | None = None, seeds: Seeds = None) -> Table:
    """Sweep `table1`: the paper's Table 1. Per backbone a Base row (the backbone itself, `base.*`), a Cold
    start row (`before.*`) and one row per method the sweep ran (`after.*`, mean ± std over training seeds).

    A backbone may have only some methods (the paper's grid is not full); a method cell missing a seed is
    an error. Base and Cold start are each scored once per backbone and shared by all its runs, so they
    count once, not once per run (`shared_stats`).
    """
    selected = sweep_runs(runs, "table1")
    check_cell_choices(selected)
    keys = ["backbone", "method"]
    finished = finished_cells(selected, keys, "table1", seeds)
    columns = score_columns(finished)
    rules = base_rules(finished)
    stats = pd.concat([shared_stats(finished, columns, "base.", "Base"),
                       shared_stats(finished, columns, "before.", "Cold start"),
                       summarize(finished, keys, columns, "table1")])
    stats = order_rows(stats, "method", TABLE1_ROWS)
    stats = with_comparisons(stats, compare_cells(finished, keys, columns, versus("method", BASELINE),
                                                  label=lambda cell: cell["method"]), keys)
    stats["paper"] = published_scores(stats, paper.TABLE1)
    text, means = wide(stats, keys, columns)
    style = best_style(means, [column_label(c) for c in columns])
    text, style = with_paper_rows(text, style, columns, paper.TABLE1)
    text, style = add_comparison_columns(text, style, stats, keys, BASELINE)
    text["method"] = [f"Base (Instruct, {rules.get(b) or 'unrecorded'} answer rule)" if m == "Base" else m
                      for b, m in zip(text["backbone"], text["method"], strict=True)]
    n_seeds = finished["seed"].nunique()
    spread = ("one training seed: no ±" if n_seeds == 1
              else f"mean ± std over {n_seeds} training seeds")
    caption = ("Accuracy (%). Base: the backbone itself, before any cold start, under the answer rule "
               "its row names; Cold start: the cold-started policy before RL, shared by the backbone's runs "
               f"and counted once; methods: after RL, {spread}. Best per column and backbone in bold; "
               "paper rows in italics.")
    spread_notes = stats[stats["method"].isin(["Base", "Cold start"]) & (stats["n"] > 1)]
    for backbone, method in spread_notes[["backbone", "method"]].drop_duplicates().itertuples(index=False):
        caption += f" {method} ({backbone}): its runs disagree, mean ± std over their distinct scores."
    caption += uncertainty_note(stats, BASELINE)
    return finish_table("table1", caption, text, style, stats, {"backbone": "Backbone", "method": "Method"})


def check_cell_choices(selected: pd.DataFrame) -> None:
    """Each run's `cell` choice must name the backbone and method its config ran: a command-line
    `algorithm=`, `rgr=` or `backbone=` would otherwise relabel a cell unnoticed."""
    if "choice.cell" not in selected:
        return
    wrong = []
    for cell, backbone, method, path in zip(selected["choice.cell"], selected["backbone"], selected["method"],
                                            selected["path"], strict=True):
        if not isinstance(cell, str) or "-" not in cell:
            continue
        cell_backbone, cell_method = cell_parts(cell)
        if cell_method != method or not backbone.startswith(cell_backbone):
            wrong.append(f"{path}: cell={cell} but it ran {backbone} / {method}")
    if wrong:
        raise ValueError("table 'table1': runs whose config is not their cell's:\n" + "\n".join(wrong))


def base_rules(finished: pd.DataFrame) -> dict[str, str]:
    """backbone -> the answer rule its Base row was scored under (base.extraction); runs that mix rules
    cannot share one row."""
    if "base.extraction" not in finished:
        return {}
    rules = {}
    for backbone, group in finished.groupby("backbone"):
        found = sorted(group["base.extraction"].dropna().astype(str).unique())
        if len(found) > 1:
            raise ValueError(f"table 'table1', backbone={backbone}: Base scored under several answer rules {found}")
        if found:
            rules[backbone] = found[0]
    return rules


def shared_stats(finished: pd.DataFrame, columns: list[str], prefix: str, row: str) -> pd.DataFrame:
    """A row every run of a backbone carries the same copy of (`base.*`, `before.*`): each distinct set of
    scores once, however many runs carry it, so n = 1 and no ± when the runs shared the phase as the sweep
    runs it; distinct sets (runs from different cold starts) are averaged, with their std."""
    sources = {column: prefix + column.split(".", 1)[1] for column in columns}
    records = []
    for backbone, group in finished.groupby("backbone"):
        present = [s for s in sources.values() if s in group]
        distinct = group[present].astype(float).round(9).dropna(how="all").drop_duplicates()
        if distinct.empty:
            continue  # e.g. runs without eval.base: no Base row
        carriers = group.loc[distinct.index]  # one run per distinct set: its per-sample files are the set's
        for column, source in sources.items():
            values = distinct[source] if source in distinct else pd.Series(np.nan, index=distinct.index)
            spread = interval_fields(column_sample(carriers, source, by=None)) if source in carriers else {}
            records.append({"backbone": backbone, "method": row, "column": column, "mean": values.mean(),
                            "std": values.std(ddof=1) if values.notna().sum() > 1 else np.nan,
                            "n": int(values.notna().sum()), **spread})
    return pd.DataFrame.from_records(records, columns=SHARED_COLUMNS)


def components_table(runs: pd.DataFrame, curves: pd.DataFrame | None = None, seeds: Seeds = None) -> Table:
    """Sweep `components`: GRPO -> CARE w/o RGR -> CARE per backbone, Δ macro vs the row above."""
    selected = sweep_runs(runs, "components")
    keys = ["backbone", "method"]
    finished = finished_cells(selected, keys, "components", seeds)
    columns = score_columns(finished)
    stats = order_rows(summarize(finished, keys, columns, "components"), "method", METHOD_ORDER)
    stats = with_comparisons(stats, compare_cells(finished, keys, columns, row_above(stats, keys),
                                                  label=lambda cell: cell["method"]), keys)
    text, means = wide(stats, keys, columns)
    style = best_style(means, [column_label(c) for c in columns])
    macro = means["Macro"] if "Macro" in means else pd.Series(np.nan, index=means.index)
    published = pd.Series([paper.MAIN.get((b, m), {}).get("macro") for b, m in
                           zip(text["backbone"], text["method"], strict=True)], index=text.index, dtype=float)
    text["Δ macro"] = signed(macro - macro.groupby(text["backbone"]).shift())
    if "delta" in stats and "after.macro" in columns:
        delta, p, _ = comparison_text(stats, keys, text)
        text["Δ macro"] = [plain if d == NO_VALUE else d for d, plain in zip(delta, text["Δ macro"], strict=True)]
        text["P(> above)"] = p
    text["Paper macro"] = published.map(format_paper)
    text["Paper Δ"] = signed(published - published.groupby(text["backbone"]).shift())
    style = style.reindex(columns=text.columns, fill_value="")
    caption = ("Component ablation: after-RL accuracy (%), Δ macro vs the previous row [95% CI], P(> above): "
               "probability of improvement over it." + uncertainty_note(stats, "the row above"))
    return finish_table("components", caption, text, style, stats, {"backbone": "Backbone", "method": "Method"})


def signed(delta: pd.Series) -> pd.Series:
    return delta.map(lambda d: NO_VALUE if pd.isna(d) else f"{d:+.2f}")


def factor_table(runs: pd.DataFrame, *, name: str, sweep: str, factor: str, label: str, caption: str,
                 seeds: Seeds = None, order: list | None = None, extra: dict[str, pd.Series] | None = None,
                 paper_column: tuple[str, dict] | None = None, bold_extra: bool = False,
                 reference: tuple[object, str] | None = None) -> Table:
    """One ablation: rows backbone × levels of `factor` (a runs column), accuracy columns, then extras.

    `extra` adds per-run numeric columns (indexed like `runs`) averaged over seeds like scores;
    `paper_column` is (header, {level: value}) for the paper's published numbers; `reference` is
    (level, its name in the table): every other level's scores are compared with that level's (Δ macro
    with its CI, P(improvement), resolved cells marked; analysis.uncertainty).
    """
    selected = sweep_runs(runs, sweep)
    for column, values in (extra or {}).items():
        selected[column] = values.reindex(selected.index)
    selected[label] = selected[factor] if factor in selected else None
    keys = ["backbone", label]
    finished = finished_cells(selected, keys, name, seeds)
    columns = list(extra or {}) + score_columns(finished)
    stats = summarize(finished, keys, columns, name)
    stats = order_rows(stats, label, order) if order else stats.sort_values(["backbone", label], kind="stable")
    if reference is not None:
        stats = with_comparisons(stats, compare_cells(finished, keys, columns, versus(label, reference[0]),
                                                      label=lambda cell: reference[1]), keys)
    text, means = wide(stats, keys, columns)
    scored = [column_label(c) for c in columns if c.startswith("after.") or bold_extra]
    style = best_style(means, scored)
    if paper_column:
        header, values = paper_column
        text[header] = text[label].map(lambda level: format_paper(values.get(level)))
        style[header] = ""
    if reference is not None:
        text, style = add_comparison_columns(text, style, stats, keys, reference[1])
    caption += uncertainty_note(stats, reference[1] if reference else None)
    return finish_table(name, caption, text, style, stats, {"backbone": "Backbone"})


def negatives_table(runs: pd.DataFrame, curves: pd.DataFrame | None = None, seeds: Seeds = None) -> Table:
    """Sweep `negatives`: hard-negative selector (care.selector)."""
    return factor_table(runs, name="negatives", sweep="negatives", factor="cfg.care.selector", label="Selector",
                        caption=f"Negative selector: after-RL accuracy (%). {paper.SELECTOR_ORDER_NOTE}.",
                        seeds=seeds, order=SELECTOR_ORDER, paper_column=("Paper macro", paper.SELECTOR_MACRO),
                        reference=("random", "random"))


def rgr_table(runs: pd.DataFrame, curves: pd.DataFrame | None = None, seeds: Seeds = None) -> Table:
    """Sweep `rgr`: RGR variant (rgr.variant; 'off' when rgr.enabled is false), repair rate and accuracy.

    A run's repair rate is Σ successes / Σ attempts over its logged steps.
    """
    variant = runs.get("cfg.rgr.variant", pd.Series(None, index=runs.index)).astype(object)
    variant = variant.where(runs["cfg.rgr.enabled"].astype(bool), "off") if "cfg.rgr.enabled" in runs else variant
    runs = runs.assign(**{"rgr.variant": variant})
    return factor_table(runs, name="rgr", sweep="rgr", factor="rgr.variant", label="RGR variant",
                        caption="Reflection-guided resampling: repair success rate and after-RL accuracy (%).",
                        seeds=seeds, order=RGR_ORDER, extra={"repair_rate": repair_rate_percent(runs, curves)},
                        paper_column=("Paper repair rate", paper.RGR_REPAIR_RATE), bold_extra=True,
                        reference=("off", "off"))


def repair_rate_percent(runs: pd.DataFrame, curves: pd.DataFrame | None) -> pd.Series:
    """Per-run repair success in percent from the logged rgr/successes and rgr/attempts (NaN without attempts)."""
    if curves is None or not {"rgr/successes", "rgr/attempts"} <= set(curves.columns):
        return pd.Series(np.nan, index=runs.index)
    totals = curves.groupby("run_key")[["rgr/successes", "rgr/attempts"]].sum(min_count=1)
    rate = runs["run_key"].map(totals["rgr/successes"] / totals["rgr/attempts"].replace(0, np.nan))
    return 100 * rate.astype(float)


def k_eq_table(runs: pd.DataFrame, curves: pd.DataFrame | None = None, seeds: Seeds = None) -> Table:
    """Sweep `k_eq`: K (care.k) × update-size equalisation (care.equalize), macro accuracy.

    Every K × equalize combination seen for a backbone must have runs (a full grid).
    """
    selected = sweep_runs(runs, "k_eq")
    selected["K"] = selected["cfg.care.k"].astype(int)
    selected["equalize"] = selected["cfg.care.equalize"].map(lambda on: "on" if bool(on) else "off")
    require_full_grid(selected, ["K", "equalize"], "k_eq")
    keys = ["backbone", "K", "equalize"]
    finished = finished_cells(selected, keys, "k_eq", seeds)
    if "after.macro" not in finished:
        raise SeedCountError("table 'k_eq': runs have no after.macro")
    stats = summarize(finished, keys, ["after.macro"], "k_eq").sort_values(["backbone", "K"], kind="stable")
    stats = with_comparisons(stats, compare_cells(finished, keys, ["after.macro"], versus("equalize", "off"),
                                                  label=lambda cell: "off"), keys)
    shown = stats.drop_duplicates(["backbone", "K"])[["backbone", "K"]].reset_index(drop=True)
    means, cells = shown.copy(), list(shown.itertuples(index=False, name=None))
    for level in ("on", "off"):
        by_cell = stats[stats["equalize"] == level].set_index(["backbone", "K"])
        if by_cell.empty:
            continue
        rows = [by_cell.loc[cell] for cell in cells]
        shown[f"Equalize {level}"] = [format_score(r["mean"], r["std"], r["n"], low=r["low"], high=r["high"])
                                      + (f" {RESOLVED_ABOVE if r['delta'] > 0 else RESOLVED_BELOW}"
                                         if is_true(r.get("resolved")) else "") for r in rows]
        means[f"Equalize {level}"] = [r["mean"] for r in rows]
    style = best_style(means, [c for c in shown if c.startswith("Equalize")])
    if stats["delta"].notna().any():
        on = shown[["backbone", "K"]].assign(equalize="on")
        delta, p, _ = comparison_text(stats, keys, on)
        shown["Δ on − off"], shown["P(on > off)"] = delta, p
        style = style.reindex(columns=shown.columns, fill_value="")
    shown["K"] = shown["K"].astype(str)
    caption = ("Negatives per subgroup K × update-size equalisation: after-RL macro accuracy (%)."
               + uncertainty_note(stats, "equalize off at the same K"))
    return finish_table("k_eq", caption, shown, style, stats, {"backbone": "Backbone"})


def anchor_table(runs: pd.DataFrame, curves: pd.DataFrame | None = None, seeds: Seeds = None) -> Table:
    """Sweep `anchor`: anchor strategy (care.anchor), accuracy and mean anchor think length.

    A run's think length is the mean of care/anchor_think_len over its logged steps.
    """
    think = pd.Series(np.nan, index=runs.index)
    if curves is not None and "care/anchor_think_len" in curves:
        think = runs["run_key"].map(curves.groupby("run_key")["care/anchor_think_len"].mean()).astype(float)
    low, high = paper.ANCHOR_THINK_SHORTER_THAN_RANDOM
    table = factor_table(runs, name="anchor", sweep="anchor", factor="cfg.care.anchor", label="Anchor",
                         caption="Anchor strategy: after-RL accuracy (%) and anchor think length (tokens).",
                         seeds=seeds, order=ANCHOR_ORDER, extra={"anchor_think_len": think},
                         paper_column=("Paper think vs random", {"shortest_think": f"-{low} to -{high}"}),
                         reference=("random", "random"))
    stats = table.stats[table.stats["column"] == "anchor_think_len"]
    think_means = {(b, a): m for b, a, m in zip(stats["backbone"], stats["Anchor"], stats["mean"], strict=True)}
    backbones = table.stats.drop_duplicates(["backbone", "Anchor"])["backbone"].tolist()
    delta = [think_means.get((b, a), np.nan) - think_means.get((b, "random"), np.nan)
             for b, a in zip(backbones, table.cells["Anchor"], strict=True)]
    position = table.cells.columns.get_loc(column_label("anchor_think_len")) + 1
    table.cells.insert(position, "Think vs random", [NO_VALUE if pd.isna(d) else f"{d:+.1f}" for d in delta])
    table.style.insert(position, "Think vs random", "")
    return table


def neg_scale_table(runs: pd.DataFrame, curves: pd.DataFrame | None = None, seeds: Seeds = None) -> Table:
    """Sweep `neg_scale`: negative-only advantage scale s (care.s)."""
    runs = runs.assign(**{"s": runs.get("cfg.care.s")})
    return factor_table(runs, name="neg_scale", sweep="neg_scale", factor="s", label="s",
                        caption="Negative scale s: after-RL accuracy (%).", seeds=seeds,
                        reference=(NEG_SCALE_DEFAULT, f"s = {NEG_SCALE_DEFAULT}"))


def token_credit_table(runs: pd.DataFrame, curves: pd.DataFrame | None = None, seeds: Seeds = None) -> Table:
    """Sweep `token_credit`: region-weighted vs uniform token credit (care.token_credit)."""
    return factor_table(runs, name="token_credit", sweep="token_credit", factor="cfg.care.token_credit",
                        label="Token credit", caption="Token credit: after-RL accuracy (%).", seeds=seeds,
                        order=["region", "uniform"], reference=("uniform", "uniform"))


TableFunction = Callable[..., Table]
# table name -> (sweep it reads, function); analysis.paper renders them in this order.
ALL_TABLES: dict[str, tuple[str, TableFunction]] = {
    "main": ("main", main_table),
    "table1": ("table1", table1),
    "components": ("components", components_table),
    "negatives": ("negatives", negatives_table),
    "rgr": ("rgr", rgr_table),
    "k_eq": ("k_eq", k_eq_table),
    "anchor": ("anchor", anchor_table),
    "neg_scale": ("neg_scale", neg_scale_table),
    "token_credit": ("token_credit", token_credit_table),
}
