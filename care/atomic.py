"""Atomic writes: a reader sees the old file (or folder) or the new one, never half of either.

Everything the suite writes for another process to read goes through here: run files
(run.json, final.json, the rewritten metrics.jsonl), cached backbones and cold starts,
extracted image archives. Each is written beside its target and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, flush it to disk, rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide a shared cache from other users
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, obj: Any) -> None:
    """Indented JSON with sorted keys (anything JSON cannot hold as its str())."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


@contextmanager
def staged_directory(out_dir: Path) -> Iterator[Path]:
    """Yield an empty folder beside `out_dir` to fill; on success rename it to `out_dir`.

    If another process published `out_dir` first, theirs is kept and this one dropped; on an
    error the staging folder is removed and nothing is published.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    os.chmod(staging, 0o777 & ~current_umask())  # as mkdir would make it, not mkdtemp's 0700
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.rename(staging, out_dir)
    except OSError:  # out_dir exists and is not empty: someone else finished first
        shutil.rmtree(staging, ignore_errors=True)


def save_pretrained_atomic(out_dir: Path, *parts: Any) -> Path:
    """`save_pretrained` each part (model, processor) into `out_dir`, published atomically."""
    with staged_directory(out_dir) as staging:
        for part in parts:
            part.save_pretrained(staging)
    return Path(out_dir)
