"""One evaluation in a process of its own, for tests/test_eval_resume.py to kill.

    python -m tests.eval_build eval BACKBONE_CACHE RUN_DIR     # task=eval through care.pipeline.train
    python -m tests.eval_build before BACKBONE_CACHE CACHE_DIR  # the before-RL phase into CACHE_DIR/eval/

Both score the tiny backbone from BACKBONE_CACHE with sampling over SEEDS on two benchmarks (the
held-out synthetic slice and the MathVista fixture), so there are several (benchmark, seed) passes,
each a few tenths of a second. Logs at INFO on stderr (the resume line).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [0, 1, 2, 3, 4, 5]
BENCHMARKS = ["synthetic", "mathvista"]


def config(cache_dir: Path, task: str):
    from care.config import Config, DataConfig, EvalConfig, EvalPaths

    cfg = Config(task=task, cache_dir=str(cache_dir), data=DataConfig(train_size=16, eval_size=24),
                 eval=EvalConfig(benchmarks=BENCHMARKS, paths=EvalPaths(mathvista=str(ROOT / "tests/fixtures/mathvista")),
                                 seeds=SEEDS, do_sample=True, max_new_tokens=48, batch_size=8))
    cfg.wandb.mode = "disabled"
    return cfg


def main(mode: str, backbone_cache: str, out: str) -> None:
    import logging

    import torch

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    torch.set_num_threads(2)
    if mode == "eval":
        from care.pipeline import train

        train(config(Path(backbone_cache), "eval"), out)
        return
    from care.data.synthetic import splits_from_config
    from care.evaluation.harness import before_after_benchmarks, before_rl
    from care.models import resolve_backbone

    cfg = config(Path(out), "train")
    backbone_dir = resolve_backbone(cfg.backbone, Path(backbone_cache))
    _, held_out = splits_from_config(cfg.data)
    benchmarks, macro_of = before_after_benchmarks(cfg, held_out)
    before_rl(cfg, backbone_dir, benchmarks, macro_of, eval_dir=None)


if __name__ == "__main__":
    main(*sys.argv[1:])
