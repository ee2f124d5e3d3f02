"""Stable short hex digests: of content (text, bytes) and of configuration (dataclasses, dicts).

Every hash in the suite goes through `digest`, so its spelling lives in one place. Some digests
name generated data (the synthetic task's record ids): their inputs and algorithm must not change,
or the data changes with them. Cache keys and run identity use `config_hash`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
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
