"""The command of the tests' one tiny training run (tests/conftest.py's `tiny_run`; test_resume reruns it)."""

import sys

TINY_RUN_STEPS = 3


def tiny_run_command(run_dir, cache_dir) -> list[str]:
    """A default-shaped run cut to seconds, checkpointing every step (test_resume kills and resumes it)."""
    return [sys.executable, "run.py", f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}", "data.train_size=48",
            "data.eval_size=8", "cold_start.num_demos=96", "cold_start.epochs=1", f"rl.steps={TINY_RUN_STEPS}",
            "rl.save_steps=1", "rl.prompts_per_rollout=2", "rl.num_generations=4", "rl.format_weight=1.0",
            "eval.batch_size=8"]
