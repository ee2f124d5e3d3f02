"""Command-line entry: compose conf/, validate it, hand a typed Config to the core.

This is the only module that imports Hydra. `python run.py` trains the default job;
`python run.py -m ...` runs sweeps. Bad keys or values fail here, before any work starts.
The last line printed is `run_dir: <path>`. `python run.py task=plan [sweep=...] [...]` composes
every job and prints its plan (care.plan) from this one process, launching nothing; its last
line is one JSON object `{"jobs": [...]}`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path as hydra_absolute_path
from omegaconf import DictConfig, OmegaConf, open_dict

from care.config import Config, make_paths_absolute

ConfigStore.instance().store(name="care_schema", node=Config)


def to_absolute_path(path: str) -> str:
    """A relative path means the directory the user launched from: a sweep job running from its
    code snapshot gets that directory as CARE_LAUNCH_DIR (hydra_plugins/care_launcher)."""
    expanded = Path(path).expanduser()
    if expanded.is_absolute():
        return str(expanded)
    launch_dir = os.environ.get("CARE_LAUNCH_DIR")
    return str(Path(launch_dir) / expanded) if launch_dir else hydra_absolute_path(path)


def to_config(dcfg: DictConfig) -> Config:
    """Typed, value-checked config (dataclass __post_init__ runs here), every path made absolute, and the
    data keys still unset filled from `data_root` (care.data_root; task=plan fills without checking the disk)."""
    from care.data_root import apply_data_root
    from care.preflight import problems_message

    cfg = make_paths_absolute(OmegaConf.to_object(dcfg), to_absolute_path)
    problems = apply_data_root(cfg, check=cfg.task != "plan")  # fills absolute paths: data_root is one now
    if problems:
        raise ValueError(problems_message(problems))
    return cfg


CONF_DIR = Path(__file__).resolve().parent / "conf"


def plan(argv: list[str]) -> None:
    """task=plan: expand the command line (and a sweep file's params) into jobs as Hydra's basic
    sweeper would, compose and validate each, and hand them all to care.plan.plan_sweep, which plans
    the RL jobs and the phases they share. No launcher, weights, data, paths or GPU."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from care.plan import plan_sweep, print_plan

    # task=plan is what to do with the jobs, not a job's task: each keeps its own (train, or a sweep's eval)
    overrides = [arg for arg in argv if arg not in ("-m", "--multirun", "task=plan")]
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    entries, job = [], fixed
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            sweeper = compose(config_name="config", overrides=fixed, return_hydra_config=True).hydra.sweeper
            params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
            (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(params + overrides), max_batch_size=None)
            for job in map(list, jobs):
                composed = compose(config_name="config", overrides=job, return_hydra_config=True)
                launcher = OmegaConf.to_container(composed.hydra.launcher, resolve=False)
                task = composed.task
                with open_dict(composed):
                    del composed["hydra"]
                    composed.task = "plan"  # validated as a plan: nothing on disk is checked
                cfg = to_config(composed)
                cfg.task = "train" if task == "plan" else task
                entries.append((cfg, job, launcher))
        planned = plan_sweep(entries)
    except (HydraException, ValueError) as err:  # a misspelt key, a bad value, a batch that does not divide
        print(f"config error: job #{len(entries)} ({' '.join(job)}): {err}", file=sys.stderr)
        sys.exit(2)
    print_plan(planned)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    from care.pipeline import train
    from care.preflight import preflight

    try:
        cfg = to_config(dcfg)
        if cfg.task == "plan":  # reached through a launcher (run.py's own entry plans before Hydra starts)
            from care.plan import plan_job, print_plan

            print_plan([plan_job(cfg)])
            return
        preflight(cfg)
    except (ValueError, FileNotFoundError) as err:  # bad values, unreachable weights or datasets
        print(f"config error: {err}", file=sys.stderr)
        sys.exit(2)
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = {group: choice for group, choice in hydra_cfg.runtime.choices.items()
               if choice is not None and not group.startswith("hydra")}
    train(cfg, run_dir, choices=choices)
    print(f"run_dir: {run_dir}", flush=True)


if __name__ == "__main__":
    if "task=plan" in sys.argv[1:]:
        plan(sys.argv[1:])
    else:
        main()
