"""Math answers: a thin normalisation in front of math-verify, plus exact fast paths.

math-verify already handles fractions, decimals, LaTeX, intervals, sets, equations ("x=3" vs "3"),
degrees and its own unit list. It falls short on what lands in our answer spans, so `clean_math_answer`
adds only this (to response and gold alike):
  - bare LaTeX: the answer is parsed inside `$...$` (math-verify needs a math environment), after
    unwrapping the last `\\boxed{}`, outer `$`/`\\(`/`\\[` delimiters, a whole-answer `\\text{}`, and a
    leading "the answer is"/"answer:"; a trailing `.`/`;` is dropped and "°" becomes `^\\circ`;
  - percent: math-verify reads `50\\%` as 50 and `\\boxed{50%}` not at all, so the percent sign is
    stripped here and remembered. PERCENT RULE: when exactly one side carries a percent sign, X% matches
    both X and X/100 (gold "50%" accepts "50", "0.5", "1/2"); when both or neither carry one, the numbers
    compare as written (so "0.5%" is not "50%");
  - unit words math-verify does not know ("12 dollars", "5 m/s", "6 \\text{cm}^2") after a plain number
    are dropped, unless the word is a math name (pi, sqrt, sin, ...);
  - scientific notation "1.2e3" becomes `1.2\\times 10^{3}`.
A prose answer (three plain words in a row) goes to math-verify as is, so its own anchored extraction
("... the answer is $12$") applies.

Guards (not fast paths): empty answers and answers nested deeper than `MAX_NESTING` brackets are
incorrect without parsing (math-verify needs seconds on 500 nested `\\frac` and would say False anyway).

Fast paths, which agree with math-verify by construction and by test: identical cleaned answers are
correct; two plain decimal numbers (at most 12 digits) are equal when their values are equal and unequal
when they differ by more than 1e-5 (math-verify rounds floats to 6 places); anything closer is left to it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, lru_cache
from types import ModuleType

from care.verifiers.extraction import MAX_ANSWER_CHARS, last_boxed

MAX_NESTING = 32
_MAX_FAST_DIGITS = 12
_FAST_PATH_TOLERANCE = Decimal("1e-5")

_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|:|=)?\s*", re.IGNORECASE)
_WHOLE_TEXT = re.compile(r"\\(?:text|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_PERCENT_SUFFIX = re.compile(
    r"\s*(?:\\?%|\\text\s*\{\s*\\?%\s*\}|\\text\s*\{\s*percent(?:age)?\s*\}|\s+percent(?:age)?|\s*pct)$",
    re.IGNORECASE,
)
_SCIENTIFIC = re.compile(r"(-?\d+(?:\.\d+)?)[eE]([+-]?\d+)")
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_UNIT_TOKEN = r"(?:\\(?:text|textrm|mathrm|mbox)\s*\{[^{}]*\}|[A-Za-z]+(?:/[A-Za-z]+)+|[A-Za-z]{2,})(?:\^\{?[23]\}?|[²³])?"
_UNIT_GAP = r"(?:\s|\\[,;:! ]|~)"
_NUMBER_WITH_UNIT = re.compile(
    rf"(?P<number>{_NUMBER})(?P<unit>{_UNIT_GAP}*{_UNIT_TOKEN}(?:(?:{_UNIT_GAP}|/)+{_UNIT_TOKEN})*)"
)
_MATH_NAMES = frozenset(
    "pi sqrt sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh ln log exp lg mod inf infty "
    "infinity frac dfrac tfrac cdot times div circ deg degree degrees theta alpha beta gamma".split()
)
_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}\s+[A-Za-z]{2,}\s+[A-Za-z]{2,}")
_PLAIN_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?")


@dataclass(frozen=True)
class MathAnswer:
    """A cleaned answer: the text handed to math-verify and whether a percent sign was stripped."""

    text: str
    percent: bool = False


def _strip_delimiters(text: str) -> str:
    changed = True
    while changed:
        changed = False
        for opening, closing in _DELIMITERS:
            if (
                len(text) >= len(opening) + len(closing)
                and text.startswith(opening)
                and text.endswith(closing)
            ):
                text = text[len(opening) : len(text) - len(closing)].strip()
                changed = True
    return text


def _drop_units(text: str) -> str:
    match = _NUMBER_WITH_UNIT.fullmatch(text)
    if match is None:
        return text
    words = re.findall(r"[A-Za-z]+", _WHOLE_TEXT.sub(r"\1", match.group("unit")).replace("\\text", ""))
    if any(word.lower() in _MATH_NAMES for word in words):
        return text
    return match.group("number")


def clean_math_answer(raw: str) -> MathAnswer:
    """Apply the module's normalisation; see the module docstring for each step and why."""
    text = raw[-MAX_ANSWER_CHARS:].strip()
    boxed = last_boxed(text)
    if boxed is not None:
        text = boxed.strip()
    text = _strip_delimiters(" ".join(text.split()))
    text = _UNESCAPED_DOLLAR.sub("", text).strip()
    text = _ANSWER_PREFIX.sub("", text)
    whole_text = _WHOLE_TEXT.fullmatch(text)
    if whole_text:
        text = whole_text.group(1).strip()
    text = text.rstrip(".;").strip().replace("°", "^\\circ")
    percent = _PERCENT_SUFFIX.search(text)
    if percent:
        text = text[: percent.start()].strip()
    scientific = _SCIENTIFIC.fullmatch(text)
    if scientific:
        text = f"{scientific.group(1)}\\times 10^{{{scientific.group(2)}}}"
    return MathAnswer(_drop_units(text), percent=percent is not None)


def nesting_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "})]":
            depth = max(0, depth - 1)
    return deepest


def _plain_value(answer: MathAnswer) -> Decimal | None:
    if not _PLAIN_NUMBER.fullmatch(answer.text) or sum(c.isdigit() for c in answer.text) > _MAX_FAST_DIGITS:
        return None
    return Decimal(answer.text)


def _value_forms(value: Decimal, percent: bool, other_percent: bool) -> list[Decimal]:
    return [value, value / 100] if percent and not other_percent else [value]


def _numeric_verdict(prediction: MathAnswer, gold: MathAnswer) -> bool | None:
    predicted, expected = _plain_value(prediction), _plain_value(gold)
    if predicted is None or expected is None:
        return None
    verdicts = set()
    for p in _value_forms(predicted, prediction.percent, gold.percent):
        for g in _value_forms(expected, gold.percent, prediction.percent):
            if p == g:
                return True
            verdicts.add(False if abs(p - g) > _FAST_PATH_TOLERANCE else None)
    return False if verdicts == {False} else None


def _pre_verdict(prediction: MathAnswer, gold: MathAnswer, fast_path: bool) -> bool | None:
    """Guards, then (optionally) fast paths; None means math-verify must decide."""
    if not prediction.text or not gold.text:
        return False
    if nesting_depth(prediction.text) > MAX_NESTING or nesting_depth(gold.text) > MAX_NESTING:
        return False
    if not fast_path:
        return None
    if prediction == gold:
        return True
    return _numeric_verdict(prediction, gold)


def quick_math_verdict(prediction: str, gold: str) -> bool | None:
    """The verdict when it needs no math-verify call, else None. Cheap: runs in the caller's process."""
    return _pre_verdict(clean_math_answer(prediction), clean_math_answer(gold), fast_path=True)


@cache
def _math_verify() -> ModuleType:
    """Import math-verify on first use (it pulls in sympy) and silence its 'timeout disabled' warning."""
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify


@lru_cache(maxsize=4096)
def _parse(text: str) -> tuple:
    """math-verify's parse of a cleaned answer, cached: in GRPO a gold (and often an answer) recurs per group."""
    math_verify = _math_verify()
    if not _PROSE.search(text):
        parsed = math_verify.parse(f"${text}$", parsing_timeout=None)
        if any(not isinstance(item, str) for item in parsed):
            return tuple(parsed)
    return tuple(math_verify.parse(text, parsing_timeout=None))


def _text_forms(answer: MathAnswer, other: MathAnswer) -> list[str]:
    if answer.percent and not other.percent:
        return [answer.text, f"\\frac{{{answer.text}}}{{100}}"]
    return [answer.text]


def math_equal(prediction: str, gold: str, *, fast_path: bool = True) -> bool:
    """Whether `prediction` is mathematically equivalent to `gold`. No deadline: call it in a worker.

    `fast_path=False` keeps the guards but sends everything else to math-verify (tests compare the two).
    """
    cleaned_prediction, cleaned_gold = clean_math_answer(prediction), clean_math_answer(gold)
    verdict = _pre_verdict(cleaned_prediction, cleaned_gold, fast_path)
    if verdict is not None:
        return verdict
    math_verify = _math_verify()
    for gold_text in _text_forms(cleaned_gold, cleaned_prediction):
        parsed_gold = list(_parse(gold_text))
        for prediction_text in _text_forms(cleaned_prediction, cleaned_gold):
            if math_verify.verify(parsed_gold, list(_parse(prediction_text)), timeout_seconds=None):
                return True
    return False
