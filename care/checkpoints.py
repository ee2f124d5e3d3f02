"""Trainer checkpoints on disk: which one a killed or requeued job resumes from.

RL (care.pipeline) and the SFT cold start (care.coldstart) both save Trainer checkpoints every N steps
and, started again after a kill, a SLURM requeue or a time-limit requeue, resume from the newest
complete one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def is_complete(checkpoint: Path) -> bool:
    """Whether the Trainer finished writing `checkpoint`: it writes trainer_state.json last."""
    try:
        json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def _step(path: Path) -> int | None:
    try:
        return int(path.name.removeprefix("checkpoint-"))
    except ValueError:
        return None


def newest_checkpoint(directory: Path) -> str | None:
    """The newest complete Trainer checkpoint on disk (never from a pickled submission).

    The Trainer writes trainer_state.json last, so a checkpoint cut short by a kill has none (or
    a truncated one) and is passed over for the one before it.
    """
    directory = Path(directory)
    steps = []
    for path in directory.glob("checkpoint-*"):
        step = _step(path)
        if step is not None and is_complete(path):
            steps.append((step, path))
    return str(max(steps)[1]) if steps else None


def drop_incomplete(directory: Path) -> list[Path]:
    """Remove the checkpoints a kill cut short (no readable trainer_state.json); returns them.

    The Trainer would write into such a folder again when it reaches that step, over whatever the
    killed save left there, and rotate the complete ones out by modification time around it.
    """
    directory = Path(directory)
    dropped = [path for path in directory.glob("checkpoint-*")
               if path.is_dir() and _step(path) is not None and not is_complete(path)]
    for path in dropped:
        shutil.rmtree(path, ignore_errors=True)
    return dropped


def resume_point(directory: Path) -> str | None:
    """The checkpoint every process of this job resumes from: rank 0 drops what a kill cut short and
    picks the newest complete one; every rank gets its choice (None: start from step 0)."""
    from care.distributed import is_main_process, main_process_decides

    chosen = None
    if is_main_process():
        drop_incomplete(directory)
        chosen = newest_checkpoint(directory)
    return main_process_decides(chosen)


class ResumableTrainer:
    """Mixin for a transformers Trainer (before it in the bases): resuming restores every weight.

    The Trainer loads a checkpoint's raw safetensors keys with strict=False; transformers 5 saves
    Qwen-VL weights under their hub names (model.layers.*), which match none of the in-memory names
    (model.language_model.layers.*), so a resumed run silently kept its initial weights.
    from_pretrained maps the names; strict=True makes a miss an error. And transformers maps the
    optimizer state to args.device when several processes train; on CPU that is 'cpu:0', which
    torch.load cannot restore to, so a multi-process CPU job (gloo) loads it onto 'cpu'.
    RL's CareGRPOTrainer and the cold start's trainer both take it. A checkpoint is published by the
    trainer_state.json the Trainer writes last (`is_complete`); a save that fails for want of room or
    permission is raised naming the checkpoint folder (care.atomic.WriteFault).
    """

    def _save_checkpoint(self, model, trial):
        from care.atomic import writing

        with writing(self.args.output_dir):
            return super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        if self.is_fsdp_enabled or self.is_deepspeed_enabled or hasattr(target, "peft_config"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(target).from_pretrained(resume_from_checkpoint, dtype=next(target.parameters()).dtype)
        target.load_state_dict(loaded.state_dict(), strict=True)
        del loaded

    def _load_optimizer_and_scheduler(self, checkpoint):
        import os

        import torch

        cpu_processes = self.args.world_size > 1 and self.args.device.type == "cpu"
        if checkpoint is None or not cpu_processes or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_optimizer_and_scheduler(checkpoint)
        from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME

        optimizer_file = os.path.join(checkpoint, OPTIMIZER_NAME)
        if os.path.isfile(optimizer_file):
            self.optimizer.load_state_dict(torch.load(optimizer_file, map_location="cpu", weights_only=True))
            self.lr_scheduler.load_state_dict(torch.load(os.path.join(checkpoint, SCHEDULER_NAME), weights_only=True))
