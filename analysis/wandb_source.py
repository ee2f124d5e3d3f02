"""The runs/curves/problems frames of `analysis.collect`, built from W&B instead of run dirs.

Only the public API's run attributes are read: id, group, state, config, summary,
created_at/heartbeat_at and scan_history(). Curves come from `scan_history()`, which
returns every logged row; `history()` samples (500 rows by default) and would bend curves
and averages, so it is never called.

How W&B fields map onto the run-dir contract (the trainer mirrors the config, and may
mirror run.json's extras):
- run_key: config["run_key"] if mirrored, else the config hash (as for old run dirs);
- sweep: config["sweep"] if mirrored, else the run's W&B group;
- choices: config["choices"] if mirrored, else the run's "group=choice" tags (the trainer
  tags runs with Hydra's runtime choices);
- final.json: summary["final"], final.json whole as the pipeline mirrors it; for runs mirrored
  before it, summary["before"] / summary["after"] dicts, or flat "before/<bench>", "after/<bench>",
  and the trainer's "final/<bench>" summary keys are after-RL scores; any other summary key
  without "/" or a leading "_" is a mirrored top-level key of final.json;
- status: state finished -> finished; failed, crashed, killed -> failed; else unfinished;
- global_step of a history row: its "global_step" key, else W&B's "_step" (the trainer logs
  with step=global_step).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from analysis.frames import RunRecord, assemble, config_run_key, records_table, run_row

FAILED_STATES = {"failed", "crashed", "killed"}
META_KEYS = ("run_key", "choices")  # what the mirror adds to the config (sweep and label are Config fields)


def plain(value: Any) -> Any:
    """W&B summary sub-dicts (SummarySubDict) to plain dicts, recursively."""
    if hasattr(value, "items") and not isinstance(value, (str, bytes)):
        return {key: plain(item) for key, item in value.items()}
    return value


def split_scores(summary: dict[str, Any]) -> dict[str, Any]:
    """final.json's shape ({"before": {...}, "after": {...}, ...}) out of a run summary."""
    if isinstance(summary.get("final"), dict):  # mirrored whole by care.pipeline
        return dict(summary["final"])
    final: dict[str, Any] = {"before": {}, "after": {}}
    for key, value in summary.items():
        if key in ("before", "after") and isinstance(value, dict):
            final[key].update(value)
        elif "/" not in key and not key.startswith("_"):  # final.json's other top-level keys, mirrored
            final[key] = value
        elif "/" in key:
            prefix, name = key.split("/", 1)
            if prefix in ("before", "after"):
                final[prefix][name] = value
            elif prefix == "final" and not isinstance(value, dict):
                final["after"].setdefault(name, value)
    return final


def choices_from_tags(tags: list[str]) -> dict[str, str]:
    """{"algorithm": "care"} from tags like "algorithm=care" (or "algorithm:care")."""
    choices = {}
    for tag in tags:
        for separator in ("=", ":"):
            if separator in tag:
                group, choice = tag.split(separator, 1)
                choices[group] = choice
                break
    return choices


def run_status(state: str | None) -> str:
    if state == "finished":
        return "finished"
    return "failed" if state in FAILED_STATES else "unfinished"


def history_table(run) -> pa.Table | None:
    """Every logged row of a run (scan_history), keyed by global_step, W&B's _-keys dropped."""
    rows = []
    for row in run.scan_history():
        step = row.get("global_step", row.get("_step"))
        if step is None:
            continue
        metrics = {key: value for key, value in row.items() if not key.startswith("_")}
        metrics["global_step"] = int(step)
        rows.append(metrics)
    return records_table(rows)


def wandb_record(run, project_path: str) -> RunRecord:
    """One W&B run as a RunRecord (curves read lazily, only if the run survives dedupe)."""
    config = {key: value for key, value in plain(run.config).items() if key != "_wandb"}  # W&B's own
    meta = {key: config.pop(key) for key in META_KEYS if key in config}
    meta.update({key: config[key] for key in ("sweep", "label") if key in config})
    if isinstance(config.get("config"), dict):  # run.json mirrored whole
        config = config["config"]
    summary = plain(run.summary)
    status = run_status(getattr(run, "state", None))
    run_key = meta.get("run_key") or config_run_key(config)
    sweep = meta.get("sweep") or getattr(run, "group", None)
    path = f"wandb:{project_path}/{run.id}"
    final = split_scores(summary) if status == "finished" else {}
    if status == "finished" and "global_step" not in final and "_step" in summary:
        final["global_step"] = summary["_step"]
    choices = meta.get("choices") or choices_from_tags(getattr(run, "tags", None) or [])
    row = run_row(run_key=run_key, sweep=sweep, status=status, path=path, label=meta.get("label"),
                  choices=choices, config=config, final=final)
    return RunRecord(path=path, run_key=run_key, sweep=sweep, status=status, recency=_timestamp(run), row=row,
                     load_curves=lambda: (history_table(run), ""),
                     detail="" if status == "finished" else f"W&B state {getattr(run, 'state', None)}")


def collect_from_wandb(project_path: str, group: str | None = None, api=None,
                       quiet: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, curves, problems) for the runs of ENTITY/PROJECT, optionally one group only."""
    if api is None:
        import wandb
        api = wandb.Api()
    filters = {"group": group} if group else None
    records = [wandb_record(run, project_path) for run in api.runs(project_path, filters=filters)]
    return assemble(records, quiet=quiet)


def _timestamp(run) -> float:
    """Newest of heartbeat/creation time (ISO text) as seconds; 0 when W&B gives neither."""
    for attribute in ("heartbeat_at", "created_at"):
        value = getattr(run, attribute, None)
        if value:
            try:
                return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0
