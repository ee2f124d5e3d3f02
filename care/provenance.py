"""What ran, and where: the code (its directory and commit) and the scheduler's job, for run.json."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def code_provenance() -> dict:
    """Which code ran: the package directory (a sweep's snapshot, when it ran from one) and its commit."""
    import care

    code_dir = Path(care.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=code_dir, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"dir": str(code_dir), "commit": commit, "dirty": bool(status) if status is not None else None}


def scheduler_job() -> dict:
    """The SLURM job running this (all None outside SLURM); restart_count counts requeues."""
    names = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
             "restart_count": "SLURM_RESTART_COUNT", "tasks": "SLURM_NTASKS", "cpus_per_task": "SLURM_CPUS_PER_TASK",
             "gpus_on_node": "SLURM_GPUS_ON_NODE"}
    return {key: os.environ.get(name) for key, name in names.items()}
