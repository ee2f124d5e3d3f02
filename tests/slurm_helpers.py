"""Helpers for tests that talk to a real SLURM cluster (see scripts/slurm_local.sh).

Two kinds of things live here:
- checks run by pytest: is a cluster reachable, does accounting (``sacct``) work, bounded waits;
- the functions the test jobs run. They are imported by name inside the SLURM job, so this module
  must stay cheap to import (standard library only) and the jobs need ``tests/`` on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
START_SCRIPT = REPO_ROOT / "scripts" / "slurm_local.sh"
UP_STATES = ("idle", "mixed", "allocated", "completing")


def state_dir() -> Path:
    return Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/care-slurm"))


def point_clients_at_local_cluster() -> None:
    """Let plain ``sinfo``/``sbatch`` find the local cluster's config.

    ``slurm_local.sh start`` links /etc/slurm/slurm.conf to it when the machine has none; when that
    link is missing (a system config exists, or it was removed) fall back to SLURM_CONF.
    """
    local_conf = state_dir() / "etc" / "slurm.conf"
    if "SLURM_CONF" not in os.environ and not Path("/etc/slurm/slurm.conf").exists() and local_conf.exists():
        os.environ["SLURM_CONF"] = str(local_conf)


def _run(cmd: list[str], timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def cluster_problem() -> str | None:
    """None when a SLURM node is up and accepting jobs, else why not (a skip reason)."""
    for tool in ("sinfo", "sbatch", "scontrol"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH (run `bash scripts/slurm_local.sh start`)"
    point_clients_at_local_cluster()
    try:
        out = _run(["sinfo", "-h", "-N", "-o", "%T"])
    except subprocess.TimeoutExpired:
        return "`sinfo` timed out (controller not answering)"
    if out.returncode != 0:
        return f"`sinfo` failed: {out.stderr.strip() or out.stdout.strip()}"
    states = out.stdout.split()
    # a trailing "*" means "not responding"; other suffixes (power saving, reboot flags) are fine
    if not any(s.startswith(UP_STATES) and not s.endswith("*") for s in states):
        return f"no SLURM node is up (node states: {states or 'none'})"
    return None


def accounting_works() -> bool:
    """True when ``sacct`` answers (slurmdbd running); submitit needs it to see job states."""
    if shutil.which("sacct") is None:
        return False
    try:
        return _run(["sacct", "-n", "-X", "-S", "now-1minutes"]).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def autostart_cluster() -> None:
    """Start the local cluster with the project's script (used when CARE_SLURM_AUTOSTART=1)."""
    subprocess.run(["bash", str(START_SCRIPT), "start"], check=True, timeout=900)
    point_clients_at_local_cluster()


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passed; returns its last verdict."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def sacct_states(job_id: str) -> dict[str, str]:
    """{job id: state} for a job (array tasks appear as ``<id>_<index>``); {} when sacct fails."""
    base = job_id.split("_")[0]
    out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", base])
    if out.returncode != 0:
        return {}
    states = {}
    for line in out.stdout.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            states[jid.strip()] = state.strip()
    return states


def job_logs(job) -> str:
    """stdout/stderr of a submitit job, for assertion messages."""
    parts = []
    for name in ("stdout", "stderr"):
        try:
            parts.append(f"--- {name} ---\n{getattr(job, name)() or ''}")
        except Exception as exc:  # logs are best effort: never hide the real failure
            parts.append(f"--- {name} unavailable: {exc}")
    return "\n".join(parts)


# ---------------------------------------------------------------- functions run inside SLURM jobs


def square(x: int) -> dict:
    """Trivial job: returns its input squared and the SLURM job it ran in."""
    return {
        "value": x * x,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
    }


def _write_json_atomically(path: Path, data: dict) -> None:
    # a job killed mid-write must leave the previous version intact, never half a file
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def count_steps(progress_file: str, n_steps: int, step_s: float = 1.0) -> dict:
    """Do ``n_steps`` one-second steps, recording each in ``progress_file``; resume from it.

    A requeued SLURM job restarts from the top (submitit ignores the SIGTERM of a requeue), so the
    file is the checkpoint: a restart skips the steps already recorded. Each run also records the
    ``SLURM_RESTART_COUNT`` it saw, so a test can tell that a restart happened.
    """
    path = Path(progress_file)
    progress = json.loads(path.read_text()) if path.exists() else {"steps": [], "runs": []}
    progress["runs"].append(
        {
            "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "first_step": len(progress["steps"]),
        }
    )
    _write_json_atomically(path, progress)
    for step in range(len(progress["steps"]), n_steps):
        time.sleep(step_s)
        progress["steps"].append(step)
        _write_json_atomically(path, progress)
    return progress
