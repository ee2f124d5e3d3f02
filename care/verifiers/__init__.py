"""Answer verification for `<think>...</think><answer>...</answer>` responses: the RL reward and the eval scorer.

    verify(response, gold, answer_type, choices=None) -> VerifyResult(correct, formatted, parsed, ...)
    verify_batch(responses, golds, answer_types, choices=None) -> list[VerifyResult]
    make_reward_fn() -> TRL reward function (accuracy); FormatReward() -> TRL reward function (format)

answer_type is "math" (math-verify equivalence, `math_answers`), "choice" (letters A-J, `choices`) or
"text" (normalised exact match, `text_answers`). Where the answer is taken from: `extraction`, "strict"
by default here as in the product (`rl.extraction`, `eval.extraction`); "lenient" adds fallbacks for
untrained models and never reads inside `<think>`.
Math comparisons that need math-verify run in a worker pool with a deadline (`pool`); importing this
package does not import math-verify, sympy or torch.
"""

from care.verifiers.core import ANSWER_TYPES, VerifyResult, verify, verify_batch
from care.verifiers.extraction import MAX_ANSWER_CHARS, extract_answer, is_well_formed
from care.verifiers.pool import (
    DEFAULT_TIMEOUT_S,
    VerifierPool,
    WorkerStartError,
    configure_pool,
    get_pool,
    shutdown_pool,
)
from care.verifiers.reward import FormatReward, VerifierReward, completion_text, make_reward_fn

__all__ = [
    "ANSWER_TYPES",
    "DEFAULT_TIMEOUT_S",
    "FormatReward",
    "MAX_ANSWER_CHARS",
    "VerifierPool",
    "VerifierReward",
    "VerifyResult",
    "WorkerStartError",
    "completion_text",
    "configure_pool",
    "extract_answer",
    "get_pool",
    "is_well_formed",
    "make_reward_fn",
    "shutdown_pool",
    "verify",
    "verify_batch",
]
