"""Command-line entry: compose conf/, validate it, hand a typed Config to the core.

This is the only module that imports Hydra. `python run.py` trains the default job;
`python run.py -m ...` runs sweeps. Bad keys or values fail here, before any work starts.
The last line printed is `run_dir: <path>`. A run directory belongs to one run (care.run_dir): a second
job on it, or a job with another config or data, is refused; rerun with the same ones, a finished run
prints its final.json and writes nothing. `python run.py task=plan [sweep=...] [...]` composes
every job and prints its plan (care.plan) from this one process, launching nothing; its last
line is one JSON object `{"jobs": [...]}`.
"""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import MemoryHandler
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
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


def expand_sweep(overrides) -> list[list[str]]:
    """The jobs a multirun of these parsed overrides launches, in Hydra's basic sweeper's order: every
    `key=a,b` is an axis, the product is taken in the order keys first appear, and a later value for a
    key (the command line after a sweep file's params) replaces the earlier one in its place."""
    import itertools

    from hydra.errors import HydraException

    axes: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override() and not override.is_discrete_sweep():
            raise HydraException(f"{override.input_line}: interval sweeps are not supported by the basic sweeper; "
                                 "list the values (key=a,b,c)")
        if override.is_sweep_override():
            axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            value = override.get_value_element_as_str()
            axes[key] = [f"{key}={value if value is not None else ''}"]
    return [list(job) for job in itertools.product(*axes.values())]


def plan(argv: list[str]) -> None:
    """task=plan: expand the command line (and a sweep file's params) into jobs as Hydra's basic
    sweeper would, compose and validate each, and hand them all to care.plan.plan_sweep, which plans
    the RL jobs and the phases they share. No launcher, weights, data, paths or GPU."""
    from hydra import compose, initialize_config_dir
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
            for job in expand_sweep(parser.parse_overrides(params + overrides)):
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
def main(dcfg: DictConfig) -> dict | None:
    """One job in its run directory (care.run_dir): refused at once if another process holds it; checked,
    then claimed; a finished run of the same key and data is reported and nothing is written; otherwise
    .hydra/ and run.log are written (Hydra is configured not to) and the job runs or resumes there."""
    import json

    from care import run_dir as rundir
    from care.identity import data_digest, run_key
    from care.pipeline import train
    from care.preflight import preflight

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    dir_key = "hydra.run.dir" if hydra_cfg.mode == RunMode.RUN else "hydra.sweep.dir/hydra.sweep.subdir"
    places = {dir_key: run_dir}
    early = MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)  # run.log gets them once owned
    logging.getLogger().addHandler(early)
    handlers: list[logging.Handler] = [early]
    claimed = None
    try:
        try:
            cfg = to_config(dcfg)
            if cfg.task == "plan":  # reached through a launcher (run.py's own entry plans before Hydra starts)
                from care.plan import plan_job, print_plan

                print_plan([plan_job(cfg)])
                return None
            places["cache_dir"] = cfg.cache_dir
            writer = rundir.writer_process()  # rank 0: the others are its job's, not other jobs
            if writer:
                rundir.check_free(run_dir, dir_key)  # at once: another job holds it
            rundir.check_writable(cfg.cache_dir, "cache_dir")
            data = preflight(cfg)  # the training data, prepared once: the job uses it as it is
            key = run_key(cfg)
            digest = data_digest(data) if data is not None else None
            claimed = rundir.claim(cfg, run_dir, key=key, digest=digest, writer=writer, dir_key=dir_key)
        except (ValueError, FileNotFoundError) as err:  # bad values, unreachable weights or datasets, a run dir
            print(f"config error: {err}", file=sys.stderr)  # held by another job or holding another run
            sys.exit(2)
        if claimed.final is not None:  # touch nothing: not .hydra/, not run.log
            print(f"{run_dir} holds this run's result already (run key {key}); nothing was run or written",
                  flush=True)
            print(f"final.json: {json.dumps(claimed.final, sort_keys=True)}", flush=True)
            print(f"run_dir: {run_dir}", flush=True)
            return claimed.final
        if writer:
            write_hydra_files(dcfg, run_dir)
            run_log = logging.FileHandler(run_dir / f"{hydra_cfg.job.name}.log")
            run_log.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
            logging.getLogger().addHandler(run_log)
            handlers.append(run_log)
            early.setTarget(run_log)
            early.flush()
        logging.getLogger().removeHandler(early)
        choices = {group: choice for group, choice in hydra_cfg.runtime.choices.items()
                   if choice is not None and not group.startswith("hydra")}
        final = train(cfg, run_dir, choices=choices, dir_key=dir_key, data=data)
    except OSError as err:  # disk full, quota, a folder turned read-only: name the file and its key
        message = rundir.write_fault_message(err, places)
        if message is None:
            raise
        logging.getLogger(__name__).error(message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
        if claimed is not None and claimed.held:
            rundir.release(run_dir)
    print(f"run_dir: {run_dir}", flush=True)
    return final


def write_hydra_files(dcfg: DictConfig, run_dir: Path) -> None:
    """What Hydra's output_subdir held: the job's config, Hydra's, and the command-line overrides."""
    from care.atomic import write_text_atomic

    hydra_dir = run_dir / ".hydra"
    write_text_atomic(hydra_dir / "config.yaml", OmegaConf.to_yaml(dcfg))
    write_text_atomic(hydra_dir / "hydra.yaml", OmegaConf.to_yaml(HydraConfig.instance().cfg))
    write_text_atomic(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    if "task=plan" in sys.argv[1:]:
        plan(sys.argv[1:])
    else:
        main()
