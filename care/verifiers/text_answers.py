"""Free-text answers: normalised exact match.

Normalisation (applied to response and gold alike), in order:
  - unwrap the last `\\boxed{...}` and any `\\text{...}`-style wrapper, drop `$` and markdown `*`/backticks;
  - Unicode NFKC, lower case;
  - punctuation becomes a space, except `.` `,` `/` `:` `-` between two digits ("3.5", "1,000", "1/2" keep theirs);
  - the articles "a", "an", "the" are dropped as whole words;
  - whitespace collapses to single spaces.
Then the two strings must be equal and non-empty. No partial credit: "yes, because ..." is not "yes".
"""

from __future__ import annotations

import re
import unicodedata

from care.verifiers.extraction import last_boxed

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_MARKUP = re.compile(r"[$*`]")
_PUNCTUATION_NOT_IN_NUMBER = re.compile(r"(?<!\d)[^\w\s]|[^\w\s](?!\d)|(?<=\d)[^\w\s.,/:\-](?=\d)")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_SPACES = re.compile(r"\s+")


def strip_markup(text: str) -> str:
    """Remove LaTeX/markdown wrapping that carries no meaning for a text or letter answer."""
    boxed = last_boxed(text)
    if boxed is not None:
        text = boxed
    text = _TEXT_WRAPPER.sub(r"\1", text)
    return _MARKUP.sub("", text).strip()


def normalize_text(text: str) -> str:
    """Canonical form used for text answers and for matching option texts in multiple choice."""
    text = unicodedata.normalize("NFKC", strip_markup(text)).lower()
    text = _PUNCTUATION_NOT_IN_NUMBER.sub(" ", text).replace("_", " ")
    text = _ARTICLES.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def text_equal(prediction: str, gold: str) -> bool:
    """Normalised exact match; empty answers never match."""
    normalized_prediction = normalize_text(prediction)
    return bool(normalized_prediction) and normalized_prediction == normalize_text(gold)
