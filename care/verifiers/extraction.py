"""Finding the answer in a model response, and deciding whether the response is well formed.

Everything here is plain string work over bounded slices of the response, so a 1 MB response
costs a few `str.find` calls, never a regex that could backtrack over the whole text.

Two extraction rules (`rl.extraction` in training, `eval.extraction` in evaluation):
  strict   the `<answer>` span of a well-formed response (`is_well_formed`), nothing else: a cut-off or
           malformed response has no answer, so it scores 0 and can never be an anchor. Training uses it,
           so the policy is never paid for skipping the answer span.
  lenient  for models never trained on the format, the first of these that applies, read outside the
           reasoning only (`outside_think`: after the last `</think>`; nothing of an unclosed `<think>`):
  1. the LAST `<answer>...</answer>` span (tags are case-sensitive), else what follows an unclosed last
     `<answer>` (a response cut off inside its answer);
  2. else the LAST balanced `\\boxed{...}`;
  3. else, within the last 4,000 characters, the rest of the line after the last "answer is" / "answer:"
     (case-insensitive, so "The final answer is" and "**Answer:**" count);
  4. else the last non-empty line.
The result is stripped and capped to its last `MAX_ANSWER_CHARS` characters; an empty result is None.
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 2000
"""Longest answer handed to any matcher; longer answers keep their tail (where final answers sit)."""

FALLBACK_WINDOW_CHARS = 4000
"""Rules 3 and 4 only look at this many trailing characters of an untagged response."""

_MAX_BOXED_TRIES = 20

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

EXTRACTION_RULES = ("strict", "lenient")

_ANSWER_PHRASE = re.compile(r"answer\s*(?:is\b|:)[\s:*]*", re.IGNORECASE)


def is_well_formed(response: str) -> bool:
    """True for exactly `<think>...</think>` then `<answer>...</answer>`, whitespace allowed around.

    Rule: after stripping outer whitespace the response starts with `<think>` and ends with `</answer>`;
    each of the four tags occurs exactly once, in that order; only whitespace separates `</think>`
    from `<answer>`; the answer is not blank (the think block may be empty).
    """
    text = response.strip()
    if not (text.startswith(THINK_OPEN) and text.endswith(ANSWER_CLOSE)):
        return False
    if any(text.count(tag) != 1 for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)):
        return False
    think_end = text.find(THINK_CLOSE)
    answer_start = text.find(ANSWER_OPEN)
    if answer_start < think_end or text[think_end + len(THINK_CLOSE) : answer_start].strip():
        return False
    return bool(text[answer_start + len(ANSWER_OPEN) : -len(ANSWER_CLOSE)].strip())


def last_answer_span(response: str) -> str | None:
    """Content of the last closed `<answer>...</answer>` span, or None."""
    end = response.rfind(ANSWER_CLOSE)
    if end == -1:
        return None
    start = response.rfind(ANSWER_OPEN, 0, end)
    if start == -1:
        return None
    return response[start + len(ANSWER_OPEN) : end]


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` whose braces balance (nested braces allowed), or None.

    The brace scan stops after `2 * MAX_ANSWER_CHARS` characters so a huge unbalanced box stays cheap.
    """
    search_end = len(text)
    for _ in range(_MAX_BOXED_TRIES):
        start = text.rfind("\\boxed", 0, search_end)
        if start == -1:
            return None
        search_end = start
        brace = start + len("\\boxed")
        while brace < len(text) and text[brace] == " ":
            brace += 1
        if brace >= len(text) or text[brace] != "{":
            continue
        content = _balanced_content(text, brace)
        if content is not None:
            return content
    return None


def _balanced_content(text: str, open_brace: int) -> str | None:
    depth = 0
    stop = min(len(text), open_brace + 2 * MAX_ANSWER_CHARS)
    for index in range(open_brace, stop):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : index]
    return None


def outside_think(response: str) -> str:
    """The response without its reasoning: what follows the last `</think>`; a `<think>` never closed (a
    response cut off while reasoning) leaves only what precedes it. The lenient rule reads answers here
    only, so a candidate the model weighed while thinking is never taken for its answer."""
    close = response.rfind(THINK_CLOSE)
    if close >= 0:
        return response[close + len(THINK_CLOSE):]
    opened = response.find(THINK_OPEN)
    return response[:opened] if opened >= 0 else response


def _fallback_answer(response: str) -> str:
    tail = response[-FALLBACK_WINDOW_CHARS:]
    phrases = list(_ANSWER_PHRASE.finditer(tail))
    if phrases:
        rest = tail[phrases[-1].end() :]
        line = rest.split("\n", 1)[0].strip()
        if line:
            return line
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def extract_answer(response: str, rule: str = "strict") -> str | None:
    """The answer string per `rule` (see the module docstring), or None when there is none."""
    if rule == "strict":
        if not is_well_formed(response):
            return None
        span = last_answer_span(response)
    elif rule == "lenient":
        response = outside_think(response)
        span = last_answer_span(response)
        if span is None and ANSWER_OPEN in response:  # an answer cut off before </answer>
            span = response[response.rfind(ANSWER_OPEN) + len(ANSWER_OPEN):][:FALLBACK_WINDOW_CHARS]
        if span is None:
            span = last_boxed(response)
        if span is None:
            span = _fallback_answer(response)
    else:
        raise ValueError(f"extraction rule {rule!r} is not accepted; choose one of {', '.join(EXTRACTION_RULES)}")
    answer = (span or "").strip()[-MAX_ANSWER_CHARS:].strip()
    return answer or None
