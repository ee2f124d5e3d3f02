"""One CPU rank of a 2-process training job through `care.pipeline.train` (gloo), for tests/test_eval_phases.py."""

import sys
from pathlib import Path


def run_rank(rank: int, world: int, port: int, cache_dir: str, run_dir: str, engine: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.dist_worker import join_as_rank

    join_as_rank(rank, world, port)
    from care.config import ColdStartConfig, EvalConfig
    from care.pipeline import train
    from tests.trainer_helpers import tiny_config

    cfg = tiny_config(Path(cache_dir), "care", steps=1, prompts_per_rollout=2, num_generations=4)
    cfg.threads = 1
    cfg.data.eval_size = 5  # split 2 + 3 between the ranks
    cfg.cold_start = ColdStartConfig(name="none")
    cfg.eval = EvalConfig(engine=engine, seeds=[0, 1], max_new_tokens=8, batch_size=8)
    train(cfg, run_dir)
