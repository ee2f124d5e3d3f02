"""Run identity: one short key per semantic configuration.

Two jobs with the same science (same algorithm, data, backbone, seeds, objective options)
share a `run_key`, whatever machine, cache or logging they used; `label` makes a
deliberate rerun a new run. The key names the W&B run and is what resume and the
analysis deduplicate on.
"""

from __future__ import annotations

from dataclasses import asdict

from care.config import Config
from care.hashing import config_hash

# keys that change where or how a run is recorded, not what it computes
INFRA_KEYS = ("cache_dir", "data_root", "threads", "wandb", "sweep", "eval.batch_size", "cluster", "parallel")  # how, not what


def semantic_config(cfg: Config) -> dict:
    config = asdict(cfg)
    if cfg.algorithm.name != "care":  # the objective and RGR options do not touch GRPO, DAPO or GSPO
        config.pop("care")
        config.pop("rgr")
    for key in INFRA_KEYS:
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node.pop(leaf, None)
    return config


def run_key(cfg: Config) -> str:
    return config_hash("run/v1", semantic_config(cfg))
