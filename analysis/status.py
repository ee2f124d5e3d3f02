"""Where a sweep stands, read from its run directories (and squeue where SLURM is present).

    python -m analysis.status <sweep dir>        # e.g. multirun/toy/main/2026-12-04_10-00-00

One line per job: its directory, label (the config groups it chose), phase, RL step, ETA and state:
`done` (final.json, with the after-RL macro), `failed` (FAILED, with the error's own line), `running`
or `queued`. Everything comes from the files a run writes (care.tracking.RunFiles): run.json once the
job starts, metrics.jsonl per logged RL step (its `train/step_time` gives the ETA), rl_done.json once RL
has saved the policy, final.json at the end. A SLURM job's queue state (PENDING, RUNNING, ...) is added
from squeue when the command exists, matched by the job id run.json records.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class JobStatus:
    directory: str
    label: str
    state: str  # done | failed | running | queued
    phase: str  # what it is doing, or did last
    step: str  # "12/384" once RL logs
    eta: str  # "1h05m" while RL runs
    note: str  # the after-RL macro, the error's line, the queue state

    def row(self) -> list[str]:
        return [self.directory, self.label, self.state, self.phase, self.step, self.eta, self.note]


HEADER = ["job", "config", "state", "phase", "step", "eta", "note"]


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job directories (Hydra names them 0, 1, ...), or the directory itself for a single run."""
    if (sweep_dir / "run.json").exists() or (sweep_dir / "final.json").exists():
        return [sweep_dir]
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def job_status(directory: Path, queue: dict[str, str] | None = None) -> JobStatus:
    run = _json(directory / "run.json")
    label = " ".join(f"{k}={v}" for k, v in sorted((run or {}).get("choices", {}).items())
                     if k in ("algorithm", "backbone", "rgr", "cell", "data")) if run else ""
    if run and run.get("config", {}).get("seed") is not None:
        label = f"{label} seed={run['config']['seed']}".strip()
    total = (run or {}).get("config", {}).get("rl", {}).get("steps")
    rows = _metrics(directory / "metrics.jsonl")
    step = rows[-1]["global_step"] if rows else 0
    step_text = f"{step}/{total}" if rows and total else ""
    queue_state = (queue or {}).get(str(((run or {}).get("job") or {}).get("job_id")), "")
    name = directory.name
    final = _json(directory / "final.json")
    if final is not None:
        macro = final.get("after", {}).get("macro")
        note = f"after-RL macro {macro:.1f}" if isinstance(macro, (int, float)) else "finished"
        return JobStatus(name, label, "done", "finished", step_text or str(final.get("global_step", "")), "", note)
    if (directory / "FAILED").exists():
        return JobStatus(name, label, "failed", _phase(directory, rows, run), step_text, "",
                         error_line((directory / "FAILED").read_text(errors="replace")))
    if run is None:
        return JobStatus(name, label, "queued", "", "", "", queue_state)
    eta = ""
    if rows and total and step < total:
        times = [r["train/step_time"] for r in rows[-20:] if isinstance(r.get("train/step_time"), (int, float))]
        if times:
            eta = _duration((total - step) * sum(times) / len(times))
    return JobStatus(name, label, "running", _phase(directory, rows, run), step_text, eta, queue_state)


def _phase(directory: Path, rows: list[dict], run: dict | None) -> str:
    """The phase a run is in: cold start / before-RL check until RL logs a step, RL, then the after-RL check."""
    if (directory / "rl_done.json").exists():
        return "after-RL eval"
    if rows:
        return "RL"
    return "cold start / before-RL eval" if run and run.get("config", {}).get("task") == "train" else "evaluating"


def error_line(traceback_text: str) -> str:
    """The error's own line from a traceback (its last non-blank line: `ValueError: ...`)."""
    lines = [line.strip() for line in traceback_text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def squeue_states() -> dict[str, str]:
    """{job id: state} of this user's SLURM jobs; {} without SLURM (or when squeue fails)."""
    if shutil.which("squeue") is None:
        return {}
    try:
        out = subprocess.run(["squeue", "--me", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.partition(" ")
        states[job_id.split("_")[0]] = state.strip()
        states[job_id] = state.strip()
    return states


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not there yet, or being replaced (writes are atomic: only the former)
        return None


def _metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut by a kill
            continue
    return [r for r in rows if isinstance(r, dict) and "global_step" in r]


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{int(seconds % 60):02d}s"


def table(statuses: list[JobStatus]) -> str:
    rows = [HEADER] + [s.row() for s in statuses]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in rows]
    counts = {state: sum(s.state == state for s in statuses) for state in ("done", "running", "queued", "failed")}
    return "\n".join(lines + ["", ", ".join(f"{n} {state}" for state, n in counts.items())])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep's directory (hydra.sweep.dir) or one run's")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    queue = squeue_states()
    statuses = [job_status(d, queue) for d in job_dirs(args.sweep_dir)]
    if not statuses:
        print(f"error: {args.sweep_dir} holds no job directories (0, 1, ...) and no run", file=sys.stderr)
        return 2
    print(table(statuses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
