"""Run identity: one short key per semantic configuration, and a digest of the data it trains on.

Two jobs with the same science (same algorithm, data, backbone, seeds, objective options)
share a `run_key`, whatever machine, cache or logging they used; `label` makes a
deliberate rerun a new run. The key names the W&B run and is what resume and the
analysis deduplicate on. run.json records it with `data_digest`, the content of the training
records: a run directory is resumed or reported only by a job with the same key and the same data
(care.run_dir).
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any

from care.config import Config
from care.hashing import config_hash

# keys that change where or how a run is recorded, not what it computes
# eval.batch_size is not among them: how the evaluation prompts are batched moves sampled scores (the RNG
# draws per batch) and greedy ones by padding, so the before-RL cache keys on it (care.evaluation.harness)
# and so does the run
INFRA_KEYS = ("cache_dir", "data_root", "threads", "wandb", "sweep", "cluster", "parallel",
              "start_over")  # how, not what


def semantic_dict(config: dict) -> dict:
    """The semantic part of a config as a dict (`asdict(cfg)`, or run.json's "config" of an older run)."""
    config = copy.deepcopy(config)
    if (config.get("algorithm") or {}).get("name") != "care":  # the objective and RGR options do not touch GRPO, DAPO or GSPO
        config.pop("care", None)
        config.pop("rgr", None)
    for key in INFRA_KEYS:
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.get(parent) or {}
        node.pop(leaf, None)
    return config


def semantic_config(cfg: Config) -> dict:
    return semantic_dict(asdict(cfg))


def run_key(cfg: Config) -> str:
    return config_hash("run/v1", semantic_config(cfg))


def flat_keys(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"rl": {"steps": 3}} -> {"rl.steps": 3}; lists and empty dicts are leaves."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flat_keys(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def semantic_differences(old_config: dict, cfg: Config) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for each semantic key where an older run's config and `cfg` differ."""
    old, new = flat_keys(semantic_dict(old_config)), flat_keys(semantic_config(cfg))
    missing = object()
    return [(key, old.get(key, missing), new.get(key, missing)) for key in sorted(set(old) | set(new))
            if old.get(key, missing) != new.get(key, missing)]


_DIGESTS: dict[int, tuple[Any, str]] = {}


def data_digest(data) -> str:
    """Digest of every train and held-out record's content (care.evaluation.harness.record_digest: text,
    answer, image bytes) of a TrainingData (care.data.training.prepare): the same config over changed data
    is another run. Remembered per TrainingData object (run.py and the pipeline ask for the same one)."""
    from care.evaluation.harness import record_digest
    from care.hashing import digest

    known = _DIGESTS.get(id(data))
    if known is not None and known[0] is data:
        return known[1]
    parts = [f"train:{record_digest(r)}\n" for r in data.train] + [f"held_out:{record_digest(r)}\n" for r in data.held_out]
    value = digest("data/v1\n", *parts, length=16)
    _DIGESTS.clear()
    _DIGESTS[id(data)] = (data, value)
    return value
