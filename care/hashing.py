"""Stable short hashes of configuration, for cache keys and run identity."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from typing import Any


def config_hash(*parts: Any, length: int = 12) -> str:
    def plain(x: Any) -> Any:
        return asdict(x) if is_dataclass(x) else x
    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
