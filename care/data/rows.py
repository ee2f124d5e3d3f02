"""Row checks: every loaded row is used, dropped with a named reason, or fails naming file, row and column.

Data rows are untrusted. Before an adapter sees a row, the columns its dataset declares as text
(`DatasetSpec.text_columns`) and gold (`answer_columns`) are checked here; after it, every image goes
through `care.data.images.checked_image`. A problem is a `RowProblem` carrying a short `reason` (the
name drops are counted under) and the column. What happens to it is the caller's policy:

- benchmarks: never dropped (that would change the denominators compared with published numbers);
  the first bad row fails the load;
- training data: counted per source and reason in a `DropReport`, and `data.max_dropped_fraction`
  (default 0: any bad row fails the run, naming it) says how many may go.

Text is repaired only where nothing is lost: NUL characters are removed and tokenizer control tokens
(`<|im_end|>` and the like, which would end or restructure the chat) are escaped with a zero-width
space so they read the same and tokenize as text. Both are counted as `escaped`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from care.data.adapters.common import RowProblem

# Qwen's control tokens all look like <|name|> (im_start, im_end, vision_start, image_pad, endoftext)
CONTROL_TOKEN = re.compile(r"<\|[^<>|\s]{1,64}\|>")
ZERO_WIDTH_SPACE = "\u200b"
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")

__all__ = ["DropReport", "RowProblem", "check_answer", "check_text", "clean_text", "escape_control_tokens"]


@dataclass
class DropReport:
    """What a load dropped and repaired, per source and reason, with the first example of each reason."""

    rows: Counter = field(default_factory=Counter)  # source -> rows read and checked
    # source -> rows a Selection's subset left out unchecked (ChartQA's machine-augmented ones): not bad data
    filtered: Counter = field(default_factory=Counter)
    dropped: dict[str, Counter] = field(default_factory=dict)  # source -> reason -> n
    escaped: dict[str, Counter] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> "file row N column 'x': detail"

    def drop(self, source: str, problem: RowProblem, where: str) -> None:
        self.dropped.setdefault(source, Counter())[problem.reason] += 1
        self.examples.setdefault(problem.reason, f"{where}: {problem}")

    def escape(self, source: str, reason: str, n: int = 1) -> None:
        self.escaped.setdefault(source, Counter())[reason] += n

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def total_dropped(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.dropped.values())

    def as_counts(self) -> dict:
        """{"dropped": {source: {reason: n}}, "escaped": {...}} for run.json and final.json."""
        def plain(table: dict[str, Counter]) -> dict:
            return {source: dict(sorted(reasons.items())) for source, reasons in sorted(table.items())}
        return {"dropped": plain(self.dropped), "escaped": plain(self.escaped)}

    def summary(self) -> str:
        """"chartqa: missing_answer 2; virl39k: undecodable_image 1 (e.g. ...; e.g. ...)"."""
        parts = [f"{source}: " + ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
                 for source, reasons in sorted(self.dropped.items())]
        examples = "; ".join(f"e.g. {example}" for example in self.examples.values())
        return "; ".join(parts) + (f" ({examples})" if examples else "")


def check_text(value, column: str, *, required: bool = True, escapes: Counter | None = None):
    """A user-visible text cell as clean text (None stays None when not `required`); raises RowProblem."""
    if _missing(value):
        if required:
            raise RowProblem("missing_text", column, "is empty")
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise RowProblem("binary_text", column, f"holds {len(value)} bytes, not text")
    if not isinstance(value, str):
        raise RowProblem("not_text", column, f"holds a {type(value).__name__} ({value!r:.60}), not text")
    return clean_text(value, column, escapes, required=required)


def clean_text(text: str, column: str, escapes: Counter | None = None, *, required: bool = False) -> str:
    """`text` without NULs and with control tokens escaped; a lone surrogate (no valid UTF-8) raises."""
    bad = _LONE_SURROGATE.search(text)
    if bad:
        raise RowProblem("invalid_unicode", column, f"holds a lone surrogate U+{ord(bad.group()):04X} at character "
                         f"{bad.start()}, which is not valid Unicode text")
    if "\x00" in text:
        text = text.replace("\x00", "")
        _count(escapes, "nul_removed")
    text, n = escape_control_tokens(text)
    if n:
        _count(escapes, "control_token_escaped", n)
    if required and not text.strip():
        raise RowProblem("missing_text", column, "is blank")
    return text


def escape_control_tokens(text: str, tokens: tuple[str, ...] = ()) -> tuple[str, int]:
    """(`text` with every `<|...|>` and every string in `tokens` broken by a zero-width space, count)."""
    count = 0

    def broken(match: re.Match) -> str:
        nonlocal count
        count += 1
        return match.group()[0] + ZERO_WIDTH_SPACE + match.group()[1:]

    text = CONTROL_TOKEN.sub(broken, text)
    for token in tokens:
        if len(token) > 1 and token in text:
            count += text.count(token)
            text = text.replace(token, token[0] + ZERO_WIDTH_SPACE + token[1:])
    return text, count


def check_answer(value, column: str):
    """A gold cell: present, not NaN, not blank, and text or numbers (a list of them for ChartQA)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or all(_missing(v) or (isinstance(v, str) and not v.strip()) for v in values):
        raise RowProblem("missing_answer", column, f"holds no gold answer ({value!r:.60})")
    for item in values:
        if isinstance(item, (bytes, bytearray, memoryview)):
            raise RowProblem("binary_text", column, f"holds {len(item)} bytes, not an answer")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)) and not _missing(item):
            raise RowProblem("not_text", column, f"holds a {type(item).__name__} ({item!r:.60}), not an answer")
        if isinstance(item, float) and math.isinf(item):
            raise RowProblem("missing_answer", column, f"holds {item}, not an answer")
        if isinstance(item, str):
            clean_text(item, column)
    return value


def _missing(value) -> bool:
    return value is None or isinstance(value, float) and math.isnan(value)


def _count(escapes: Counter | None, reason: str, n: int = 1) -> None:
    if escapes is not None:
        escapes[reason] += n
