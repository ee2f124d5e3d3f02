"""Build one small synthetic cold start in a process of its own, for tests/test_coldstart_resume.py to kill.

    python -m tests.coldstart_build BACKBONE_CACHE BUILD_CACHE

The tiny backbone comes from BACKBONE_CACHE (built there once per test session); the cold start is built
into BUILD_CACHE/cold_start/, so two builds in two caches train the same thing from the same weights.
Logs at INFO on stderr (the resume line) and prints the published cold start's path last.
"""

from __future__ import annotations

import sys
from pathlib import Path

# 96 demonstrations in batches of 4: 24 optimizer steps (seconds on CPU), a checkpoint every 4
NUM_DEMOS, BATCH_SIZE, SAVE_STEPS = 96, 4, 4
STEPS = NUM_DEMOS // BATCH_SIZE


def config(cache_dir: Path):
    from care.config import ColdStartConfig, Config, DataConfig

    cfg = Config(cache_dir=str(cache_dir), data=DataConfig(train_size=32, eval_size=4),
                 cold_start=ColdStartConfig(num_demos=NUM_DEMOS, epochs=1.0, batch_size=BATCH_SIZE,
                                            save_steps=SAVE_STEPS))
    cfg.wandb.mode = "disabled"
    return cfg


def main(backbone_cache: str, build_cache: str) -> None:
    import logging

    import torch

    from care.coldstart import cold_start_policy
    from care.data.synthetic import splits_from_config
    from care.models import resolve_backbone

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    torch.set_num_threads(2)
    cfg = config(Path(build_cache))
    backbone_dir = resolve_backbone(cfg.backbone, Path(backbone_cache))
    train_records, _ = splits_from_config(cfg.data)
    print(cold_start_policy(cfg, train_records, backbone_dir, Path(build_cache)), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
