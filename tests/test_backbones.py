"""Tiny offline backbones: build, save, reload through from_pretrained, generate from an image."""

import pytest
import torch

from care.config import BackboneConfig
from care.data.schema import prompt_messages
from care.data.synthetic import make_splits
from care.models import load_backbone, load_processor, resolve_backbone
from care.models.tiny import build_key

TINY = {"qwen2_5_vl": 84 * 84, "qwen3_vl": 96 * 96}


def tiny_cfg(family: str) -> BackboneConfig:
    return BackboneConfig(name=f"tiny_{family}", family=family, min_pixels=TINY[family], max_pixels=TINY[family])


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_backbone_builds_reloads_and_generates_from_an_image(family, cache_dir):
    cfg = tiny_cfg(family)
    model, processor, source = load_backbone(cfg, cache_dir)
    assert f"tiny_{family}-{build_key(cfg)}" in source
    assert model.config.model_type == family
    record = make_splits(seed=0, train_size=2, eval_size=1)[0][0]
    text = processor.apply_chat_template(prompt_messages(record), add_generation_prompt=True, tokenize=False)
    assert text.count("<|image_pad|>") == 1 and text.endswith("<|im_start|>assistant\n")
    inputs = processor(text=[text], images=[record.images], return_tensors="pt")
    # one merged vision token per board cell: the image expands to 3 x 3 placeholder tokens
    assert (inputs["input_ids"] == processor.image_token_id).sum().item() == 9
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    # the image matters: a different board changes the next-token distribution
    other = make_splits(seed=1, train_size=2, eval_size=1)[0][0]
    both = processor(text=[text, text], images=[record.images, other.images], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**both).logits[:, -1]
    assert not torch.allclose(logits[0], logits[1])


def test_reload_reuses_the_cached_build(cache_dir):
    cfg = tiny_cfg("qwen2_5_vl")
    first = resolve_backbone(cfg, cache_dir)
    stamp = (cache_dir / "backbones").stat().st_mtime_ns
    assert resolve_backbone(cfg, cache_dir) == first
    assert (cache_dir / "backbones").stat().st_mtime_ns == stamp
    processor = load_processor(first, "qwen2_5_vl")
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == processor.image_token_id
    for token in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"):
        assert processor.tokenizer.convert_tokens_to_ids(token) != processor.tokenizer.unk_token_id


def test_dtype_option_is_honoured(cache_dir):
    cfg = tiny_cfg("qwen2_5_vl")
    cfg.dtype = "bfloat16"
    model, _, _ = load_backbone(cfg, cache_dir)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_local_path_loads_like_a_real_backbone(cache_dir):
    """A real backbone config pointed at saved weights goes through the same loader."""
    source = resolve_backbone(tiny_cfg("qwen3_vl"), cache_dir)
    real = BackboneConfig(name="qwen3_vl_8b", family="qwen3_vl", hub_id="Qwen/Qwen3-VL-8B-Instruct",
                          path=source, tiny=None)
    model, processor, loaded_from = load_backbone(real, cache_dir)
    assert loaded_from == source and model.config.model_type == "qwen3_vl"
