"""`verify` and `verify_batch`: score responses against gold answers.

Choice and text answers are decided in the caller's process (bounded string work on at most
`MAX_ANSWER_CHARS`). Math answers first try `quick_math_verdict` in-process; only the rest goes to the
worker pool, where each comparison has a deadline and a stuck worker is killed and replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from care.verifiers.choices import gold_letter, response_letter
from care.verifiers.extraction import extract_answer, is_well_formed
from care.verifiers.math_answers import clean_math_answer, math_equal, quick_math_verdict
from care.verifiers.pool import DEFAULT_TIMEOUT_S, MathOutcome, get_pool
from care.verifiers.text_answers import normalize_text, text_equal

ANSWER_TYPES = ("math", "choice", "text")


@dataclass(frozen=True)
class VerifyResult:
    """One scored response.

    correct:    the extracted answer matches the gold.
    formatted:  the response is exactly `<think>...</think><answer>...</answer>` (see `is_well_formed`).
    parsed:     the extracted answer string (see `extract_answer`), None when there is none.
    prediction: what was compared: the letter (choice), the normalised text (text), the cleaned math.
    timed_out:  math-verify missed the deadline (then correct is False).
    """

    correct: bool
    formatted: bool
    parsed: str | None
    prediction: str | None = None
    timed_out: bool = False


def _check_answer_type(answer_type: str) -> None:
    if answer_type not in ANSWER_TYPES:
        raise ValueError(
            f"answer_type must be one of {', '.join(map(repr, ANSWER_TYPES))}; got {answer_type!r}"
        )


def _prepare(
    response: str | None, gold: object, answer_type: str, choices: Sequence[str] | None, extraction: str
) -> tuple[VerifyResult, tuple[str, str] | None]:
    """A result, plus the (prediction, gold) math job still to run when the quick verdict is undecided."""
    _check_answer_type(answer_type)
    if gold is None:
        raise ValueError("gold is None: every verified example needs a gold answer")
    if isinstance(choices, str):
        raise TypeError("choices must be a list of option strings (index 0 = A), not a single string")
    response = response or ""
    gold_text = str(gold)
    formatted = is_well_formed(response)
    parsed = extract_answer(response, extraction)
    if answer_type == "choice":
        expected = gold_letter(gold_text, choices)
        letter = response_letter(parsed, choices) if parsed else None
        return VerifyResult(letter == expected, formatted, parsed, letter), None
    if parsed is None:
        return VerifyResult(False, formatted, None), None
    if answer_type == "text":
        return VerifyResult(text_equal(parsed, gold_text), formatted, parsed, normalize_text(parsed)), None
    result = VerifyResult(False, formatted, parsed, clean_math_answer(parsed).text)
    verdict = quick_math_verdict(parsed, gold_text)
    if verdict is not None:
        return replace(result, correct=verdict), None
    return result, (parsed, gold_text)


def _broadcast(value: object, count: int, name: str) -> list:
    if value is None or isinstance(value, str):
        return [value] * count
    values = list(value)  # type: ignore[call-overload]
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries but there are {count} responses")
    return values


def verify_batch(
    responses: Sequence[str],
    golds: Sequence[object],
    answer_types: Sequence[str] | str,
    choices: Sequence[Sequence[str] | None] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    in_process: bool = False,
    extraction: str = "strict",
) -> list[VerifyResult]:
    """Score many responses; undecided math comparisons (each distinct one once) fan out over the worker pool.

    `answer_types` may be one string for all. `in_process=True` runs math-verify here with NO deadline:
    for benchmarks and debugging only, never on untrusted text in a trainer. `extraction` is the answer
    rule (`care.verifiers.extraction`): "strict" in training, "lenient" adds the fallbacks.
    """
    count = len(responses)
    golds = _broadcast(golds, count, "golds")
    types = _broadcast(answer_types, count, "answer_types")
    choice_lists = [None] * count if choices is None else _broadcast(choices, count, "choices")
    prepared = [
        _prepare(response, gold, answer_type, options, extraction)
        for response, gold, answer_type, options in zip(responses, golds, types, choice_lists, strict=True)
    ]
    results = [result for result, _ in prepared]
    # identical (prediction, gold) pairs, common within a GRPO group, are verified once
    jobs = list(dict.fromkeys(job for _, job in prepared if job is not None))
    if jobs:
        if in_process:
            outcomes = [MathOutcome(correct=math_equal(*job)) for job in jobs]
        else:
            outcomes = get_pool().run(jobs, timeout_s=timeout_s)
        outcome_of = dict(zip(jobs, outcomes, strict=True))
        for index, (_, job) in enumerate(prepared):
            if job is not None:
                outcome = outcome_of[job]
                results[index] = replace(results[index], correct=outcome.correct, timed_out=outcome.timed_out)
    return results


def verify(
    response: str,
    gold: object,
    answer_type: str,
    choices: Sequence[str] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    in_process: bool = False,
    extraction: str = "strict",
) -> VerifyResult:
    """Score one response against its gold; `answer_type` is 'math', 'choice' or 'text'."""
    return verify_batch(
        [response], [gold], [answer_type], [choices], timeout_s=timeout_s, in_process=in_process,
        extraction=extraction,
    )[0]
