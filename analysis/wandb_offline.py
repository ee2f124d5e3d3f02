"""Offline W&B runs read back without a server: `wandb/offline-run-*/run-<id>.wandb` as API-like runs.

A cluster without internet writes W&B runs offline (`wandb.mode=offline`, the default without
credentials). `wandb sync` needs a server; this reads the run's own record file so the analysis
can use it as it is (`python -m analysis.collect --from-wandb-offline DIR`). The objects below
offer what `analysis.wandb_source` reads of the public API's runs: id, group, state, tags, config,
summary, created_at/heartbeat_at and scan_history().

The file is W&B's append-only record log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then
LevelDB log records (4-byte CRC, 2-byte little-endian length, 1-byte type) in 32 KiB blocks, each
payload a `wandb_internal_pb2.Record` protobuf. A record cut off by a kill ends the scan; the rows
before it stay readable (a killed run shows as unfinished).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def masked_crc(data: bytes) -> int:
    """LevelDB's CRC over the record type and payload (wandb writes plain CRC-32, not CRC-32C)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def payloads(path: Path) -> Iterator[bytes]:
    """Each whole record's bytes, in order; stops at the first torn or corrupt record."""
    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path} is not a W&B run file (no :W&B header)")
    position, pending = len(HEADER), b""
    while position + 7 <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < 7:  # too small for a record header: zero padding
            position += left_in_block
            continue
        checksum, length, kind = struct.unpack_from("<IHB", data, position)
        body = data[position + 7: position + 7 + length]
        if len(body) < length or kind not in (FULL, FIRST, MIDDLE, LAST) or \
                masked_crc(bytes([kind]) + body) != checksum:
            return
        position += 7 + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        else:
            yield pending + body
            pending = b""


def item_value(item: Any) -> Any:
    """A history/summary/config item's value: W&B writes either value_json or a typed field."""
    if item.value_json:
        return json.loads(item.value_json)
    kind = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    return getattr(item, kind) if kind else None


def item_key(item: Any) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def set_nested(target: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value


class OfflineRun:
    """One offline run, read once from its record file."""

    def __init__(self, path: Path) -> None:
        from wandb.proto import wandb_internal_pb2

        self.path = Path(path)
        self.id = self.group = self.job_type = None
        self.tags: list[str] = []
        self.config: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []
        self.exit_code: int | None = None
        self.created_at = None
        for blob in payloads(self.path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(blob)
            self._apply(record)
        self.heartbeat_at = datetime.fromtimestamp(self.path.stat().st_mtime, timezone.utc).isoformat()

    def _apply(self, record: Any) -> None:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            self.id, self.group, self.job_type = run.run_id, run.run_group or None, run.job_type or None
            self.tags = list(run.tags)
            if run.HasField("start_time"):
                self.created_at = run.start_time.ToDatetime(timezone.utc).isoformat()
            for item in run.config.update:
                set_nested(self.config, item_key(item), item_value(item))
        elif kind == "config":
            for item in record.config.update:
                set_nested(self.config, item_key(item), item_value(item))
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                set_nested(row, item_key(item), item_value(item))
            self.rows.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                set_nested(self.summary, item_key(item), item_value(item))
        elif kind == "exit":
            self.exit_code = record.exit.exit_code

    @property
    def state(self) -> str:
        if self.exit_code is None:
            return "running"  # killed, or still writing
        return "finished" if self.exit_code == 0 else "failed"

    def scan_history(self, keys: list[str] | None = None, **_: Any) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            yield {k: v for k, v in row.items() if keys is None or k in keys or k.startswith("_")}


class OfflineApi:
    """`runs(path, filters)` over the offline runs under a folder, as `wandb.Api().runs` answers."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"--from-wandb-offline {self.root}: no such folder")

    def runs(self, path: str = "", filters: dict | None = None, **_: Any) -> list[OfflineRun]:
        files = {file.resolve() for file in self.root.rglob("run-*.wandb")
                 if "latest-run" not in file.parts}  # W&B's link (or, copied, a copy) of the newest run
        found = [OfflineRun(file) for file in sorted(files)]
        group = (filters or {}).get("group")
        return [run for run in found if run.id and (group is None or run.group == group)]
