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

from care.config import Config

ConfigStore.instance().store(name="care_schema", node=Config)


def to_absolute_path(path: str) -> str:
    """A relative path means the directory the user launched from: a sweep job running from its
    code snapshot gets that directory as CARE_LAUNCH_DIR (hydra_plugins/care_launcher)."""
    expanded = Path(path).expanduser()
    if expanded.is_absolute():
        return str(expanded)
    launch_dir = os.environ.get("CARE_LAUNCH_DIR")
    return str(Path(launch_dir) / expanded) if launch_dir else hydra_absolute_path(path)


# every config key that names a file or folder (and each of eval.paths): resolved against the launch directory
PATH_KEYS = ("cache_dir", "checkpoint", "backbone.path", "cold_start.path", "cold_start.checkpoint", "data.path")


def to_config(dcfg: DictConfig) -> Config:
    """Typed, value-checked config (dataclass __post_init__ runs here), every path made absolute."""
    cfg: Config = OmegaConf.to_object(dcfg)
    keys = [key.rsplit(".", 1) if "." in key else ("", key) for key in PATH_KEYS]
    keys += [("eval.paths", name) for name in vars(cfg.eval.paths)]
    for parent, leaf in keys:
        node = cfg
        for part in filter(None, parent.split(".")):
            node = getattr(node, part)
        if getattr(node, leaf):
            setattr(node, leaf, to_absolute_path(getattr(node, leaf)))
    return cfg


CONF_DIR = Path(__file__).resolve().parent / "conf"


def plan(argv: list[str]) -> None:
    """task=plan: expand the command line (and a sweep file's params) into jobs as Hydra's basic
    sweeper would, compose and validate each, print its plan. No launcher, weights or GPU."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from care.plan import launcher_gpus, plan_job, print_plan

    overrides = [arg for arg in argv if arg not in ("-m", "--multirun")]
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    planned, job = [], fixed
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            sweeper = compose(config_name="config", overrides=fixed, return_hydra_config=True).hydra.sweeper
            params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
            (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(params + overrides), max_batch_size=None)
            for job in map(list, jobs):
                composed = compose(config_name="config", overrides=job, return_hydra_config=True)
                gpus = launcher_gpus(composed.hydra.launcher, composed.backbone.name)
                with open_dict(composed):
                    del composed["hydra"]
                planned.append(plan_job(to_config(composed), gpus, job))
    except (HydraException, ValueError) as err:  # a misspelt key, a bad value, a batch that does not divide
        print(f"config error: job #{len(planned)} ({' '.join(job)}): {err}", file=sys.stderr)
        sys.exit(2)
    print_plan(planned)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    from care.pipeline import preflight, train

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
