"""Helpers every adapter shares: errors, image decoding, placeholders, options and answer types.

Adapters turn one raw row (a dict in the dataset's real column names) into a `Record`. What they have
in common lives here, so each adapter reads as a column mapping and nothing else.
"""

from __future__ import annotations

import ast
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from care.data import images
from care.hashing import digest, file_digest

LETTERS = "ABCDEFGHIJ"
MAX_OPTIONS_CHARS = 20_000  # a real options string is a few hundred characters; refuse to parse more


class DatasetUnavailable(FileNotFoundError):
    """A dataset (or an image it references) cannot be read; the message names the config key to set."""


class MalformedRow(ValueError):
    """A row whose content breaks the dataset's documented schema (bad options, unknown gold letter)."""


class RowProblem(MalformedRow):
    """One row that cannot be used as it is (care.data.rows): `reason` names the class of problem (the
    name drops are counted under), `column` where it is."""

    def __init__(self, reason: str, column: str | None, detail: str):
        super().__init__(f"column {column!r} {detail}" if column else detail)
        self.reason, self.column, self.detail = reason, column, detail

    def located(self, where: str) -> RowProblem:
        """The same problem, its message starting with the row it is in ("<file> row 12")."""
        located = RowProblem(self.reason, self.column, self.detail)
        located.args = (f"{where}: {self}",)
        return located


# ---------------------------------------------------------------------------------------------- images


@dataclass
class RowContext:
    """What an adapter needs besides the row: its position, split, hub config, and image decoding."""

    index: int  # position in the split (files concatenated in sorted order), for datasets without ids
    split: str
    config: str | None
    images: ImageResolver
    where: str = ""  # the row for people: "<file> row 12", "<file> line 13", "<hub id> <split> row 12"


@dataclass
class ImageResolver:
    """Turns an image cell into PIL images.

    A cell is a PIL image (a decoded `datasets` Image feature), a `{"bytes": ..., "path": ...}` dict
    (parquet with embedded images), a path string relative to one of `base_dirs` (the data file's
    folder, then its parents up to the root the user gave), None, or a list of these.
    """

    base_dirs: Sequence[Path] = ()
    failure_hint: str = ""  # appended to errors: which config key to set

    def images(self, cell) -> list[Image.Image]:
        if cell is None:
            return []
        if isinstance(cell, (list, tuple)):
            return [image for item in cell for image in self.images(item)]
        return [self._one(cell)]

    def _one(self, cell) -> Image.Image:
        if isinstance(cell, Image.Image):
            return cell
        if isinstance(cell, dict):
            if cell.get("bytes"):
                return open_encoded(cell["bytes"])
            if cell.get("path"):
                return self._from_path(cell["path"])
            raise RowProblem("missing_image", None, f"image cell has neither bytes nor path: keys {sorted(cell)}")
        if isinstance(cell, (bytes, bytearray)):
            return open_encoded(bytes(cell))
        if isinstance(cell, str):
            return self._from_path(cell)
        raise RowProblem("missing_image", None, f"unsupported image cell of type {type(cell).__name__}")

    def _from_path(self, relative: str) -> Image.Image:
        candidates = [Path(relative)] if Path(relative).is_absolute() else [b / relative for b in self.base_dirs]
        for candidate in candidates:
            if candidate.is_file():
                try:
                    image = open_encoded(candidate.read_bytes())
                except RowProblem as problem:
                    raise RowProblem(problem.reason, None, f"image {relative!r}: {problem.detail}") from None
                image.care_source = relative  # named when a later check refuses it
                return image
        tried = ", ".join(str(b) for b in self.base_dirs) or "(no base folder: data came from the hub)"
        raise RowProblem("missing_image", None, f"image {relative!r} not found (looked under {tried}). {self.failure_hint}")


def open_encoded(data: bytes) -> Image.Image:
    """care.data.images.open_encoded, its refusal as this row's problem."""
    try:
        return images.open_encoded(data)
    except images.ImageProblem as problem:
        raise RowProblem(problem.reason, None, str(problem)) from None


def image_digest(image: Image.Image) -> str:
    """sha256 of decoded pixels (mode, size, data): the same picture stored as different files matches."""
    encoded = getattr(image, "care_encoded", None)
    if encoded is not None:
        with Image.open(io.BytesIO(encoded)) as fresh:
            return _pixel_digest(fresh)
    return _pixel_digest(image)


def image_content_digest(image: Image.Image) -> str:
    """sha256 of what the image was read from: its encoded bytes as loaded (equal to its file's digest),
    else its file (`datasets` decodes path cells with Image.open), else its decoded pixels (an image
    made in memory). Cache keys use it: a changed picture changes it, a copy elsewhere does not.
    Remembered on the image, so a key computed twice hashes once."""
    known = getattr(image, "care_content_digest", None)
    if known is None:
        encoded = getattr(image, "care_encoded", None)
        filename = getattr(image, "filename", "")
        if encoded is not None:
            known = digest(encoded)
        elif filename and os.path.isfile(filename):
            known = file_digest(filename)
        else:
            known = "pixels:" + _pixel_digest(image)
        image.care_content_digest = known
    return known


def _pixel_digest(image: Image.Image) -> str:
    return digest(f"{image.mode}:{image.size}", image.tobytes())


def is_present(cell) -> bool:
    """Whether an optional image column (MMMU image_2..image_7) holds an image."""
    if cell is None:
        return False
    if isinstance(cell, dict):
        return bool(cell.get("bytes") or cell.get("path"))
    return not (isinstance(cell, str) and not cell.strip())


# ---------------------------------------------------------------------------------------- placeholders

_PLACEHOLDERS_AT_LINE_START = re.compile(r"^[ \t]*(?:<image>[ \t]*)+", re.MULTILINE)
_PLACEHOLDERS_AT_LINE_END = re.compile(r"[ \t]*(?:<image>[ \t]*)+$", re.MULTILINE)
_PLACEHOLDERS_INSIDE = re.compile(r"[ \t]*(?:<image>[ \t]*)+")
_NUMBERED_PLACEHOLDER = re.compile(r"<image\s*(\d+)>")


def clean_placeholders(text: str) -> str:
    """Placeholder policy, the same for every dataset.

    - Bare `<image>` (Geometry3K, ViRL39K) only marks where an image sits. Images are given to the model
      as separate image parts before the text, and some processors read a literal `<image>` as an image
      token, so bare placeholders are removed (with the spaces around them; other whitespace, such as
      code indentation in MMMU, is left alone).
    - Numbered references (`<image 1>` in MMMU/MMMU-Pro, `<image1>` in MATH-Vision) carry meaning ("the
      ant <image1> walks ..."), so they are kept, normalised to MMMU's form `<image N>`.
    """
    text = _PLACEHOLDERS_AT_LINE_START.sub("", text)
    text = _PLACEHOLDERS_AT_LINE_END.sub("", text)
    text = _PLACEHOLDERS_INSIDE.sub(" ", text)
    text = _NUMBERED_PLACEHOLDER.sub(lambda m: f"<image {m.group(1)}>", text)
    return text.strip()


# --------------------------------------------------------------------------------------------- options


def parse_options_literal(raw, where: str) -> list[str]:
    """MMMU's `options` cell: a string repr of a Python list of strings, parsed without evaluating code.

    `ast.literal_eval` accepts literals only (no names, calls or attributes), so a hostile string raises
    instead of running. A list value (some mirrors store the list itself) is accepted as is.
    """
    if isinstance(raw, (list, tuple)):
        values = list(raw)
    elif isinstance(raw, str):
        if len(raw) > MAX_OPTIONS_CHARS:
            raise MalformedRow(f"{where}: options string is {len(raw)} characters, over {MAX_OPTIONS_CHARS}")
        try:
            values = ast.literal_eval(raw.strip() or "[]")
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
            raise MalformedRow(
                f"{where}: options must be a Python list literal of strings, got {raw[:120]!r} "
                f"({type(err).__name__})") from None
    elif raw is None:
        values = []
    else:
        raise MalformedRow(f"{where}: options has unsupported type {type(raw).__name__}")
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in values):
        raise MalformedRow(f"{where}: options must be a list of strings, got {type(values).__name__}")
    if len(values) > len(LETTERS):
        raise MalformedRow(f"{where}: {len(values)} options, more than the {len(LETTERS)} letters A-J")
    return [str(v) for v in values]


def letter_of(index: int) -> str:
    return LETTERS[index]


def check_letter(answer: str, choices: Sequence[str] | None, where: str) -> str:
    """A gold letter, upper-cased and checked against the number of options (when they are known)."""
    letter = str(answer).strip().strip("()").upper()
    if len(letter) != 1 or letter not in LETTERS:
        raise MalformedRow(f"{where}: gold {answer!r} is not a letter A-J")
    if choices and LETTERS.index(letter) >= len(choices):
        raise MalformedRow(f"{where}: gold letter {letter} but only {len(choices)} options")
    return letter


def letter_for_option_text(answer: str, choices: Sequence[str], where: str) -> str:
    """The letter of the option whose text is the gold (MathVista stores the option text, not a letter)."""
    for normalise in (lambda s: s, lambda s: " ".join(str(s).split()).lower()):
        matches = [i for i, option in enumerate(choices) if normalise(option) == normalise(answer)]
        if matches:
            return letter_of(matches[0])
    raise MalformedRow(f"{where}: gold {answer!r} is none of the options {list(choices)!r}")


_OPTION_LINE = re.compile(r"^\s*\(?([A-J])\s*[.:)]\s*(.*\S)?\s*$")
_CHOICES_HEADER = re.compile(r"^\s*(?:choices|options|answer choices)\s*:?\s*$", re.IGNORECASE)


def split_embedded_options(question: str) -> tuple[str, list[str] | None]:
    """(question without its options block, option texts) for questions that list options inline.

    Recognises a trailing block of lines "A: x", "A. x", "(A) x", "A) x" with consecutive letters from A,
    optionally after a "Choices:" line (MathVerse, and the format assumed for ViRL39K). Returns
    (question, None) when there is no such block, so nothing is lost when the guess is wrong.
    """
    lines = question.rstrip().splitlines()
    start = len(lines)
    while start > 0 and (match := _OPTION_LINE.match(lines[start - 1])):
        start -= 1
        if match.group(1) == "A":
            break
    matches = [_OPTION_LINE.match(line) for line in lines[start:]]
    letters = "".join(m.group(1) for m in matches)
    if len(letters) < 2 or letters != LETTERS[: len(letters)]:
        return question, None
    options = [(m.group(2) or "").strip() for m in matches]
    head = lines[:start]
    if head and _CHOICES_HEADER.match(head[-1]):
        head = head[:-1]
    elif head and head[-1].rstrip().lower().endswith("choices:"):
        head[-1] = head[-1].rstrip()[: -len("choices:")]
    return "\n".join(head).strip(), options


# ---------------------------------------------------------------------------------------- answer types

_NUMBER = re.compile(r"^[-+]?\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:e[-+]?\d+)?\s*%?$", re.IGNORECASE)
_LETTER_RUN = re.compile(r"[A-Za-z]+")
_MATH_WORDS = {"sqrt", "pi", "frac", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "deg",
               "circ", "infty", "cdot", "times", "arcsin", "arccos", "arctan"}


def looks_mathematical(answer: str) -> bool:
    """Whether a free-form gold is a number or an expression (verified with math-verify) rather than prose.

    Math: a number ("12", "-3.5", "1,000", "45%"), anything with LaTeX (a backslash), or a string with a
    digit or operator whose letter runs are all short (variables, units like "cm") or math names
    ("2x+1", "5 cm", "3 sqrt 2"). Everything else ("Yes", "Democrats", "blue and red") is text.
    """
    text = str(answer).strip()
    if not text:
        return False
    if any(ch.isdigit() for ch in text) and _NUMBER.match(text):
        return True
    if "\\" in text:
        return True
    if not re.search(r"[\d=+^/*√π°]", text):
        return False
    return all(len(run) <= 2 or run.lower() in _MATH_WORDS for run in _LETTER_RUN.findall(text))


def free_form_type(answer: str) -> str:
    return "math" if looks_mathematical(answer) else "text"


def as_text(value) -> str:
    """A gold answer cell as a string (some mirrors store numbers as numbers)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
