"""Qwen-VL processors that need no video processor, hence no torchvision.

The stock Qwen2.5-VL / Qwen3-VL processors insist on a video processor, whose only
implementation imports torchvision, which has no working CPU build on this project's
machines. These subclasses declare only `image_processor` and `tokenizer` (transformers
derives a processor's parts from its `__init__` signature), so they save and load with
the ordinary `from_pretrained` and handle text + images exactly like the stock ones.
"""

from __future__ import annotations

from transformers import Qwen2_5_VLProcessor, Qwen3VLProcessor
from transformers.processing_utils import ProcessorMixin


def _set_vision_tokens(processor: ProcessorMixin, tokenizer) -> None:
    for role, token in (("image", "<|image_pad|>"), ("video", "<|video_pad|>"),
                        ("vision_start", "<|vision_start|>"), ("vision_end", "<|vision_end|>")):
        setattr(processor, f"{role}_token", token)
        setattr(processor, f"{role}_token_id", tokenizer.convert_tokens_to_ids(token))


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        _set_vision_tokens(self, tokenizer)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        _set_vision_tokens(self, tokenizer)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


IMAGE_ONLY_PROCESSORS = {"qwen2_5_vl": ImageOnlyQwen2_5_VLProcessor, "qwen3_vl": ImageOnlyQwen3VLProcessor}
