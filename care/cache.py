"""Build something once per key, across jobs: cold starts and before-RL scores are shared by a sweep."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def build_once(out_dir: Path, train: Callable, save: Callable | None = None, marker: str = "config.json") -> Path:
    """`out_dir` holding what `train()` made and `save(out_dir, made)` wrote (without `save`, `train`
    publishes `out_dir` itself), built by one job only; it is done once `out_dir/marker` exists (written
    last, or inside a finished folder renamed into place).

    A file lock beside `out_dir` (filelock: an OS lock, released if its holder dies, so a killed job
    leaves no stale lock) serialises jobs that need the same thing (a cold start, before-RL scores):
    whoever gets it first builds, the others find `out_dir` done and reuse it. Inside a multi-process
    job only rank 0 takes the lock, all ranks train together and rank 0 saves. While another job
    builds, every rank waits on the lock itself rather than in a collective, which would time out
    during an hours-long build.
    """
    from filelock import FileLock, Timeout

    from care.distributed import is_main_process, main_process_decides, wait_for_everyone

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = str(out_dir.parent / f".{out_dir.name}.lock")
    while True:
        lock, held = FileLock(lock_path), False
        if is_main_process() and not (out_dir / marker).exists():
            try:
                lock.acquire(blocking=False)
                held = True
            except Timeout:
                pass
        state = main_process_decides("reuse" if (out_dir / marker).exists() else "build" if held else "wait")
        if state == "wait":
            log.info("another job is building %s; waiting for it", out_dir)
            with FileLock(lock_path):
                pass  # its builder let go: it finished (reuse) or died (build it here)
            continue
        try:
            if state == "build":
                made = train()
                if save is not None and is_main_process():
                    save(out_dir, made)
                wait_for_everyone()  # the others read what rank 0 saved
            else:
                log.info("reusing %s", out_dir)
        finally:
            if held:
                lock.release()
        return out_dir
