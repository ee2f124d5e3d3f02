"""What every table shares: picking a sweep's runs, checking seeds, mean ± std, rendering.

Every table (analysis.tables) reads the runs of one sweep (the `sweep` column), groups
them into cells by the config columns it compares, and reports mean ± std (sample std,
ddof=1) over seeds of the after-RL accuracy. Before averaging it checks that every cell holds exactly the expected
seeds, each finished once: a missing, failed or duplicated run raises `SeedCountError`
naming the cell, rather than quietly shifting a mean. The paper's numbers
(analysis.paper_numbers) sit beside ours where the paper has them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import paper_numbers as paper
from analysis.uncertainty import column_sample, compare, comparison_fields, interval_fields

METHOD_ORDER = ["Base", "GRPO", "DAPO", "GSPO", "CARE w/o RGR", "CARE"]
NO_VALUE = "—"
Seeds = int | Sequence[int] | None


class SeedCountError(ValueError):
    """A table cell does not hold exactly the expected seeds (missing, failed or duplicated runs)."""


class NoRunsError(LookupError):
    """The sweep a table reads has no runs at all (the table is skipped, not wrong)."""


@dataclass
class Table:
    """A rendered table: display strings, a style per cell, and the numbers behind them."""

    name: str
    caption: str
    cells: pd.DataFrame  # display text; key columns first
    style: pd.DataFrame  # "", "bold" or "italic" per cell
    # long form: keys..., column, mean, std, n, the 95% CI (low, high, se, df, basis), iqm (iqm_low,
    # iqm_high; from 5 seeds) and, for compared cells, reference, delta (delta_low, delta_high,
    # delta_basis), paired, p_improve, resolved (analysis.uncertainty)
    stats: pd.DataFrame

    def markdown(self) -> str:
        marks = {"bold": "**{}**", "italic": "*{}*", "": "{}"}
        header = "| " + " | ".join(self.cells.columns) + " |"
        rule = "| " + " | ".join("---" for _ in self.cells.columns) + " |"
        lines = [f"**{self.caption}**", "", header, rule]
        for (_, text), (_, style) in zip(self.cells.iterrows(), self.style.iterrows(), strict=True):
            lines.append("| " + " | ".join(marks[s].format(t) for t, s in zip(text, style, strict=True)) + " |")
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        """A booktabs table (needs \\usepackage{booktabs})."""
        marks = {"bold": "\\textbf{{{}}}", "italic": "\\textit{{{}}}", "": "{}"}
        n_keys = sum(1 for c in self.cells.columns if not self.cells[c].map(_looks_numeric).all())
        spec = "l" * n_keys + "r" * (len(self.cells.columns) - n_keys)
        lines = ["\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{latex_escape(self.caption)}}}",
                 f"\\label{{tab:{self.name}}}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
                 " & ".join(latex_escape(c) for c in self.cells.columns) + " \\\\", "\\midrule"]
        for (_, text), (_, style) in zip(self.cells.iterrows(), self.style.iterrows(), strict=True):
            cells = [marks[s].format(latex_escape(t)) for t, s in zip(text, style, strict=True)]
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- selecting and checking runs

def method_label(algorithm: str, rgr_enabled: bool) -> str:
    """GRPO, DAPO, GSPO, CARE, or CARE w/o RGR (the paper's row names).

    Only CARE runs RGR (care/trainer); a GRPO, DAPO or GSPO run records whatever `rgr`
    group it composed with (rgr.enabled is true by default), so its label ignores it.
    """
    if algorithm == "care":
        return "CARE" if rgr_enabled else "CARE w/o RGR"
    return algorithm.upper()


def cell_parts(cell: str) -> tuple[str, str]:
    """A conf/cell choice (`<backbone>-<method>`, sweep table1) as (backbone name or its prefix, method label).

    The toy cells say `tiny` for tiny_qwen2_5_vl; `care_no_rgr` is CARE with RGR off.
    """
    backbone, method = cell.rsplit("-", 1)
    if method in ("care", "care_no_rgr"):
        return backbone, method_label("care", method == "care")
    return backbone, method_label(method, False)


def sweep_runs(runs: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """All runs of one sweep, any status, with backbone/method/seed columns added."""
    selected = runs[in_sweep(runs, sweep)].copy()
    if selected.empty:
        raise NoRunsError(f"no runs in sweep {sweep!r}")
    if "cfg.seed" not in selected or selected["cfg.seed"].isna().any():
        raise SeedCountError(f"sweep {sweep!r}: some runs have no cfg.seed")
    selected["seed"] = selected["cfg.seed"].astype(int)
    selected["backbone"] = selected["cfg.backbone.name"].astype(str)
    rgr = selected["cfg.rgr.enabled"] if "cfg.rgr.enabled" in selected else False
    selected["method"] = [method_label(a, bool(r)) for a, r in
                          zip(selected["cfg.algorithm.name"], pd.Series(rgr, index=selected.index), strict=True)]
    return selected


def in_sweep(runs: pd.DataFrame, sweep: str) -> pd.Series:
    """Runs of a sweep, including a run_key another sweep ran too (collect lists both in `sweeps`)."""
    if "sweeps" not in runs:
        return runs["sweep"] == sweep
    return runs["sweeps"].fillna("").map(lambda names: sweep in names.split(",")) | (runs["sweep"] == sweep)


def expected_seed_set(selected: pd.DataFrame, seeds: Seeds, table: str) -> list[int]:
    """The seeds every cell must hold: given explicitly, or every seed any run of the sweep used."""
    found = sorted(selected["seed"].unique().tolist())
    if seeds is None:
        return found
    if isinstance(seeds, int):
        if len(found) != seeds:
            raise SeedCountError(f"table {table!r}: expected {seeds} seeds, the sweep has runs for seeds {found}")
        return found
    return sorted(int(s) for s in seeds)


def finished_cells(selected: pd.DataFrame, keys: list[str], table: str, seeds: Seeds = None) -> pd.DataFrame:
    """The finished runs, after checking every cell holds each expected seed exactly once.

    A failed or unfinished run anywhere in a cell is an error too, even when its seeds are
    otherwise complete: that run was meant to be part of the comparison.
    """
    expected = expected_seed_set(selected, seeds, table)
    finished = selected[selected["status"] == "finished"]
    errors = []
    for cell, group in selected.groupby(keys, sort=True, dropna=False):
        done = finished.loc[finished.index.intersection(group.index)]
        counts = done["seed"].value_counts()
        found = sorted(counts.index.tolist())
        duplicated = sorted(counts[counts > 1].index.tolist())
        unfinished = [f"seed {row.seed}: {row.status} ({row.path})" for row in group.itertuples()
                      if row.status != "finished"]
        if found == expected and not duplicated and not unfinished:
            continue
        notes = list(unfinished)
        notes += [f"seed {s}: no run" for s in expected if s not in group["seed"].tolist()]
        notes += [f"seed {s}: {counts[s]} finished runs" for s in duplicated]
        errors.append(f"table {table!r}, cell {describe_cell(keys, cell)}: seeds found {found} vs expected "
                      f"{expected}" + (f" [{'; '.join(notes)}]" if notes else ""))
    if errors:
        raise SeedCountError("\n".join(errors))
    return finished


def require_full_grid(selected: pd.DataFrame, factors: list[str], table: str) -> None:
    """Every combination of the factors' observed levels must have runs, per backbone."""
    for backbone, group in selected.groupby("backbone"):
        levels = [sorted(group[f].unique().tolist()) for f in factors]
        present = set(group[factors].itertuples(index=False, name=None))
        missing = [combo for combo in pd.MultiIndex.from_product(levels).tolist() if combo not in present]
        if missing:
            cells = "; ".join(describe_cell(["backbone", *factors], (backbone, *combo)) for combo in missing)
            raise SeedCountError(f"table {table!r}: no runs at all for cell(s) {cells}")


def describe_cell(keys: list[str], cell) -> str:
    values = cell if isinstance(cell, tuple) else (cell,)
    return ", ".join(f"{key}={value}" for key, value in zip(keys, values, strict=True))


def score_columns(frame: pd.DataFrame, prefix: str = "after.") -> list[str]:
    """Benchmark columns in the paper's order (others sorted after), then macro."""
    present = [c[len(prefix):] for c in frame if c.startswith(prefix) and frame[c].notna().any()]
    benches = [b for b in paper.BENCHMARKS if b in present]
    # final.json also carries the macro's std over eval seeds, the sample count and the seed list (and, in
    # `base`, the answer rule it was scored under)
    bookkeeping = ("macro", "n", "macro_std", "seeds", "extraction")
    benches += sorted(b for b in present if b not in paper.BENCHMARKS and b not in bookkeeping)
    return [prefix + b for b in benches] + ([prefix + "macro"] if "macro" in present else [])


def summarize(finished: pd.DataFrame, keys: list[str], columns: list[str], table: str) -> pd.DataFrame:
    """Long-form mean/std/n per cell and column, with the 95% CI and, from 5 seeds, the IQM
    (analysis.uncertainty.interval_fields). A column missing in only some runs of a cell raises."""
    records = []
    for cell, group in finished.groupby(keys, sort=True, dropna=False):
        cell = cell if isinstance(cell, tuple) else (cell,)
        for column in columns:
            values = group[column].astype(float) if column in group else pd.Series(np.nan, index=group.index)
            if values.isna().any() and values.notna().any():
                missing = group.loc[values.isna(), "path"].tolist()
                raise SeedCountError(f"table {table!r}, cell {describe_cell(keys, cell)}: {column} missing in {missing}")
            records.append({**dict(zip(keys, cell, strict=True)), "column": column, "mean": values.mean(),
                            "std": values.std(ddof=1) if len(values) > 1 else np.nan, "n": int(values.notna().sum()),
                            **interval_fields(column_sample(group, column))})
    return pd.DataFrame.from_records(records)


# ---------------------------------------------------------------- comparisons (analysis.uncertainty)

Reference = Callable[[dict], "dict | None"]


def versus(key: str, level) -> Reference:
    """Compare each cell with the cell that has `key` = `level` and the same other keys (the baseline row);
    the baseline itself is compared with nothing."""
    return lambda cell: None if cell[key] == level else {**cell, key: level}


def row_above(stats: pd.DataFrame, keys: list[str], group: str = "backbone") -> Reference:
    """Compare each cell with the row shown above it within its backbone (an ablation's step)."""
    cells = stats.drop_duplicates(keys)[keys].to_dict("records")
    above = {}
    for previous, current in zip(cells, cells[1:], strict=False):
        if previous[group] == current[group]:
            above[tuple(current[k] for k in keys)] = previous
    return lambda cell: above.get(tuple(cell[k] for k in keys))


def compare_cells(finished: pd.DataFrame, keys: list[str], columns: list[str], reference: Reference,
                  label: Callable[[dict], str] | None = None) -> pd.DataFrame:
    """Long form per cell and score column: its Δ vs its reference cell with the 95% CI (paired by seed where
    the runs share a cold start), rliable's P(improvement), and whether the difference is resolved."""
    groups = {cell if isinstance(cell, tuple) else (cell,): group
              for cell, group in finished.groupby(keys, sort=True, dropna=False)}
    records = []
    for cell, group in groups.items():
        named = dict(zip(keys, cell, strict=True))
        other = reference(named)
        if other is None or tuple(other[k] for k in keys) not in groups:
            continue
        base = groups[tuple(other[k] for k in keys)]
        for column in columns:
            if not column.startswith("after.") or column not in group:
                continue
            found = compare(column_sample(group, column), column_sample(base, column))
            records.append({**named, "column": column, "reference": label(other) if label else str(other),
                            **comparison_fields(found)})
    return pd.DataFrame.from_records(records, columns=[*keys, "column", "reference", "delta", "delta_low",
                                                       "delta_high", "delta_basis", "paired", "p_improve",
                                                       "resolved"])


def with_comparisons(stats: pd.DataFrame, comparisons: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return stats.merge(comparisons, how="left", on=[*keys, "column"])


RESOLVED_ABOVE, RESOLVED_BELOW = "†", "‡"


def mark_resolved(text: pd.DataFrame, stats: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """Append † (resolved above its reference) or ‡ (resolved below) to each score cell whose Δ's 95% CI
    excludes 0; `text` has one row per cell, keyed like `stats`."""
    if "resolved" not in stats:
        return text
    indexed = stats.set_index([*keys, "column"])
    text = text.copy()
    for column in columns:
        shown = column_label(column)
        for i in text.index:
            key = (*(text.at[i, k] for k in keys), column)
            if key not in indexed.index:
                continue
            row = indexed.loc[key]
            if is_true(row.get("resolved")):
                text.at[i, shown] += " " + (RESOLVED_ABOVE if row["delta"] > 0 else RESOLVED_BELOW)
    return text


def is_true(value) -> bool:
    """A `resolved` entry that is True (not False, and not NaN: a cell compared with nothing)."""
    return isinstance(value, (bool, np.bool_)) and bool(value)


def comparison_text(stats: pd.DataFrame, keys: list[str], rows: pd.DataFrame, column: str = "after.macro"
                    ) -> tuple[list[str], list[str], list[str]]:
    """For each row of `rows` (key columns as in stats): Δ with its CI, P(improvement), IQM with its CI
    (texts; "" for a row without one, e.g. the baseline or a paper row)."""
    indexed = stats.set_index([*keys, "column"])
    delta, p, center = [], [], []
    for values in rows[keys].itertuples(index=False, name=None):
        key = (*values, column)
        row = indexed.loc[key] if key in indexed.index else None
        has = row is not None and "delta" in row and pd.notna(row["delta"])
        delta.append(format_delta(row["delta"], row["delta_low"], row["delta_high"]) if has else NO_VALUE)
        p.append(f"{row['p_improve']:.2f}" if has and pd.notna(row["p_improve"]) else NO_VALUE)
        center.append(format_interval(row["iqm"], row["iqm_low"], row["iqm_high"])
                      if row is not None and "iqm" in row and pd.notna(row["iqm"]) else NO_VALUE)
    return delta, p, center


def add_comparison_columns(text: pd.DataFrame, style: pd.DataFrame, stats: pd.DataFrame, keys: list[str],
                           reference: str, column: str = "after.macro") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Columns `Δ <col> vs <reference>` (Δ [95% CI]) and `P(> <reference>)`, and `IQM <col>` when some cell
    has 5 seeds or more; nothing when no row was compared."""
    if "delta" not in stats or stats.loc[stats["column"] == column, "delta"].isna().all():
        return text, style
    delta, p, center = comparison_text(stats, keys, text, column)
    name = column_label(column)
    text, style = text.copy(), style.copy()
    text[f"Δ {name} vs {reference}"] = delta
    text[f"P(> {reference})"] = p
    if any(value != NO_VALUE for value in center):
        text[f"IQM {name}"] = center
    return text, style.reindex(columns=text.columns, fill_value="")


def uncertainty_note(stats: pd.DataFrame, reference: str | None = None) -> str:
    """The caption's sentences on the intervals, the marks and the comparison columns."""
    scored = stats[stats["column"].astype(str).str.startswith(("after.", "before.", "base."))]
    bases = set(scored.get("basis", pd.Series(dtype=object)).dropna())
    if bases <= {"seeds", "none"}:
        covers = "over training seeds (items not resampled: the runs have no per-sample eval files)"
    elif bases <= {"items", "none"}:
        covers = "over benchmark items only (one training seed)"
    else:
        covers = "over training seeds and benchmark items"
    note = (f" [a, b]: 95% CI of the mean {covers}: stratified bootstrap SE, Student-t "
            "(analysis.uncertainty).")
    if "items" in bases and bases & {"seeds+items", "seeds"}:
        note += " A row scored once (n = 1) has items only."
    if reference and "resolved" in stats and stats["delta"].notna().any():
        note += (f" {RESOLVED_ABOVE} / {RESOLVED_BELOW}: resolved above / below {reference} (the 95% CI of Δ "
                 "excludes 0; paired by seed where runs share a cold start); P(>): probability of improvement "
                 "over seeds (Agarwal et al., 2021).")
        if (stats["delta_basis"] == "items").any():
            note += " A Δ with one training seed a side covers items only and is never marked."
    if "iqm" in stats and stats["iqm"].notna().any():
        note += " IQM: interquartile mean over ≥ 5 seeds, percentile bootstrap CI."
    return note


# ---------------------------------------------------------------- formatting

def format_score(mean: float, std: float, n: int, digits: int = 2, low: float = np.nan,
                 high: float = np.nan) -> str:
    """`mean ± std [low, high]`: std over seeds (none with one), then the 95% CI where there is one."""
    if n == 0 or pd.isna(mean):
        return NO_VALUE
    text = f"{mean:.{digits}f}" if n == 1 or pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return text + (f" [{low:.1f}, {high:.1f}]" if pd.notna(low) and pd.notna(high) else "")


def format_interval(center: float, low: float, high: float, digits: int = 2) -> str:
    return f"{center:.{digits}f} [{low:.1f}, {high:.1f}]" if pd.notna(low) else f"{center:.{digits}f}"


def format_delta(delta: float, low: float, high: float) -> str:
    return f"{delta:+.2f} [{low:+.1f}, {high:+.1f}]" if pd.notna(low) else f"{delta:+.2f}"


def format_paper(value: float | str | None) -> str:
    if isinstance(value, str):
        return value
    return NO_VALUE if value is None or pd.isna(value) else f"{value:g}"


EXTRA_LABELS = {"anchor_think_len": "Anchor think (tokens)", "repair_rate": "Repair rate (%)"}


def column_label(column: str) -> str:
    name = column.split(".", 1)[1] if column.startswith(("after.", "before.")) else column
    return paper.BENCHMARK_LABELS.get(name) or EXTRA_LABELS.get(name, name)


def latex_escape(text: str) -> str:
    replacements = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
                    "{": "\\{", "}": "\\}", "±": "$\\pm$", "Δ": "$\\Delta$", "—": "--", "≥": "$\\geq$",
                    "†": "\\dag{}", "‡": "\\ddag{}"}
    return "".join(replacements.get(char, char) for char in str(text))


def _looks_numeric(text: str) -> bool:
    head = str(text).split(" ")[0].replace("−", "-").lstrip("+-")
    return text in (NO_VALUE, "") or head.replace(".", "", 1).isdigit()


def wide(stats: pd.DataFrame, keys: list[str], columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display text, means) with one row per cell and one column per score column; a score whose Δ to its
    reference row is resolved carries its mark (`mark_resolved`)."""
    cells = stats.drop_duplicates(keys)[keys].reset_index(drop=True)
    text, means = cells.copy(), cells.copy()
    indexed = stats.set_index([*keys, "column"])
    for column in columns:
        rows = [indexed.loc[(*cell, column)] for cell in cells.itertuples(index=False, name=None)]
        text[column_label(column)] = [format_score(r["mean"], r["std"], r["n"], low=r.get("low", np.nan),
                                                   high=r.get("high", np.nan)) for r in rows]
        means[column_label(column)] = [r["mean"] for r in rows]
    return mark_resolved(text, stats, keys, columns), means


def best_style(means: pd.DataFrame, value_columns: list[str], group: str = "backbone") -> pd.DataFrame:
    """Bold the best (highest, at display precision) value per column within each backbone."""
    style = pd.DataFrame("", index=means.index, columns=means.columns)
    for _, rows in means.groupby(group, sort=False):
        for column in value_columns:
            values = rows[column].astype(float).round(2)
            if values.notna().any() and values.notna().sum() > 1:
                style.loc[values[values == values.max()].index, column] = "bold"
    return style


def finish_table(name: str, caption: str, text: pd.DataFrame, style: pd.DataFrame, stats: pd.DataFrame,
                 key_labels: dict[str, str]) -> Table:
    """Rename key columns for display; drop the backbone column when only one backbone is shown."""
    if "backbone" in text and text["backbone"].nunique() == 1:
        caption += f" Backbone: {paper.BACKBONE_LABELS.get(text['backbone'].iloc[0], text['backbone'].iloc[0])}."
        text, style = text.drop(columns="backbone"), style.drop(columns="backbone")
    elif "backbone" in text:
        text = text.assign(backbone=text["backbone"].map(lambda b: paper.BACKBONE_LABELS.get(b, b)))
    text = text.rename(columns=key_labels).astype(str).reset_index(drop=True)
    style = style.rename(columns=key_labels).reset_index(drop=True)
    return Table(name=name, caption=caption, cells=text, style=style, stats=stats.reset_index(drop=True))


def order_rows(frame: pd.DataFrame, column: str, order: Sequence) -> pd.DataFrame:
    rank = {value: i for i, value in enumerate(order)}
    key = frame[column].map(lambda v: (rank.get(v, len(rank)), str(v)))
    return frame.assign(_rank=key).sort_values(["backbone", "_rank"], kind="stable").drop(columns="_rank")
