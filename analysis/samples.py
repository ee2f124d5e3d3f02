"""Per-sample verdicts: what each run's evaluation decided on every benchmark item.

care.evaluation.harness writes one file per (benchmark, eval seed) pass into the run's eval/ folder,
`<tag><benchmark>-seed<k>.jsonl` (tag `after-`, `before-` or `base-`), one JSON object per sample
(care.evaluation.protocol.sample: id, benchmark, source, response, parsed, gold, correct, formatted), in
the benchmark's record order. The tables' intervals resample these items (analysis.uncertainty).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

TAGS = {"after.": "after-", "before.": "before-", "base.": "base-"}  # final.json block -> file tag
# only what the intervals need; the response text and the rest are skipped unparsed
SCHEMA = pa.schema([("id", pa.string()), ("correct", pa.bool_())])


@dataclass(frozen=True)
class Verdicts:
    """One run's items on one benchmark: their ids in record order and the fraction of eval passes
    (eval seeds) that got each right."""

    ids: tuple[str, ...]
    correct: np.ndarray  # (items,), in [0, 1]
    passes: int

    @property
    def accuracy(self) -> float:
        """Percent, as final.json reports it (mean over passes of each pass's accuracy)."""
        return 100.0 * float(self.correct.mean()) if len(self.correct) else 0.0


def pass_file(tag: str, benchmark: str, seed: int) -> str:
    """The harness's name for one pass's file (care.evaluation.harness.pass_file)."""
    return f"{tag}{benchmark}-seed{seed}.jsonl"


def read_pass(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """(ids, correct) of one pass's file, parsed in C++ (the responses are never turned into Python)."""
    options = pa_json.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore")
    read = pa_json.ReadOptions(block_size=max(path.stat().st_size + 1, 1 << 16), use_threads=False)
    table = pa_json.read_json(path, read_options=read, parse_options=options)
    correct = table["correct"].to_numpy(zero_copy_only=False)
    if table["correct"].null_count or table["id"].null_count:
        raise ValueError(f"{path}: a sample without id or correct")
    return tuple(table["id"].to_pylist()), correct.astype(float)


def verdicts(run_dir: str, column: str) -> Verdicts | None:
    """The items behind a run's score column (`after.mathvista`, `before.synthetic`, ...), averaged over the
    eval passes found; None when the run has no such files (a W&B-only run, an older run, a failed read)
    or when the passes disagree on the items."""
    block, _, benchmark = column.partition(".")
    tag = TAGS.get(block + ".")
    if tag is None or not benchmark or not isinstance(run_dir, str):
        return None
    folder = Path(run_dir) / "eval"
    if not folder.is_dir():
        return None
    prefix = f"{tag}{benchmark}-seed"
    paths = [p for p in sorted(folder.glob(f"{glob_escape(prefix)}*.jsonl"))
             if p.name[len(prefix):-len(".jsonl")].isdigit()]
    try:
        stamps = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    except OSError:
        return None
    return _read_passes(stamps) if stamps else None


@functools.lru_cache(maxsize=4096)
def _read_passes(stamps: tuple[tuple[str, int, int], ...]) -> Verdicts | None:
    """Keyed by the files' paths, mtimes and sizes: a rewritten file is read again."""
    try:
        passes = [read_pass(Path(path)) for path, _, _ in stamps]
    except (OSError, ValueError, pa.ArrowInvalid):
        return None
    ids = passes[0][0]
    if any(other != ids for other, _ in passes[1:]) or not ids:
        return None
    return Verdicts(ids=ids, correct=np.mean([c for _, c in passes], axis=0), passes=len(passes))


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)
