"""Load a policy backbone and its processor: tiny offline builds and real weights alike.

Real backbones come from `backbone.path` (a local directory) or `backbone.hub_id`. With
HF_HUB_OFFLINE=1 a missing hub snapshot fails at once with an error naming
`backbone.path`, instead of the hub client's long retries.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from care.config import DTYPES as DTYPE_NAMES
from care.config import BackboneConfig
from care.hub import hub_offline

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}  # backbone.dtype -> torch dtype


class BackboneUnavailable(FileNotFoundError):
    pass


def resolve_backbone(cfg: BackboneConfig, cache_dir: str | Path) -> str:
    """A local directory holding the weights, or raise naming the key to set."""
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not (path / "config.json").is_file():
            raise BackboneUnavailable(
                f"backbone.path={cfg.path!r} holds no model (no config.json there); "
                f"point backbone.path at a directory of saved weights for {cfg.name}")
        return str(path)
    if cfg.tiny is not None:
        from care.models.tiny import tiny_backbone_dir
        return str(tiny_backbone_dir(cfg, cache_dir))
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(cfg.hub_id, local_files_only=hub_offline())
    except Exception as err:  # the hub client raises several unrelated types for "not reachable"
        mode = "HF_HUB_OFFLINE is set and it is not in the local cache" if hub_offline() else str(err)
        raise BackboneUnavailable(
            f"weights for backbone {cfg.name!r} ({cfg.hub_id}) are not reachable: {mode}. "
            f"Set backbone.path=/dir/with/weights (or download {cfg.hub_id} into the HF cache)") from err


def load_processor(source: str, family: str):
    """AutoProcessor where torchvision exists; otherwise the image-only Qwen processor."""
    if importlib.util.find_spec("torchvision") is not None:
        from transformers import AutoProcessor
        try:
            return AutoProcessor.from_pretrained(source)
        except (ValueError, OSError, TypeError):
            pass  # a tiny build names our image-only class, which AutoProcessor cannot resolve
    from care.models.processors import IMAGE_ONLY_PROCESSORS
    processor = IMAGE_ONLY_PROCESSORS[family].from_pretrained(source)
    processor.tokenizer.padding_side = "left"
    return processor


def load_backbone(cfg: BackboneConfig, cache_dir: str | Path, source: str | None = None):
    """(model, processor, source_dir). `source` overrides the config (e.g. a cold-start checkpoint)."""
    from transformers import AutoModelForImageTextToText
    source = source or resolve_backbone(cfg, cache_dir)
    model = AutoModelForImageTextToText.from_pretrained(
        source, dtype=DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation)
    if torch.cuda.is_available():  # this process's GPU (one process per GPU)
        model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return model, load_processor(source, cfg.family), source
