"""The shared RL trainer (TRL GRPOTrainer underneath) and its run-file logging."""

from care.trainer.build import MetricsCallback, build_trainer, grpo_args

__all__ = ["MetricsCallback", "build_trainer", "grpo_args"]
