"""The verifier as a TRL reward function.

TRL (GRPOTrainer._calculate_rewards) calls `reward_func(prompts=..., completions=..., completion_ids=...,
**columns)` where every other dataset column arrives as a list with one entry per completion, plus
`trainer_state`, `log_extra` and `log_metric`. It wants one float (or None, logged as NaN and ignored)
per completion, and names the function by its `__name__`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from care.verifiers.core import verify_batch
from care.verifiers.extraction import is_well_formed
from care.verifiers.pool import DEFAULT_TIMEOUT_S


def completion_text(completion: Any) -> str:
    """Plain text of a completion: a string, a message dict, or a list of messages (assistant turns joined).

    Message content may itself be a list of parts `[{"type": "text", "text": ...}]`; non-text parts are skipped.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    messages = list(completion)
    assistant = [m for m in messages if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
    return "".join(_content_text(message.get("content")) for message in assistant or messages)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") == "text":
            parts.append(str(part.get("text", "")))
    return "".join(parts)


class VerifierReward:
    """Reward = 1.0 for a correct answer, else 0.0 (the format has its own reward, `FormatReward`).

    Reads the dataset columns `answer` (gold), `answer_type` and optional `choices`. A row whose gold
    is None gets reward None (TRL logs NaN and leaves it out). A class rather than a closure so that the
    reward pickles (TRL and accelerate may ship reward functions to other processes).
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, name: str = "verifier_accuracy",
                 extraction: str = "lenient", flip_rate: float = 0.0):
        self.extraction = extraction  # the answer rule: "strict" in training (care.verifiers.extraction)
        self.timeout_s = timeout_s
        # `rl.reward_noise`: the share of verdicts flipped, drawn from torch's generator, which the trainer
        # seeds per (seed, step, rank) before sampling, so a resumed run flips the same ones
        self.flip_rate = flip_rate
        self.__name__ = name

    def __repr__(self) -> str:
        return f"VerifierReward(timeout_s={self.timeout_s}, name={self.__name__!r})"

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        completion_ids: Sequence[Any] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        if completions is None:
            raise ValueError(f"{self.__name__} needs `completions`")
        for column in ("answer", "answer_type"):
            if column not in columns:
                raise ValueError(
                    f"{self.__name__} needs the dataset column {column!r}; got {sorted(columns)}"
                )
        count = len(completions)
        golds, answer_types = list(columns["answer"]), list(columns["answer_type"])
        choices = columns.get("choices")
        choice_lists = list(choices) if choices is not None else [None] * count
        if not len(golds) == len(answer_types) == len(choice_lists) == count:
            raise ValueError(f"{self.__name__}: columns and completions differ in length")
        scored = [index for index in range(count) if golds[index] is not None]
        results = verify_batch(
            [completion_text(completions[index]) for index in scored],
            [golds[index] for index in scored],
            [answer_types[index] for index in scored],
            [choice_lists[index] for index in scored],
            timeout_s=self.timeout_s,
            extraction=self.extraction,
        )
        rewards: list[float | None] = [None] * count
        flips = [False] * len(scored)
        if self.flip_rate > 0:
            import torch

            flips = (torch.rand(len(scored)) < self.flip_rate).tolist()
        for index, result, flip in zip(scored, results, flips, strict=True):
            rewards[index] = float(result.correct != flip)
        self._log(columns.get("log_metric"), results)
        return rewards

    def _log(self, log_metric: Callable[[str, float], None] | None, results: list) -> None:
        if log_metric is None or not results:
            return
        log_metric(f"{self.__name__}/formatted", sum(r.formatted for r in results) / len(results))
        log_metric(f"{self.__name__}/timeouts", float(sum(r.timed_out for r in results)))


class FormatReward:
    """1.0 for a well-formed `<think>...</think><answer>...</answer>` response, else 0.0.

    The trainer weighs it by `rl.format_weight` through TRL's `reward_weights`, beside the accuracy
    reward, so TRL logs the two apart and the objective reads correctness alone.
    """

    __name__ = "format"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] | None = None,
                 completion_ids: Sequence[Any] | None = None, **columns: Any) -> list[float]:
        if completions is None:
            raise ValueError(f"{self.__name__} needs `completions`")
        return [float(is_well_formed(completion_text(completion))) for completion in completions]


def make_reward_fn(timeout_s: float = DEFAULT_TIMEOUT_S) -> VerifierReward:
    """A TRL reward function: 1.0 for a correct answer."""
    return VerifierReward(timeout_s=timeout_s)
