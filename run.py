"""Command-line entry: compose conf/, validate it, hand a typed Config to the core.

This is the only module that imports Hydra. `python run.py` trains the default job;
`python run.py -m ...` runs sweeps. Bad keys or values fail here, before any work starts.
The last line printed is `run_dir: <path>`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path as hydra_absolute_path
from omegaconf import DictConfig, OmegaConf

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


def to_config(dcfg: DictConfig) -> Config:
    """Typed, value-checked config (dataclass __post_init__ runs here)."""
    cfg: Config = OmegaConf.to_object(dcfg)
    cfg.cache_dir = to_absolute_path(cfg.cache_dir)
    if cfg.backbone.path:
        cfg.backbone.path = to_absolute_path(cfg.backbone.path)
    if cfg.checkpoint:
        cfg.checkpoint = to_absolute_path(cfg.checkpoint)
    if cfg.data.path:
        cfg.data.path = to_absolute_path(cfg.data.path)
    for name, path in vars(cfg.eval.paths).items():
        if path:
            setattr(cfg.eval.paths, name, to_absolute_path(path))
    return cfg


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    from care.pipeline import preflight, train

    try:
        cfg = to_config(dcfg)
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
    main()
