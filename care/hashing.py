"""Stable short hex digests: of content (text, bytes) and of configuration (dataclasses, dicts).

Every hash in the suite goes through `digest`, so its spelling lives in one place. Some digests
name generated data (the synthetic task's record ids): their inputs and algorithm must not change,
or the data changes with them. Cache keys and run identity use `config_hash`; the files a cache key
covers enter it through `file_digest` (their bytes, memoised per machine), never through their paths.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any


def digest(*chunks: str | bytes, length: int | None = None, algorithm: str = "sha256") -> str:
    """Hex digest of the chunks in order (text as UTF-8), cut to `length` characters."""
    hasher = hashlib.new(algorithm)
    for chunk in chunks:
        hasher.update(chunk.encode() if isinstance(chunk, str) else chunk)
    return hasher.hexdigest()[:length]


def config_hash(*parts: Any, length: int = 12) -> str:
    """Digest of the parts as canonical JSON (dataclasses as dicts, sorted keys, str() for the rest)."""
    def plain(x: Any) -> Any:
        return asdict(x) if is_dataclass(x) else x
    return digest(json.dumps([plain(p) for p in parts], sort_keys=True, default=str), length=length)


# ------------------------------------------------------------------------------------- file contents
#
# Cache keys cover the bytes of every file they read (images, SFT files, weights), never their paths
# or mtimes alone. Hashing a 200K-image set per job would cost minutes, so a file's digest is kept in
# a small sqlite memo keyed by what changes whenever its bytes can have changed: (device, inode, size,
# mtime_ns, ctime_ns). ctime cannot be set by a user, so an edit followed by `touch -d` to the old
# mtime still misses the memo. The memo is only ever a shortcut: when it cannot be opened or written
# (read-only home, NFS locking) the files are hashed again and the keys stay the same.

MEMO_ENV = "CARE_DIGEST_MEMO"  # the memo's file; default $XDG_CACHE_HOME/care/file_digests.sqlite
RACY_SECONDS = 2.0  # a file modified this recently may change again within its mtime's resolution
_LOOKUP_CHUNK = 500  # keys per sqlite query (under any build's variable limit)

log = logging.getLogger(__name__)


def memo_path() -> Path:
    """Where the file-digest memo lives: per user and machine, not per run, so jobs share it."""
    if os.environ.get(MEMO_ENV):
        return Path(os.environ[MEMO_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "care" / "file_digests.sqlite"


def hash_file(path: str | os.PathLike) -> str:
    """sha256 hex of a file's bytes, read in chunks (weights and SFT files run to GBs)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def stat_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 hex of the file's bytes (equal to `digest(bytes)`), memoised across processes."""
    return file_digests([path])[0]


def file_digests(paths: list[str | os.PathLike]) -> list[str]:
    """`file_digest` of each path, in order, with one memo read and one memo write for them all.

    A digest is memoised only when the file did not change while it was hashed and its mtime is
    older than RACY_SECONDS (a write within the same mtime tick would otherwise go unseen).
    """
    stats = [os.stat(p) for p in paths]
    keys = [stat_key(st) for st in stats]
    known = _memo_read(set(keys))
    fresh: dict[str, str] = {}
    out = []
    for path, st, key in zip(paths, stats, keys, strict=True):
        if key in known or key in fresh:
            out.append(known.get(key) or fresh[key])
            continue
        value = hash_file(path)
        if stat_key(os.stat(path)) == key and time.time() - st.st_mtime > RACY_SECONDS:
            fresh[key] = value
        out.append(value)
    _memo_write(fresh)
    return out


def _memo_connect() -> sqlite3.Connection:
    path = memo_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60)  # another process's write transaction holds the lock briefly
    conn.execute("CREATE TABLE IF NOT EXISTS digests (key TEXT PRIMARY KEY, digest TEXT NOT NULL)")
    return conn


def _memo_read(keys: set[str]) -> dict[str, str]:
    if not keys:
        return {}
    wanted = sorted(keys)
    try:
        conn = _memo_connect()
        try:
            found: dict[str, str] = {}
            for i in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[i:i + _LOOKUP_CHUNK]
                rows = conn.execute(f"SELECT key, digest FROM digests WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk)
                found.update(rows.fetchall())
            return found
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as err:
        log.warning("file-digest memo %s unreadable (%s); hashing the files again", memo_path(), err)
        return {}


def _memo_write(entries: dict[str, str]) -> None:
    if not entries:
        return
    try:
        conn = _memo_connect()
        try:
            with conn:  # one transaction: concurrent writers serialise on sqlite's lock, none sees half
                conn.executemany("INSERT OR REPLACE INTO digests (key, digest) VALUES (?, ?)", entries.items())
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as err:
        log.warning("file-digest memo %s not writable (%s); the next job hashes these files again", memo_path(), err)


def tree_digest(folder: str | os.PathLike) -> list[tuple[str, int, str]]:
    """(relative name, size, content digest) of every file under `folder`: what a saved model is,
    wherever it lies. A hub snapshot's files link to blobs named by their hash; others go through
    `file_digests` (memoised, so a model's weights are read once per machine)."""
    root = Path(folder)
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    blobs = {p: p.resolve().name for p in files if p.is_symlink() and p.resolve().parent.name == "blobs"}
    rest = [p for p in files if p not in blobs]
    hashed = dict(zip(rest, file_digests(rest), strict=True))
    return [(str(p.relative_to(root)), p.stat().st_size, blobs.get(p) or hashed[p]) for p in files]
