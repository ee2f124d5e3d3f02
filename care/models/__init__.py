"""Policy backbones: real Qwen-VL weights or tiny offline builds, one loading path."""

from care.models.loading import BackboneUnavailable, load_backbone, load_processor, resolve_backbone

__all__ = ["BackboneUnavailable", "load_backbone", "load_processor", "resolve_backbone"]
