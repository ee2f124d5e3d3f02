"""The run directory is the record; W&B is a mirror of it.

`run.json` (resolved config, run_key, data_digest), append-only `metrics.jsonl` (one object per
logged step, with `global_step`, each line one write), `rl_done.json` once RL has saved `policy/` (a
requeue then only evaluates), `final.json` written atomically at the end, and a `FAILED` marker
holding the traceback when a run dies (whose run the directory holds, and who may write it:
care.run_dir). W&B is offline unless credentials exist and is
always finished.
"""

from __future__ import annotations

import json
import logging
import math
import os
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from care.atomic import append_line, write_json_atomic, write_text_atomic
from care.config import Config

log = logging.getLogger(__name__)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunFiles:
    """The run directory's files. With several processes only rank 0 is the `writer`; the others
    read (final.json, the checkpoints) and every write is a no-op for them."""

    def __init__(self, run_dir: str | Path, writer: bool = True):
        self.dir = Path(run_dir)
        self.writer = writer
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.final_path = self.dir / "final.json"

    @property
    def eval_dir(self) -> Path | None:
        """Where per-sample eval files go: this directory's eval/ for the writer, nowhere otherwise."""
        return self.dir / "eval" if self.writer else None

    def write_run_json(self, cfg: Config, *, run_key: str, sweep: str | None, label: str | None,
                       choices: dict[str, str], world_size: int, code: dict[str, Any], job: dict[str, Any],
                       data: dict[str, Any] | None, data_digest: str | None) -> None:
        """run.json: the resolved config and what identifies the run (every field named, so that
        analysis.fake_runs, which writes through here too, cannot drift from the real format)."""
        if not self.writer:
            return
        write_json_atomic(self.dir / "run.json", {
            "config": asdict(cfg), "run_key": run_key, "sweep": sweep, "label": label, "choices": choices,
            "world_size": world_size, "code": code, "job": job,
            "data": data,  # what it trains on: counts per step and source (None for task=eval)
            "data_digest": data_digest})  # its records' content (care.identity.data_digest; None for task=eval)

    def append_metrics(self, global_step: int, metrics: dict[str, Any]) -> None:
        if not self.writer:
            return
        row = {"global_step": int(global_step), **{k: _finite(v) for k, v in metrics.items()}}
        append_line(self.metrics_path, json.dumps(row, sort_keys=True))  # one write: a line is whole or absent

    def truncate_metrics(self, last_step: int) -> None:
        """Keep rows up to `last_step`: a resumed run re-logs what came after its checkpoint, and
        one with no checkpoint yet starts over (`last_step` 0). A line that is not JSON is what a
        kill mid-write leaves (a torn last line): it is dropped with a warning, never fatal, or
        every requeue of the job would die on it."""
        if not self.writer or not self.metrics_path.exists():
            return
        kept, torn = [], []
        for number, line in enumerate(self.metrics_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                torn.append(number)
                continue
            if row["global_step"] <= last_step:
                kept.append(line)
        if torn:
            log.warning("%s: dropped unreadable line(s) %s (a write cut short by a kill)", self.metrics_path, torn)
        write_text_atomic(self.metrics_path, "".join(line + "\n" for line in kept))

    def read_rl_done(self) -> dict[str, Any] | None:
        """RL's end ({global_step, processes, rl_s}), written once policy/ is saved: a job requeued after
        it only evaluates. None before (or when policy/ is not there to evaluate)."""
        path = self.dir / "rl_done.json"
        if not path.exists() or not (self.dir / "policy" / "config.json").exists():
            return None
        return json.loads(path.read_text())

    def write_rl_done(self, rl: dict[str, Any]) -> None:
        if self.writer:
            write_json_atomic(self.dir / "rl_done.json", rl)

    def read_final(self) -> dict[str, Any] | None:
        return json.loads(self.final_path.read_text()) if self.final_path.exists() else None

    def write_final(self, final: dict[str, Any]) -> None:
        if not self.writer:
            return
        write_json_atomic(self.final_path, final)

    def mark_failed(self, err: BaseException) -> None:
        if not self.writer:  # the traceback is in this process's own log
            return
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        try:
            write_text_atomic(self.dir / "FAILED", text)
        except OSError as fault:  # a full disk: the error that stopped the run is what matters
            log.warning("could not record the failure in %s: %s", self.dir / "FAILED", fault)


def wandb_mode(requested: str) -> str:
    """WANDB_MODE from the environment wins; `auto` is online only with credentials."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    if requested != "auto":
        return requested
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file() and \
        "api.wandb.ai" in (Path.home() / ".netrc").read_text()
    return "online" if has_key else "offline"


class WandbMirror:
    """A W&B run mirroring metrics.jsonl; a no-op when disabled."""

    def __init__(self, cfg: Config, run_dir: Path, run_id: str | None = None, choices: dict | None = None,
                 enabled: bool = True):
        self.run = None
        mode = wandb_mode(cfg.wandb.mode)
        if mode == "disabled" or not enabled:
            return
        import wandb
        tags = list(cfg.wandb.tags) + [f"{group}={choice}" for group, choice in sorted((choices or {}).items())]
        self.run = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity,
                              group=cfg.wandb.group or cfg.sweep, job_type=cfg.task, tags=tags,
                              config={**asdict(cfg), "choices": choices or {}, "run_key": run_id},
                              dir=str(run_dir), mode=mode, id=run_id, resume="allow" if run_id else None,
                              reinit="finish_previous")

    def log(self, global_step: int, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=int(global_step))

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
