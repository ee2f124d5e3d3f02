"""Tiny Qwen2.5-VL / Qwen3-VL backbones built fully offline.

Real architecture classes with small sizes and random weights, a byte-level BPE tokenizer
trained here on the synthetic task's text plus the Qwen special tokens and a Qwen-style
chat template, and a PIL image processor. The build is written to disk once (keyed by a
hash of everything that shapes it) and always loaded back through `from_pretrained`, the
same path real weights take.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from care.atomic import save_pretrained_atomic
from care.config import BackboneConfig
from care.data.synthetic import tokenizer_corpus
from care.hashing import config_hash
from care.models.processors import IMAGE_ONLY_PROCESSORS

BUILD_VERSION = 3  # bump when the builder changes what it writes
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
# Response tags stay ordinary text, as in the real Qwen vocabularies, so tag handling is tested honestly.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PATCH_SIZE = {"qwen2_5_vl": 14, "qwen3_vl": 16}


def build_key(cfg: BackboneConfig) -> str:
    """Names the cached build; the weights come from a fixed seed, not from this key."""
    return config_hash("tiny_backbone", BUILD_VERSION, cfg.family, cfg.tiny, [cfg.min_pixels, cfg.max_pixels])


def _train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(tokenizer_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE, padding_side="left")


def _model_config(cfg: BackboneConfig, tokenizer: PreTrainedTokenizerFast):
    arch = cfg.tiny
    head_dim = arch.hidden_size // arch.num_heads
    quarter = head_dim // 2 // 4  # mrope sections (t, h, w) must sum to head_dim / 2
    mrope = [head_dim // 2 - 2 * quarter, quarter, quarter]
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
           (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(vocab_size=len(tokenizer), hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
                num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads,
                num_key_value_heads=arch.num_kv_heads, max_position_embeddings=1024, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
                bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(depth=arch.vision_depth, hidden_size=arch.vision_hidden_size,
                  intermediate_size=2 * arch.vision_hidden_size, num_heads=4, out_hidden_size=arch.hidden_size,
                  patch_size=PATCH_SIZE[cfg.family], spatial_merge_size=2, temporal_patch_size=2)
    if cfg.family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        vision.update(window_size=2 * 2 * PATCH_SIZE[cfg.family], fullatt_block_indexes=[arch.vision_depth - 1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                                **ids), Qwen2_5_VLForConditionalGeneration
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    text["head_dim"] = head_dim
    text["rope_parameters"]["mrope_interleaved"] = True
    vision.update(num_position_embeddings=64, deepstack_visual_indexes=[0])
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                         **ids), Qwen3VLForConditionalGeneration


def build_tiny_backbone(cfg: BackboneConfig, out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny backbone (weights, tokenizer, processor) into `out_dir`, atomically."""
    tokenizer = _train_tokenizer(cfg.tiny.vocab_size)
    image_processor = Qwen2VLImageProcessorPil(patch_size=PATCH_SIZE[cfg.family], merge_size=2,
                                               min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    processor = IMAGE_ONLY_PROCESSORS[cfg.family](image_processor=image_processor, tokenizer=tokenizer,
                                                  chat_template=CHAT_TEMPLATE)
    model_config, model_cls = _model_config(cfg, tokenizer)
    torch.manual_seed(seed)
    model = model_cls(model_config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return save_pretrained_atomic(out_dir, model, processor)


def tiny_backbone_dir(cfg: BackboneConfig, cache_dir: str | Path) -> Path:
    """The cached build for this config, built on first use.

    In a multi-process job rank 0 builds and the others wait: transformers writes weights from
    the main process only, so a build on another rank would cache a directory without them.
    """
    from care.distributed import is_main_process, main_process_decides, wait_for_everyone

    out_dir = Path(cache_dir) / "backbones" / f"{cfg.name}-{build_key(cfg)}"
    if not main_process_decides((out_dir / "config.json").exists()):
        if is_main_process():
            build_tiny_backbone(cfg, out_dir)
        wait_for_everyone()
    return out_dir
