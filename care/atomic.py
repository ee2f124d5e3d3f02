"""Atomic writes: a reader sees the old file (or folder) or the new one, never half of either.

Everything the suite writes for another process to read goes through here: run files
(run.json, final.json, rl_done.json, the rewritten metrics.jsonl, policy/), cached backbones and
cold starts, extracted image archives. Each is written beside its target and renamed into place;
append-only logs (metrics.jsonl) add one whole line per write (`append_line`).

A write that fails for want of room or permission (disk full, quota, a read-only or unwritable
folder) is raised as an OSError naming the file it was writing (`writing`), whatever layer failed
(Python, torch, safetensors), so run.py can name the file and the config key of its folder.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# what running out of room or permission looks like, as errno and as other layers word it (torch's
# PytorchStreamWriter says only "file write failed": then the disk's free space decides)
WRITE_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
_FAULT_WORDS = {os.strerror(code): code for code in WRITE_FAULTS} | {"os error 28": errno.ENOSPC, "StorageFull": errno.ENOSPC}


def fault_errno(err: BaseException, path: Path | None = None) -> int | None:
    """The errno of a write fault `err` is (or was caused by), else None."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in WRITE_FAULTS:
            return seen.errno
        text = str(seen)
        for words, code in _FAULT_WORDS.items():
            if words in text:
                return code
        if "file write failed" in text and path is not None and _free_bytes(path) < 1 << 20:
            return errno.ENOSPC
        seen = seen.__cause__ or seen.__context__
    return None


def _free_bytes(path: Path) -> int:
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 1 << 62


class WriteFault(OSError):
    """A write that failed for want of room or permission; `filename` is the file (or folder) being written."""


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Raise a write fault inside the block as WriteFault(errno, strerror, `path`); other errors pass as they are."""
    try:
        yield
    except WriteFault:
        raise
    except Exception as err:
        code = fault_errno(err, Path(path))
        if code is None:
            raise
        raise WriteFault(code, os.strerror(code), str(path)) from err


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out (a write may take fewer); a fault stops it with OSError."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def append_line(path: Path, line: str) -> None:
    """Append `line` (its newline added) as one write on an O_APPEND descriptor: concurrent readers see
    whole lines; a write the disk cut short is cut back off, so no torn line is left behind."""
    data = (line.rstrip("\n") + "\n").encode()
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            start = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
            except OSError:
                os.ftruncate(fd, start)
                raise
            if written != len(data):  # the disk filled up mid-line
                os.ftruncate(fd, start)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, flush it to disk, rename it over `path`."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
        try:
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide a shared cache from other users
            try:
                write_all(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
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
    with writing(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
        os.chmod(staging, 0o777 & ~current_umask())  # as mkdir would make it, not mkdtemp's 0700
    try:
        with writing(out_dir):
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


def replace_directory(staging: Path, out_dir: Path) -> None:
    """Publish the filled folder `staging` as `out_dir`, replacing what a killed attempt left there (a
    run's own policy/, never a shared cache entry: those keep the first publisher's, staged_directory)."""
    staging, out_dir = Path(staging), Path(out_dir)
    with writing(out_dir):
        stale = None
        if out_dir.exists():
            stale = out_dir.with_name(f".{out_dir.name}.stale-{os.getpid()}")
            shutil.rmtree(stale, ignore_errors=True)
            os.rename(out_dir, stale)
        os.rename(staging, out_dir)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
