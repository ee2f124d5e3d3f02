"""From RunRecords (one per run found, in run dirs or on W&B) to the runs/curves/problems frames.

Both sources, `analysis.collect` (run dirs) and `analysis.wandb_source` (W&B), build RunRecords
and hand them to `assemble`; the frames' columns are described in `analysis.collect`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from care.hashing import config_hash

META_COLUMNS = ["run_key", "sweep", "sweeps", "status", "path", "label"]
PROBLEM_COLUMNS = ["run_key", "status", "path", "detail", "kept"]
READ_THREADS = max(2, min(8, 2 * (os.cpu_count() or 1)))


@dataclass
class RunRecord:
    """One run as found, before dedupe: its row of runs.parquet and how to read its curves."""

    path: str
    run_key: str
    sweep: str | None
    status: str
    recency: float  # newer wins among duplicates: final.json mtime when finished, else last activity
    row: dict[str, Any]
    load_curves: Callable[[], tuple[pa.Table | None, str]]
    detail: str = ""
    notes: list[str] = field(default_factory=list)


def config_run_key(config: dict[str, Any]) -> str:
    """Fallback identity for runs written before run.json carried run_key: 12 hex of the config hash."""
    return config_hash(config)


def flatten(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    """{"care": {"k": 4}} -> {"<prefix>.care.k": 4}; lists become JSON text (a stable parquet type)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value), sort_keys=True, default=str)
        elif isinstance(value, dict):
            flat[name] = None
        else:
            flat[name] = value
    return flat


def run_row(*, run_key: str, sweep: str | None, status: str, path: str, label: Any, choices: dict[str, Any],
            config: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    """One runs.parquet row; the final.json top level maps before/after/base to their own prefixes."""
    row = {"run_key": run_key, "sweep": sweep, "status": status, "path": path, "label": label}
    row.update({f"choice.{group}": str(value) if value is not None else None for group, value in choices.items()})
    row.update(flatten(config, "cfg"))
    final = dict(final)
    row.update(flatten(final.pop("before", None) or {}, "before"))
    row.update(flatten(final.pop("after", None) or {}, "after"))
    # eval.base: the backbone's own scores before any cold start (table1's Base row), with its answer rule
    row.update(flatten(final.pop("base", None) or {}, "base"))
    row.update(flatten(final, "final"))
    return row


# ---------------------------------------------------------------- dedupe and assembly

def assemble(records: list[RunRecord], quiet: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Dedupe by run_key, read the kept runs' curves, build (runs, curves, problems)."""
    kept, problems = dedupe(records)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        loaded = list(pool.map(lambda record: record.load_curves(), kept))
    tables = []
    for record, (table, note) in zip(kept, loaded, strict=True):
        if note:
            record.notes.append(note)
        if table is not None and table.num_rows:
            if "global_step" in table.column_names:
                tables.append(_numeric_curves(table, record.run_key))
            else:
                record.notes.append("metrics.jsonl has no global_step: curves not used")
    for record in kept:
        if record.status != "finished" or record.notes:
            detail = "; ".join(filter(None, [record.detail, *record.notes]))
            problems.append(_problem(record, detail, kept=True))
    runs = runs_frame([record.row for record in kept])
    curves = curves_frame(tables)
    problems_df = pd.DataFrame(problems, columns=PROBLEM_COLUMNS).sort_values(["run_key", "path"], ignore_index=True)
    if not quiet:
        print_problems(problems_df)
    return runs, curves, problems_df


def dedupe(records: list[RunRecord]) -> tuple[list[RunRecord], list[dict[str, Any]]]:
    """Per run_key the newest finished record, else the most recently active; the rest are problems."""
    by_key: dict[str, list[RunRecord]] = {}
    for record in records:
        by_key.setdefault(record.run_key, []).append(record)
    kept, problems = [], []
    for key in sorted(by_key):
        candidates = sorted(by_key[key], key=lambda r: (r.status == "finished", r.recency, r.path), reverse=True)
        winner = candidates[0]
        # The same config run by two sweeps is one experiment: both sweeps' tables may use it.
        winner.row["sweeps"] = ",".join(sorted({r.sweep for r in candidates if r.sweep}))
        kept.append(winner)
        for loser in candidates[1:]:
            problems.append(_problem(loser, f"superseded by {winner.path} ({winner.status})", kept=False,
                                     status=f"superseded-{loser.status}"))
    return kept, problems


def runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run, columns in a fixed order, types parquet can hold."""
    runs = pd.DataFrame.from_records(rows)
    for column in META_COLUMNS:
        if column not in runs:
            runs[column] = None
    if not len(runs):
        return runs[META_COLUMNS]
    # Older runs predate RGR: no rgr group means it was off.
    enabled = runs["cfg.rgr.enabled"] if "cfg.rgr.enabled" in runs else pd.Series(None, index=runs.index)
    runs["cfg.rgr.enabled"] = enabled.map(lambda value: bool(value) if isinstance(value, (bool, int)) else False)
    prefixes = ("choice.", "cfg.", "before.", "after.", "base.", "final.")
    ordered = META_COLUMNS + [c for prefix in prefixes for c in sorted(runs) if c.startswith(prefix)]
    ordered += sorted(set(runs) - set(ordered))
    runs = runs[ordered].sort_values("run_key", ignore_index=True)
    return _parquet_safe(runs)


def curves_frame(tables: list[pa.Table]) -> pd.DataFrame:
    """All kept runs' steps: one row per (run_key, global_step), the last write of a step wins."""
    if not tables:
        return pd.DataFrame({"run_key": pd.Series(dtype=str), "global_step": pd.Series(dtype="int64")})
    combined = pa.concat_tables(tables, promote_options="default").to_pandas()
    combined = combined.drop_duplicates(["run_key", "global_step"], keep="last")
    combined = combined.sort_values(["run_key", "global_step"], kind="stable", ignore_index=True)
    metrics = sorted(c for c in combined if c not in ("run_key", "global_step"))
    return combined[["run_key", "global_step", *metrics]]


def print_problems(problems: pd.DataFrame, stream=None) -> None:
    """Every run that is not a clean finish, one line each (stderr by default)."""
    stream = stream or sys.stderr
    for row in problems.itertuples(index=False):
        kept = "" if row.kept else " (not used)"
        print(f"[{row.status}]{kept} {row.run_key} {row.path}" + (f": {row.detail}" if row.detail else ""),
              file=stream)


# ---------------------------------------------------------------- helpers

def _problem(record: RunRecord, detail: str, kept: bool, status: str | None = None) -> dict[str, Any]:
    return {"run_key": record.run_key, "status": status or record.status, "path": record.path,
            "detail": detail, "kept": kept}


def records_table(rows: list[dict[str, Any]]) -> pa.Table | None:
    if not rows:
        return None
    return pa.Table.from_pandas(pd.DataFrame.from_records(rows), preserve_index=False)


def _numeric_curves(table: pa.Table, run_key: str) -> pa.Table:
    """global_step as int64, every numeric (or all-null) metric as float64, text dropped."""
    columns = {"run_key": pa.array([run_key] * table.num_rows, pa.string()),
               "global_step": table["global_step"].cast(pa.int64())}
    for name in sorted(table.column_names):
        column = table[name]
        kind = column.type
        if name == "global_step" or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                                         or pa.types.is_boolean(kind) or pa.types.is_null(kind)):
            continue
        columns[name] = column.cast(pa.float64())
    return pa.table(columns)


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A column mixing types (e.g. int in one run, text in another) becomes text."""
    for column in [c for c in frame.columns if pd.api.types.is_object_dtype(frame[c].dtype)]:
        kinds = {type(v) for v in frame[column] if v is not None and v == v}
        if kinds <= {bool} or kinds <= {int, float} or kinds <= {str} or not kinds:
            continue
        frame[column] = frame[column].map(lambda v: None if v is None or v != v else str(v))
    return frame
