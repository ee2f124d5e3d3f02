"""Load a policy backbone and its processor: tiny offline builds and real weights alike.

Real backbones come from `backbone.path` (a local directory) or `backbone.hub_id`. With
HF_HUB_OFFLINE=1 a missing hub snapshot fails at once with an error naming
`backbone.path`, instead of the hub client's long retries.
"""

from __future__ import annotations

import importlib.util
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


def apply_pixel_caps(processor, min_pixels: int, max_pixels: int):
    """Set the image processor's pixel range (Qwen-VL: `size.shortest_edge/longest_edge` count pixels).

    A hub processor ships its own range (Qwen2.5-VL: 3,136 to 12.8M pixels); the backbone's
    caps must win so training, HF rollouts and evaluation see the same number of image tokens.
    """
    if not 1 <= min_pixels <= max_pixels:
        raise ValueError(f"pixel caps need 1 <= min_pixels <= max_pixels, got min_pixels={min_pixels}, "
                         f"max_pixels={max_pixels}")
    from transformers.image_utils import SizeDict

    image_processor = processor.image_processor
    image_processor.size = SizeDict(shortest_edge=min_pixels, longest_edge=max_pixels)
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if hasattr(image_processor, name):  # older processors keep both spellings
            setattr(image_processor, name, value)
    return processor


def vllm_mm_processor_kwargs(min_pixels: int, max_pixels: int) -> dict:
    """The same caps for vLLM (`LLM(mm_processor_kwargs=...)`, `vllm serve --mm-processor-kwargs`)."""
    return {"min_pixels": min_pixels, "max_pixels": max_pixels}


def load_processor(source: str, family: str, min_pixels: int | None = None, max_pixels: int | None = None):
    """AutoProcessor where torchvision exists; otherwise the image-only Qwen processor.

    With `min_pixels`/`max_pixels` (the backbone's caps) those replace whatever range the saved
    processor carries.
    """
    processor = None
    if importlib.util.find_spec("torchvision") is not None:
        from transformers import AutoProcessor
        try:
            processor = AutoProcessor.from_pretrained(source)
        except (ValueError, OSError, TypeError):
            pass  # a tiny build names our image-only class, which AutoProcessor cannot resolve
    if processor is None:
        from care.models.processors import IMAGE_ONLY_PROCESSORS
        processor = IMAGE_ONLY_PROCESSORS[family].from_pretrained(source)
        processor.tokenizer.padding_side = "left"
    if min_pixels is not None or max_pixels is not None:
        size = processor.image_processor.size
        apply_pixel_caps(processor, size["shortest_edge"] if min_pixels is None else min_pixels,
                         size["longest_edge"] if max_pixels is None else max_pixels)
    return processor


def load_backbone(cfg: BackboneConfig, cache_dir: str | Path, source: str | None = None):
    """(model, processor, source_dir). `source` overrides the config (e.g. a cold-start checkpoint)."""
    from transformers import AutoModelForImageTextToText
    source = source or resolve_backbone(cfg, cache_dir)
    model = AutoModelForImageTextToText.from_pretrained(
        source, dtype=DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation)
    if torch.cuda.is_available():  # this process's GPU (one process per GPU)
        from care.distributed import local_rank

        model.to(f"cuda:{local_rank()}")
    return model, load_processor(source, cfg.family, cfg.min_pixels, cfg.max_pixels), source
