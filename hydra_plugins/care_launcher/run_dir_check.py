"""A Hydra callback: refuse a run or sweep directory that cannot be made, before Hydra makes it.

Hydra creates hydra.run.dir (or hydra.sweep.dir) before the task function runs; under a read-only or
unwritable folder that fails with a traceback. This checks the nearest existing folder first and
refuses the way run.py refuses bad input: `config error: ...` on one line, exit status 2.
Registered in conf/config.yaml (hydra.callbacks.run_dir_check).
"""

import sys
from typing import Any


class RunDirCheck:
    def _check(self, path: str, key: str) -> None:
        from care.run_dir import RunDirRefused, check_writable

        try:
            check_writable(path, key)
        except RunDirRefused as err:
            print(f"config error: {err}", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._check(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._check(str(config.hydra.sweep.dir), "hydra.sweep.dir")

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_job_end(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_compose_config(self, config: Any, **kwargs: Any) -> None:
        pass
