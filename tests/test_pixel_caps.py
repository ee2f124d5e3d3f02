"""`backbone.min_pixels/max_pixels` decide the image-token count in every path that runs on CPU.

A "hub-like" backbone is made from the tiny build with the image processor a hub snapshot
ships (Qwen2.5-VL's wide default range), so a large image would give thousands of tokens if
the backbone's caps did not reach the processor. Paths checked: the processor that training
and HF evaluation use (`load_backbone`), TRL's own prompt tokenisation for HF rollouts, and
the image processor vLLM builds from the policy directory, given the kwargs we hand vLLM.
"""

import shutil
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from care.config import BackboneConfig
from care.models import load_backbone, load_processor, resolve_backbone
from care.models.loading import apply_pixel_caps, vllm_mm_processor_kwargs

MERGED_PATCH = 28 * 28  # Qwen2.5-VL: 14 px patches, 2 x 2 merged into one image token
MIN_PIXELS, MAX_PIXELS = 16 * MERGED_PATCH, 64 * MERGED_PATCH


@pytest.fixture(scope="module")
def hub_like_dir(tmp_path_factory, cache_dir):
    """The tiny weights with the processor range a real Qwen2.5-VL snapshot ships (3,136 to 12.8M pixels)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    out = tmp_path_factory.mktemp("hub_like") / "qwen2_5_vl"
    shutil.copytree(resolve_backbone(BackboneConfig(), cache_dir), out)
    processor = load_processor(str(out), "qwen2_5_vl")
    processor.image_processor = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, min_pixels=56 * 56,
                                                         max_pixels=28 * 28 * 16384)
    processor.save_pretrained(out)
    return out


def _backbone(path, **caps) -> BackboneConfig:
    return BackboneConfig(name="hub_like", family="qwen2_5_vl", path=str(path), tiny=None,
                          **{"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS, **caps})


def _messages(image):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "what?"}]}]


def _image_tokens(processor, ids) -> int:
    return int((torch.as_tensor(ids) == processor.image_token_id).sum())


def _grid_tokens(image_grid_thw) -> list[int]:
    """Image tokens per image: patches (t x h x w) over the 2 x 2 merge."""
    return (torch.as_tensor(image_grid_thw).prod(dim=-1) // 4).tolist()


def _processor_tokens(processor, image) -> int:
    text = processor.apply_chat_template(_messages(image), add_generation_prompt=True, tokenize=False)
    return _image_tokens(processor, processor(text=[text], images=[image], return_tensors="pt")["input_ids"])


LARGE = Image.new("RGB", (1600, 1200), (200, 30, 30))  # 1.92M pixels: ~2,450 tokens uncapped
SMALL = Image.new("RGB", (40, 30), (30, 200, 30))     # below min_pixels: scaled up


def test_caps_reach_training_eval_and_rollout_processors(cache_dir, hub_like_dir, tmp_path):
    from trl import GRPOTrainer

    uncapped = _processor_tokens(load_processor(str(hub_like_dir), "qwen2_5_vl"), LARGE)  # no caps: the hub's
    assert uncapped > 1000  # the fixture really is large for the hub's own range

    _, processor, _ = load_backbone(_backbone(hub_like_dir), cache_dir)
    large, small = _processor_tokens(processor, LARGE), _processor_tokens(processor, SMALL)
    assert MIN_PIXELS <= large * MERGED_PATCH <= MAX_PIXELS and large > 32
    assert MIN_PIXELS <= small * MERGED_PATCH <= MAX_PIXELS
    processor.save_pretrained(tmp_path / "saved")  # a cold-start checkpoint saves it so: the caps travel with it
    assert _processor_tokens(load_processor(str(tmp_path / "saved"), "qwen2_5_vl"), LARGE) == large

    # HF rollouts: TRL tokenises the prompt with the trainer's processing_class
    stand_in = SimpleNamespace(_is_vlm=True, environment_factories=None, processing_class=processor, tools=None,
                               chat_template=None, chat_template_kwargs={})
    prompt_ids, images, fields = GRPOTrainer._tokenize_prompts(stand_in, [_messages(LARGE), _messages(SMALL)])
    assert [_image_tokens(processor, ids) for ids in prompt_ids] == [large, small]
    assert _grid_tokens(fields["image_grid_thw"]) == [large, small]

    # vLLM loads the image processor from the policy directory (hub range) and applies our kwargs on top
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vllm_side = Qwen2VLImageProcessorPil.from_pretrained(hub_like_dir)
    grid = vllm_side(images=[LARGE, SMALL], **vllm_mm_processor_kwargs(MIN_PIXELS, MAX_PIXELS))["image_grid_thw"]
    assert _grid_tokens(grid) == [large, small]
    assert _grid_tokens(vllm_side(images=[LARGE])["image_grid_thw"]) == [uncapped]  # without them: the hub range


def test_bad_caps_name_the_values(cache_dir, hub_like_dir):
    _, processor, _ = load_backbone(_backbone(hub_like_dir), cache_dir)
    with pytest.raises(ValueError, match="min_pixels=500.*max_pixels=100"):
        apply_pixel_caps(processor, 500, 100)
