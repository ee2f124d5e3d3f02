"""A verifiable visual reasoning task generated locally with PIL.

Each image is a `grid x grid` board of coloured cells (one cell per merged vision token
at the default 28 px), numbered row by row; one cell carries a white mark. A question asks
for the marked cell's colour, or for how many cells share it. The question text is fixed,
so it cannot be answered without the image. Demonstrations read the board cell by cell
inside <think> ("1 red 2 blue ..."), locate the mark, then conclude. A tiny model learns
this on CPU in a short cold start; the cold-start teacher is imperfect (see
`demonstration`), which leaves verified-reward RL something real to fix.
"""

from __future__ import annotations

import random

from PIL import Image

from care.config import REFLECTION_TRACES, DataConfig
from care.data.schema import Record
from care.hashing import digest
from care.repair import CUE_TEMPLATES

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
COLOR_NAMES = tuple(COLORS)
JITTER = 24  # per-channel noise so perception is not a fixed lookup
SOURCE = "synthetic"
MARKED_COLOR = "What color is the marked cell?"
MARKED_COUNT = "How many cells have the marked cell's color?"


def _board(rng: random.Random, grid: int) -> list[list[str]]:
    return [[rng.choice(COLOR_NAMES) for _ in range(grid)] for _ in range(grid)]


def _render(board: list[list[str]], mark: int, cell_px: int, rng: random.Random) -> Image.Image:
    grid = len(board)
    image = Image.new("RGB", (grid * cell_px, grid * cell_px))
    for r, row in enumerate(board):
        for c, name in enumerate(row):
            rgb = tuple(max(0, min(255, v + rng.randint(-JITTER, JITTER))) for v in COLORS[name])
            image.paste(rgb, (c * cell_px, r * cell_px, (c + 1) * cell_px, (r + 1) * cell_px))
    r, c = divmod(mark, grid)
    inset = cell_px // 3
    image.paste((255, 255, 255), (c * cell_px + inset, r * cell_px + inset,
                                  (c + 1) * cell_px - inset, (r + 1) * cell_px - inset))
    return image


def _answer(cells: list[str], mark: int, answer_type: str) -> str:
    """The gold answer if `mark` were the marked cell: its colour, or how many cells share it."""
    return str(cells.count(cells[mark])) if answer_type == "math" else cells[mark]


def _question(rng: random.Random, board: list[list[str]], mark: int) -> tuple[str, str, str, str]:
    """(question, answer, answer_type, kind)."""
    cells = [c for row in board for c in row]
    if rng.random() < 0.5:
        return MARKED_COLOR, _answer(cells, mark, "text"), "text", "color"
    return MARKED_COUNT, _answer(cells, mark, "math"), "math", "count"


def reasoning(board: list[list[str]], question: str, mark: int) -> str:
    """The demonstration's <think> body: read every cell in order, find the mark, conclude."""
    cells = [c for row in board for c in row]
    read = " ".join(f"{i + 1} {c}" for i, c in enumerate(cells)) + "."
    found = f"marked: {mark + 1} {cells[mark]}."
    if question == MARKED_COUNT:
        return f"{read} {found} {cells[mark]}: {cells.count(cells[mark])}"
    return f"{read} {found} color: {cells[mark]}"


def demonstration(record: Record, rng: random.Random, reflect: bool, slip: bool = False,
                  trace: str = "rederive") -> str:
    """A target response.

    `reflect`: the structured repair cue before </think>, then the verified answer: exactly an
    RGR repair context (`care.repair.repair_context`) completed well. What comes before the cue:
    - `rederive` (default): half of the traces conclude wrongly before the cue and half rightly,
      so the cue teaches "answer again from the image", which a fresh sample does as well.
    - `reconcile`: the sound reasoning, so the cue teaches "make the final answer agree with the
      reading". An answer slip is then repairable, a misreading is not (docs/benchmarks.md has
      what each does to the repair rate).
    - `mislocate`: the failure the tiny policy mostly makes, a sound board reading that then
      names the wrong cell as marked and concludes from it; the cue teaches "look at the mark
      again". Use it with `cold_start.reflection_loss=after_cue`, or the cold start also learns
      to mislocate.
    `slip`: sound reasoning but a different final answer, the imperfect-teacher noise that
    a cold start inherits and that verified-reward RL can remove.
    """
    if trace not in REFLECTION_TRACES:
        raise ValueError(f"cold_start.reflection_trace must be one of {', '.join(REFLECTION_TRACES)}; got {trace!r}")
    think = reasoning(record.meta["board"], record.question, record.meta["mark"])
    if reflect:
        if trace == "rederive" and rng.random() < 0.5:
            think = think.rsplit(" ", 1)[0] + f" {_wrong_answer(record, rng)}"
        elif trace == "mislocate":
            think = reasoning(record.meta["board"], record.question, _wrong_mark(record, rng))
        think += CUE_TEMPLATES["structured"]
    answer = _wrong_answer(record, rng) if slip else record.answer
    return f"<think>{think}</think><answer>{answer}</answer>"


def _wrong_mark(record: Record, rng: random.Random) -> int:
    """A cell other than the mark whose reading would give a wrong answer (the mark if none would)."""
    cells = [c for row in record.meta["board"] for c in row]
    options = [cell for cell in range(len(cells)) if _answer(cells, cell, record.answer_type) != record.answer]
    return rng.choice(options) if options else record.meta["mark"]


def _wrong_answer(record: Record, rng: random.Random) -> str:
    if record.answer_type == "math":
        n = int(record.answer)
        return str(n + 1 if n == 1 else n + rng.choice([-1, 1]))
    return rng.choice([c for c in COLOR_NAMES if c != record.answer])


def _make(split: str, seed: int, size: int, grid: int, cell_px: int, exclude: set[str]) -> list[Record]:
    rng = random.Random(f"care-synthetic/{seed}/{split}")
    records: list[Record] = []
    seen = set(exclude)
    while len(records) < size:
        board = _board(rng, grid)
        mark = rng.randrange(grid * grid)
        question, answer, answer_type, kind = _question(rng, board, mark)
        key = digest(repr((board, mark, question)), length=16, algorithm="sha1")  # names the record: keep as is
        if key in seen:
            continue
        seen.add(key)
        image = _render(board, mark, cell_px, rng)
        records.append(Record(id=f"{SOURCE}-{split}-{key}", images=[image], question=question, answer=answer,
                              answer_type=answer_type, source=SOURCE,
                              meta={"board": board, "mark": mark, "kind": kind}))
    return records


def make_splits(seed: int, train_size: int, eval_size: int, grid: int = 3, cell_px: int = 28
                ) -> tuple[list[Record], list[Record]]:
    """Deterministic train and held-out splits; no (board, mark, question) is in both."""
    train = _make("train", seed, train_size, grid, cell_px, exclude=set())
    held_out = _make("heldout", seed, eval_size, grid, cell_px, exclude={r.id.rsplit("-", 1)[1] for r in train})
    return train, held_out


def splits_from_config(data: DataConfig) -> tuple[list[Record], list[Record]]:
    """The train and held-out splits the `data` config group describes."""
    return make_splits(data.seed, data.train_size, data.eval_size, data.grid, data.cell_px)


def tokenizer_corpus(grid: int = 6) -> list[str]:
    """Text the tiny tokenizer is trained on: every phrase the task and its responses use."""
    rng = random.Random("care-synthetic/tokenizer")
    corpus = []
    for _ in range(400):
        board = _board(rng, rng.randint(2, grid))
        mark = rng.randrange(len(board) ** 2)
        question, answer, answer_type, _ = _question(rng, board, mark)
        record = Record(id="t", images=[], question=question, answer=answer, answer_type=answer_type,
                        source=SOURCE, meta={"board": board, "mark": mark})
        corpus += [question, demonstration(record, rng, reflect=rng.random() < 0.3)]
    return corpus + list(CUE_TEMPLATES.values())
