"""Build a real CareGRPOTrainer on a tiny backbone for tests (shared by the trainer tests)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import yaml

from care.config import AlgorithmConfig, Config, DataConfig, RGRConfig, RLConfig

PRESETS = Path(__file__).resolve().parents[1] / "conf" / "algorithm"


def algorithm_preset(name: str) -> AlgorithmConfig:
    """The shipped conf/algorithm/<name>.yaml over AlgorithmConfig's defaults, so tests exercise what users run."""
    return AlgorithmConfig(**yaml.safe_load((PRESETS / f"{name}.yaml").read_text())["algorithm"])


def tiny_config(cache_dir: Path, algorithm: str = "care", rgr: RGRConfig | None = None, **rl) -> Config:
    """RGR is off unless `rgr` is given: most trainer tests check the objective path on its own."""
    cfg = Config(cache_dir=str(cache_dir), data=DataConfig(train_size=32, eval_size=4),
                 rgr=rgr or RGRConfig(enabled=False),
                 rl=RLConfig(steps=2, prompts_per_rollout=2, num_generations=4, max_completion_length=24,
                             learning_rate=1e-3), algorithm=algorithm_preset(algorithm))
    cfg.rl = replace(cfg.rl, **rl)
    cfg.wandb.mode = "disabled"
    return cfg


def parity_reward(completions, **kwargs) -> list[float]:
    """Varies on any text, so a random tiny policy still gets a learning signal (as in TRL's trainer tests)."""
    return [float(len(c if isinstance(c, str) else c[0]["content"]) % 2) for c in completions]


def half_the_prompts_teach(prompts, completions, id, **kwargs) -> list[float]:
    """Parity of the response length for half of the prompts (by id); 0 for the rest, whose groups
    then carry no signal: dynamic sampling's round 1 leaves slots for later rounds to fill."""
    return [float(len(c[0]["content"]) % 2) if sum(map(ord, str(i))) % 2 else 0.0
            for i, c in zip(id, completions, strict=True)]


def build_tiny_trainer(cfg: Config, out_dir: Path, reward_funcs=(parity_reward,)):
    from datasets import Dataset

    from care.data.schema import to_prompt_row
    from care.data.synthetic import splits_from_config
    from care.models import load_processor, resolve_backbone
    from care.seeding import seed_everything
    from care.trainer import build_trainer

    os.environ.setdefault("WANDB_MODE", "disabled")
    seed_everything(cfg.seed, cfg.threads)
    train_records, _ = splits_from_config(cfg.data)
    source = resolve_backbone(cfg.backbone, cfg.cache_dir)
    processor = load_processor(source, cfg.backbone.family)
    dataset = Dataset.from_list([to_prompt_row(r) for r in train_records])
    return build_trainer(cfg, source, processor, dataset, out_dir, reward_funcs=list(reward_funcs) or None)
