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
    from care.coldstart import build_once

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
