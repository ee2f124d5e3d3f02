"""Multiple-choice answers: turning a response (or a gold) into one of the letters A-J.

Choice rule for a response's answer string, first that applies (after `strip_markup`):
  1. the whole answer is a letter in a usual wrapping: "B", "b", "(B)", "[B]", "B.", "B)", "B:",
     "Option B", "Choice (B)", "Answer: B", "The answer is B";
  2. with `choices` given, the whole answer equals an option's text (`normalize_text`);
     or it starts with a capital letter, a separator and more text ("B. 42 cm", "(B) 42 cm");
  3. the LAST explicit phrase "answer/option/choice [is|:] [option] X" with a capital X
     ("I think B is wrong, the answer is C" -> C);
  4. the LAST standalone capital A-J (not part of a word: "AB" has none), skipping "A" and "I" when they
     read as English ("A cat", "I think", "I'm") unless bracketed like "(A)";
  5. with `choices` given, exactly one option's text appears in the answer as whole words.
Otherwise no letter, which never matches.

Gold rule: a letter in a usual wrapping (rule 1), else an option's text mapped to its letter; anything
else is a data error and raises ValueError.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from care.verifiers.text_answers import normalize_text, strip_markup

LETTERS = "ABCDEFGHIJ"

_LEAD_IN = r"(?:(?:the\s+)?(?:final\s+)?(?:correct\s+)?(?:answer|option|choice)\s*(?:is\b|:)?\s*)?(?:(?:option|choice)\s*)?"
_WHOLE_LETTER = re.compile(rf"(?i:{_LEAD_IN})[(\[]?([A-Ja-j])[)\]]?[.:)]?")
_LETTER_THEN_TEXT = re.compile(r"[(\[]?([A-J])(?:[)\]]|[.:)])[.:]?\s+\S")
_EXPLICIT = re.compile(
    r"(?i:answer|option|choice)(?:\s+(?i:is|would\s+be|should\s+be|must\s+be))?\s*:?\s*"
    r"(?:(?i:option|choice)\s*)?[(\[]?([A-J])[)\]]?(?![A-Za-z0-9'’])"
)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'’])([(\[])?([A-J])([)\]])?(?![A-Za-z0-9'’])")
_ENGLISH_WORD_AFTER = re.compile(r"\s+[a-z]")


def letter_for_index(index: int) -> str:
    return LETTERS[index]


def _whole_answer_letter(text: str) -> str | None:
    match = _WHOLE_LETTER.fullmatch(text.strip())
    return match.group(1).upper() if match else None


def _option_letter(text: str, choices: Sequence[str] | None) -> str | None:
    if not choices:
        return None
    normalized = normalize_text(text)
    if not normalized:
        return None
    for index, option in enumerate(choices[: len(LETTERS)]):
        if normalize_text(str(option)) == normalized:
            return letter_for_index(index)
    return None


def _standalone_letter(text: str) -> str | None:
    found = None
    for match in _STANDALONE.finditer(text):
        letter = match.group(2)
        bracketed = match.group(1) is not None or match.group(3) is not None
        reads_as_word = letter in "AI" and not bracketed and _ENGLISH_WORD_AFTER.match(text, match.end())
        if not reads_as_word:
            found = letter
    return found


def _option_text_in_prose(text: str, choices: Sequence[str]) -> str | None:
    normalized = f" {normalize_text(text)} "
    hits = []
    for index, option in enumerate(choices[: len(LETTERS)]):
        option_text = normalize_text(str(option))
        if option_text and f" {option_text} " in normalized:
            hits.append(letter_for_index(index))
    return hits[0] if len(hits) == 1 else None


def response_letter(answer: str, choices: Sequence[str] | None = None) -> str | None:
    """The letter a response's answer string picks, per the module's choice rule, or None."""
    text = strip_markup(answer).rstrip(".").strip()
    letter = _whole_answer_letter(text) or _option_letter(text, choices)
    if letter:
        return letter
    match = _LETTER_THEN_TEXT.match(text)
    if match:
        return match.group(1)
    explicit = list(_EXPLICIT.finditer(text))
    if explicit:
        return explicit[-1].group(1)
    letter = _standalone_letter(text)
    if letter:
        return letter
    return _option_text_in_prose(text, choices) if choices else None


def gold_letter(gold: str, choices: Sequence[str] | None = None) -> str:
    """The gold's letter; raises ValueError when the gold is neither a letter nor an option's text."""
    text = strip_markup(str(gold)).rstrip(".").strip()
    letter = _whole_answer_letter(text) or _option_letter(text, choices)
    if letter is None:
        raise ValueError(
            f"choice gold {gold!r} is neither a letter A-J nor the text of one of the choices {list(choices or [])!r}"
        )
    return letter
