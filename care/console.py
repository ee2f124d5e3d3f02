"""What a person watching a run sees: a header per phase, progress with ETA, one short line per step,
and the before/after scores as a table at the end.

On a terminal progress is a tqdm bar; in a log file (SLURM's, `run.log`) it is a plain line every
`PLAIN_EVERY_S` seconds and at the end, so a log is readable and stays small. Only rank 0 speaks.
Everything goes through `logging` (logger `care.console`), so run.log holds it too.
"""

from __future__ import annotations

import logging
import math
import sys
import time

from transformers import TrainerCallback

log = logging.getLogger("care.console")

PLAIN_EVERY_S = 60.0
RULE = "─" * 8
# the few metrics that matter in a step line, by their logged names (care.trainer, docs/method.md §8)
STEP_FIELDS = (("reward", "train/reward", "{:.3f}"), ("acc", "train/accuracy", "{:.3f}"),
               ("kl", "train/kl", "{:.3f}"), ("zero-signal", "signal/zero_signal_groups", "{:.2f}"),
               ("repair", "rgr/repair_rate", "{:.2f}"), ("rounds", "dynamic/rounds", "{:.0f}"),
               ("filled", "dynamic/filled_fraction", "{:.2f}"))
SFT_FIELDS = (("loss", "train/loss", "{:.4f}"), ("token-acc", "train/mean_token_accuracy", "{:.3f}"))


def speaks() -> bool:
    from care.distributed import is_main_process

    return is_main_process()


def on_terminal() -> bool:
    return sys.stderr.isatty()


def header(number: int, total: int, title: str, detail: str) -> None:
    """`──────── 2/5 before RL: reusing <dir> ────────`: what the phase does, built or reused."""
    if speaks():
        log.info("%s %d/%d %s: %s %s", RULE, number, total, title, detail, RULE)


def duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def step_line(step: int, total: int, logs: dict, seconds_per_step: float | None, fields=STEP_FIELDS) -> str:
    """`step 12/60 | reward 0.412 | acc 0.375 | kl 0.021 | zero-signal 0.25 | 3.1 s/step | ETA 2m26s`."""
    parts = [f"step {step}/{total}"]
    for label, key, form in fields:
        value = logs.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{label} {form.format(value)}")
    if seconds_per_step:
        parts.append(f"{seconds_per_step:.1f} s/step")
        parts.append(f"ETA {duration((total - step) * seconds_per_step)}")
    return " | ".join(parts)


class Progress:
    """Progress through `total` units with an ETA: a tqdm bar on a terminal, else a line now and then."""

    def __init__(self, total: int, desc: str, unit: str = "it"):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self.started = self.last_line = time.monotonic()
        self.bar = None
        if speaks() and on_terminal() and total > 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if speaks() and (now - self.last_line >= PLAIN_EVERY_S or self.done >= self.total):
            self.last_line = now
            rate = (now - self.started) / max(self.done, 1)
            log.info("%s: %d/%d %s, ETA %s", self.desc, self.done, self.total, self.unit,
                     duration((self.total - self.done) * rate))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def score_table(before: dict, after: dict, macro_of: list[str] | None = None) -> str:
    """The before/after scores per benchmark (final.json's flat `before`/`after`), with the change."""
    names = [name for name, value in after.items()
             if isinstance(value, (int, float)) and name not in ("macro", "macro_std", "n", "seeds")]
    rows = [(name, before.get(name), after[name]) for name in names] + [("macro", before.get("macro"), after.get("macro"))]
    width = max(len(name) for name, _, _ in rows)

    def cell(value) -> str:
        return f"{value:6.1f}" if isinstance(value, (int, float)) else f"{'-':>6}"

    lines = [f"{'benchmark':<{width}}  {'before':>6}  {'after':>6}  {'change':>6}"]
    for name, old, new in rows:
        change = f"{new - old:+6.1f}" if isinstance(old, (int, float)) and isinstance(new, (int, float)) else f"{'':>6}"
        lines.append(f"{name:<{width}}  {cell(old)}  {cell(new)}  {change}")
    return "\n".join(lines)


def quiet_trainer(trainer, title: str, fields=STEP_FIELDS):
    """Give a transformers Trainer this console: one step line per log (not the 50-key dict transformers'
    PrinterCallback prints), and a progress bar over its steps on a terminal."""
    from transformers import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StepConsole(title, fields))
    return trainer


class StepConsole(TrainerCallback):
    """A Trainer callback: `step_line` at each log, a `Progress` bar over the steps on a terminal."""

    def __init__(self, title: str, fields=STEP_FIELDS):
        self.title, self.fields = title, fields
        self.progress = None
        self.started, self.first_step = time.monotonic(), 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first_step = time.monotonic(), state.global_step
        if on_terminal():
            self.progress = Progress(state.max_steps - state.global_step, self.title, unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_runtime" in logs or not speaks():  # the end-of-training summary is not a step
            return
        named = {(key if "/" in key else f"train/{key}"): value for key, value in logs.items()}
        done = state.global_step - self.first_step
        per_step = (time.monotonic() - self.started) / done if done > 0 else None
        line = step_line(state.global_step, state.max_steps, named, per_step, self.fields)
        if self.progress is not None and self.progress.bar is not None:
            self.progress.bar.write(f"{self.title}: {line}")
        else:
            log.info("%s: %s", self.title, line)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.close()
