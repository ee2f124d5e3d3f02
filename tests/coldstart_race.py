"""One process of the cold-start lock race in tests/test_coldstart.py (run as `python -m tests.coldstart_race`).

    python -m tests.coldstart_race OUT_DIR LOG GO [die]

Imports care.coldstart, says it is ready, waits for the GO file (so both racers enter `build_once`
together, whatever their import times), then builds with a cheap stand-in for SFT: it appends
"<pid> build" to LOG, sleeps, and saves config.json. With `die` the process exits mid-build while
holding the lock, as a killed job would.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main(out_dir: str, log: str, go: str, mode: str = "build") -> None:
    import logging

    from care.cache import build_once

    logging.basicConfig(level=logging.INFO)
    Path(f"{log}.ready.{os.getpid()}").touch()
    while not Path(go).exists():
        time.sleep(0.02)

    def train():
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} build\n")
        time.sleep(1.5)
        if mode == "die":
            os._exit(3)
        return {"built_by": os.getpid()}

    def save(target: Path, made: dict) -> None:
        staging = target.parent / f".{target.name}.staging"
        staging.mkdir()
        (staging / "config.json").write_text(str(made["built_by"]))
        os.rename(staging, target)

    print(build_once(Path(out_dir), train, save), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])


def rank_main(rank: int, world: int, port: int, out_dir: str, log: str) -> None:
    """One rank of a 2-process job (gloo): all ranks train, rank 0 alone holds the lock and saves."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    from care.cache import build_once
    from care.distributed import join_process_group, leave_process_group

    join_process_group()

    def train():
        with open(log, "a") as handle:
            handle.write(f"rank{rank} train\n")
        return {"built_by": f"rank{rank}"}

    def save(target: Path, made: dict) -> None:
        with open(log, "a") as handle:
            handle.write(f"rank{rank} save\n")
        target.mkdir()
        (target / "config.json").write_text(made["built_by"])

    for _ in range(2):  # the second call finds it built: no training on any rank
        assert build_once(Path(out_dir), train, save) == Path(out_dir)
        assert (Path(out_dir) / "config.json").read_text() == "rank0"  # every rank sees it after the barrier
    leave_process_group()
