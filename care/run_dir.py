"""A run directory belongs to one run: who holds it, whose run it holds, and what a new job may do there.

A job claims its directory (hydra.run.dir, or a sweep job's folder) before it writes anything into it:

- `.lock` in it is held (fcntl.flock, by rank 0, the writer) for the run's life and names its holder (pid,
  host, SLURM job, since when). A second job on the directory fails at once, naming the holder. The OS
  drops the lock when its holder dies, so a killed, preempted or requeued job takes it again and resumes.
- run.json says whose run the directory holds: its `run_key` and `data_digest` (care.identity). A job with
  the same key and data resumes it, or, once final.json is there, reports that result and writes nothing
  (not even .hydra/ or run.log: run.py writes those itself, after the claim).
- A job with another key or other training data is refused, naming the config keys that differ. With
  `start_over=true` the directory's contents move aside to `<parent>/.<name>.replaced-<UTC time>/` (hidden,
  so analysis.collect does not count the old run) and the run starts there.
- Files but no run.json: if they are only what a job leaves before its run.json (.hydra/, *.log, .lock), a
  job that died in its checks, the run starts there; anything else is not a run's, and is refused like
  another run (start_over=true moves it aside).

Refusals are `RunDirRefused` (a ValueError: run.py prints `config error: ...`, exit status 2).
`write_fault_message` words a write that failed for want of room or permission (care.atomic.WriteFault),
naming the file and the config key of the folder it is in (hydra.run.dir, cache_dir).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from care.atomic import WriteFault, fault_errno, writing
from care.config import Config

log = logging.getLogger(__name__)

LOCK = ".lock"
BEFORE_RUN_JSON = (".hydra", LOCK)  # and *.log: all a job writes before run.json

_HELD: dict[str, int] = {}  # run dir (resolved) -> the descriptor this process holds its lock through


class RunDirRefused(ValueError):
    """A run directory this job may not use."""


def writer_process() -> bool:
    """Whether this process is rank 0, the one that writes, before the process group is joined (torchrun
    and accelerate set RANK; a task of a multi-task submitit job gets it from care.distributed; a SLURM
    task started otherwise has SLURM_PROCID)."""
    from care.distributed import export_submitit_task_layout

    export_submitit_task_layout()  # what join_process_group does first; sets RANK in a multi-task job
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(name, "")
        if value.strip():
            return int(value) == 0
    return True


def _key(run_dir: Path) -> str:
    return str(Path(run_dir).resolve())


# ------------------------------------------------------------------------------------------------ the lock

def describe_holder(run_dir: Path) -> str:
    """Who holds the run dir's lock, as its holder recorded it."""
    info = None
    for _ in range(20):  # a holder writes its record just after it takes the lock
        try:
            info = json.loads((Path(run_dir) / LOCK).read_text())
        except (OSError, ValueError):
            info = None
        if info:
            break
        time.sleep(0.05)
    if not info:
        return "another process (which one it has not recorded yet)"
    slurm = f"SLURM job {info['slurm_job']}, " if info.get("slurm_job") else ""
    return f"pid {info.get('pid')} on host {info.get('host')} ({slurm}since {info.get('since')})"


def _in_use(run_dir: Path, dir_key: str) -> RunDirRefused:
    return RunDirRefused(f"{dir_key}={run_dir} is in use by {describe_holder(run_dir)}; "
                         f"wait for it or choose another {dir_key}")


def check_free(run_dir: Path, dir_key: str = "run_dir") -> None:
    """Refuse at once if another process holds `run_dir`; writes nothing (a shared lock, taken and dropped)."""
    run_dir = Path(run_dir)
    if _key(run_dir) in _HELD:
        return
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # no lock file yet (or none readable: `hold` will tell)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(run_dir, dir_key) from None
    finally:
        os.close(fd)


def hold(run_dir: Path, dir_key: str = "run_dir") -> bool:
    """Take `run_dir`'s lock for this process and record who holds it; False if this process holds it
    already (run.py claimed it, then the pipeline asks again)."""
    run_dir = Path(run_dir)
    if _key(run_dir) in _HELD:
        return False
    path = run_dir / LOCK
    with writing(path):
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _in_use(run_dir, dir_key) from None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        with writing(path):  # in place: the lock is on this file, a renamed one would be another
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    _HELD[_key(run_dir)] = fd
    return True


def release(run_dir: Path) -> None:
    fd = _HELD.pop(_key(run_dir), None)
    if fd is not None:
        os.close(fd)


# ---------------------------------------------------------------------------------- whose run it holds

@dataclass
class State:
    kind: str  # empty | resume | finished | other (another run) | foreign (files, no run.json)
    final: dict | None = None
    old_key: str | None = None
    differences: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def inspect(run_dir: Path, cfg: Config, key: str, digest: str | None) -> State:
    """What `run_dir` holds, read only."""
    from care.identity import semantic_differences

    run_dir = Path(run_dir)
    names = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if "run.json" not in names:
        foreign = [n for n in names if n not in BEFORE_RUN_JSON and not n.endswith(".log")]
        return State("foreign", foreign=foreign) if foreign else State("empty")
    try:
        record = json.loads((run_dir / "run.json").read_text())
        old_key = record["run_key"]
    except (OSError, ValueError, KeyError, TypeError):
        return State("foreign", foreign=["run.json (unreadable)"])
    differences = []
    if old_key != key:
        missing = object()
        changed = [(k, a, b) for k, a, b in semantic_differences(record.get("config") or {}, cfg)]
        differences = [f"{k} ({'unset' if a is missing else _shown(a)} -> {'unset' if b is missing else _shown(b)})"
                       for k, a, b in changed if a is not missing or b is not missing]
        if len(differences) > 12:
            differences = differences[:12] + [f"{len(differences) - 12} more"]
        if not differences:  # the key's definition changed, not the config
            differences = [f"run_key ({old_key} -> {key})"]
    old_digest = record.get("data_digest")
    if old_digest and digest and old_digest != digest:
        differences.append(f"training data content (data_digest {old_digest} -> {digest})")
    if differences:
        return State("other", old_key=old_key, differences=differences)
    final = None
    if (run_dir / "final.json").exists():
        try:
            final = json.loads((run_dir / "final.json").read_text())
        except ValueError:  # never published half-written (care.atomic); treat as unfinished
            final = None
    return State("finished" if final is not None else "resume", final=final, old_key=old_key)


def refusal(state: State, run_dir: Path, dir_key: str, key: str) -> RunDirRefused:
    if state.kind == "other":
        what = (f"{dir_key}={run_dir} holds another run (run key {state.old_key}; this job's is {key}); "
                f"they differ in {', '.join(state.differences)}")
    else:
        what = (f"{dir_key}={run_dir} holds files but no run.json ({', '.join(state.foreign[:8])}"
                f"{', ...' if len(state.foreign) > 8 else ''}): another program's folder, or a run that died "
                "before recording its config")
    return RunDirRefused(f"{what}; choose another {dir_key}, or pass start_over=true to move what it holds "
                         "aside and start this run there")


def move_aside(run_dir: Path) -> Path:
    """Move everything in `run_dir` but its lock into a hidden sibling; returns the sibling."""
    run_dir = Path(run_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = run_dir.parent / f".{run_dir.name}.replaced-{stamp}"
    with writing(aside):
        aside.mkdir()
        for entry in sorted(run_dir.iterdir()):
            if entry.name != LOCK:
                os.rename(entry, aside / entry.name)
    return aside


@dataclass
class Claim:
    final: dict | None = None  # the run there is finished: its final.json; nothing is to be done or written
    held: bool = False  # this call took the lock: release(run_dir) when the run ends
    moved_to: Path | None = None  # start_over=true: where what the directory held went


def claim(cfg: Config, run_dir: Path, *, key: str, digest: str | None, writer: bool,
          dir_key: str = "run_dir") -> Claim:
    """Decide what this job does with `run_dir` (the module docstring) and, for the writer, take its lock.
    Nothing is written unless the run is to start or resume there. Raises RunDirRefused."""
    run_dir = Path(run_dir)
    state = inspect(run_dir, cfg, key, digest)
    if state.kind == "finished":
        return Claim(final=state.final)
    if state.kind in ("other", "foreign") and not cfg.start_over:
        raise refusal(state, run_dir, dir_key, key)
    if not writer:  # rank 0 moves aside what start_over replaces, before the process group is joined
        return Claim()
    check_free(run_dir, dir_key)
    check_writable(run_dir, dir_key)
    held = hold(run_dir, dir_key)
    try:
        state = inspect(run_dir, cfg, key, digest)  # again, as its holder: another job may have finished it
        if state.kind == "finished":
            if held:
                release(run_dir)
            return Claim(final=state.final)
        moved = None
        if state.kind in ("other", "foreign"):
            if not cfg.start_over:
                raise refusal(state, run_dir, dir_key, key)
            moved = move_aside(run_dir)
            what = f"run {state.old_key}" if state.kind == "other" else "files that were no run's"
            log.warning("start_over=true: moved what %s=%s held (%s) to %s", dir_key, run_dir, what, moved)
    except BaseException:
        if held:
            release(run_dir)
        raise
    return Claim(held=held, moved_to=moved)


# ------------------------------------------------------------------------------------------ write faults

def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_writable(path: str | Path, key: str) -> None:
    """Refuse (RunDirRefused) when `path`, or the nearest folder above it while it does not exist yet,
    cannot be written by this process: a read-only file system or no write permission. Writes nothing."""
    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if os.access(existing, os.W_OK | os.X_OK):
        return
    reason = "is on a read-only file system" if _read_only(existing) else "is not writable by this user"
    where = "it" if existing == path else f"{existing}, where it would be made,"
    raise RunDirRefused(f"{key}={path} cannot be written: {where} {reason}; choose another {key}")


def write_fault_message(err: BaseException, places: dict[str, str | Path]) -> str | None:
    """`cannot write <path> (<key>=<folder>): <reason>` for a write that failed for want of room or
    permission (care.atomic.WriteFault, or an OSError saying disk full, quota or read-only file system
    anywhere in `err`'s chain), naming the config key of the folder it is in; None for any other error."""
    import errno as errnos

    fault, seen = None, err
    while seen is not None and fault is None:
        if isinstance(seen, WriteFault) or (isinstance(seen, OSError) and seen.errno in
                                            (errnos.ENOSPC, errnos.EDQUOT, errnos.EROFS)):
            fault = seen
        seen = seen.__cause__ or seen.__context__
    if fault is None:
        return None
    code = fault.errno or fault_errno(fault)
    path = Path(str(fault.filename)).absolute() if fault.filename else None
    owners = []
    for key, folder in places.items():
        folder = Path(folder).expanduser().absolute()
        if path is not None and (path == folder or folder in path.parents):
            owners.append((len(folder.parts), f"{key}={folder}"))
    if owners:
        where = max(owners)[1]
    else:
        where = " or ".join(f"{key}={Path(folder).expanduser().absolute()}" for key, folder in places.items())
    reason = os.strerror(code) if code else str(fault)
    return f"cannot write {path if path is not None else 'a file'} ({where}): {reason}"
