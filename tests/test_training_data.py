"""The `data` group's path from files to training prompts: load -> dedupe -> length filter -> seeded
shuffle -> hold-out -> cap, one prompt builder for training and evaluation, and bad data refused early.

Uses the real-schema care_mix fixture (scripts/make_fixtures.py): 12 Geometry3K + 13 ChartQA + 10 ViRL39K
rows, one ViRL39K row repeating a Geometry3K one, one ChartQA question far over 2,048 tokens.
"""

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from care.config import Config, DataConfig
from care.data.adapters import DatasetUnavailable
from care.data.adapters.mix import dedupe_key
from care.data.schema import render_prompt, to_prompt_row
from care.data.synthetic import make_splits
from care.data.training import prompt_token_counts, split_training_data
from care.models import load_processor, resolve_backbone

MIX = Path(__file__).parent / "fixtures" / "care_mix"
SOURCES = {"geometry3k", "chartqa", "virl39k"}


@pytest.fixture(scope="module")
def processor(cache_dir):
    cfg = Config(cache_dir=str(cache_dir))
    return load_processor(resolve_backbone(cfg.backbone, cache_dir), cfg.backbone.family)


def mix_config(cache_dir, path=MIX, **data) -> Config:
    fields = {"name": "care_mix", "path": str(path), "train_size": None, "eval_size": 4, **data}
    return Config(cache_dir=str(cache_dir), data=DataConfig(**fields))


def test_care_mix_counts_every_step(processor, cache_dir):
    data = split_training_data(mix_config(cache_dir), processor)
    assert data.counts == {
        "loaded": 35, "duplicates_removed": 1, "filtered_overlong": 1, "train": 29, "held_out": 4,
        "max_prompt_length": 2048, "train_by_source": data.counts["train_by_source"],
        "held_out_by_source": data.counts["held_out_by_source"], "dropped": {}, "escaped": {}}
    assert set(data.counts["train_by_source"]) == SOURCES
    assert sum(data.counts["train_by_source"].values()) == 29
    assert sum(data.counts["held_out_by_source"].values()) == 4
    everything = data.train + data.held_out
    assert "virl39k-virl-dup-5" not in {r.id for r in everything}  # the cross-source duplicate
    assert not any(r.question.startswith("The chart lists, region by region") for r in everything)


def test_held_out_never_overlaps_training_and_the_cap_comes_after_it(processor, cache_dir):
    full = split_training_data(mix_config(cache_dir), processor)
    capped = split_training_data(mix_config(cache_dir, train_size=5), processor)
    train_keys = {dedupe_key(r) for r in full.train}
    assert not train_keys & {dedupe_key(r) for r in full.held_out}
    assert not {r.id for r in full.train} & {r.id for r in full.held_out}
    assert [r.id for r in capped.held_out] == [r.id for r in full.held_out]
    assert [r.id for r in capped.train] == [r.id for r in full.train[:5]]
    assert capped.counts["train"] == 5


def test_the_shuffle_is_seeded(processor, cache_dir):
    first = [r.id for r in split_training_data(mix_config(cache_dir), processor).train]
    again = [r.id for r in split_training_data(mix_config(cache_dir), processor).train]
    other = [r.id for r in split_training_data(mix_config(cache_dir, seed=1), processor).train]
    assert first == again and sorted(first) != first and other != first


def test_synthetic_data_is_the_generated_splits_unchanged(processor, cache_dir):
    cfg = Config(cache_dir=str(cache_dir), data=DataConfig(train_size=40, eval_size=8))
    data = split_training_data(cfg, processor)
    train, held_out = make_splits(0, 40, 8)
    assert [r.id for r in data.train] == [r.id for r in train]
    assert [r.id for r in data.held_out] == [r.id for r in held_out]
    assert data.counts["duplicates_removed"] == data.counts["filtered_overlong"] == 0


def test_prompt_length_counts_image_tokens_as_the_processor_does(processor, cache_dir):
    records = split_training_data(mix_config(cache_dir), processor).train[:6]
    backbone = Config().backbone
    counted = prompt_token_counts(processor, records, backbone.min_pixels, backbone.max_pixels)
    for record, count in zip(records, counted, strict=True):
        inputs = processor(text=[render_prompt(processor, record)], images=[record.images])
        assert len(inputs["input_ids"][0]) == count
        assert inputs["input_ids"][0].count(processor.image_token_id) > len(record.images)  # expanded


def test_training_and_evaluation_render_one_prompt(processor, cache_dir):
    """TRL turns a training row into messages its own way; the result is the evaluation prompt."""
    from trl.data_utils import prepare_multimodal_messages

    for record in split_training_data(mix_config(cache_dir), processor).train[:4]:
        row = to_prompt_row(record)
        messages = prepare_multimodal_messages(row["prompt"], images=row["images"])
        trained = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert trained == render_prompt(processor, record)
        assert "<think>" in trained and "<answer>" in trained and record.question in trained


# ------------------------------------------------------------------------------------------ bad data


def test_missing_path_names_the_key_and_value(processor, cache_dir, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetUnavailable, match=f"data.path='{missing}'"):
        split_training_data(mix_config(cache_dir, missing), processor)


def test_folder_lacking_a_component(processor, cache_dir, tmp_path):
    for component in ("geometry3k", "chartqa"):
        shutil.copytree(MIX / component, tmp_path / component)
    with pytest.raises(DatasetUnavailable, match=f"data.path='{tmp_path}'.*no 'virl39k' entry"):
        split_training_data(mix_config(cache_dir, tmp_path), processor)


def test_unreadable_image(processor, cache_dir, tmp_path):
    shutil.copytree(MIX, tmp_path / "mix")
    image = next((tmp_path / "mix" / "virl39k" / "images").glob("*.png"))
    image.write_bytes(b"this is not a picture")
    with pytest.raises(ValueError, match=f"data.path='{tmp_path / 'mix'}': 1 of 35 rows are bad .*undecodable_image 1.*"
                                         f"39Krelease.parquet row 1: image 'images/{image.name}': its 21 bytes are in no"):
        split_training_data(mix_config(cache_dir, tmp_path / "mix"), processor)


def test_empty_after_the_length_filter(processor, cache_dir):
    from dataclasses import replace

    cfg = mix_config(cache_dir)
    with pytest.raises(ValueError, match="34 of 34 prompts are longer than rl.max_prompt_length=8 tokens"):
        split_training_data(replace(cfg, rl=replace(cfg.rl, max_prompt_length=8)), processor)


def test_a_hold_out_that_leaves_nothing_to_train(processor, cache_dir):
    with pytest.raises(ValueError, match="data.eval_size=40 would hold out all 33"):
        split_training_data(mix_config(cache_dir, eval_size=40), processor)


def test_config_refuses_a_path_for_generated_data_and_unknown_names():
    with pytest.raises(ValueError, match="data.path='/x' is set but data=synthetic"):
        DataConfig(path="/x")
    with pytest.raises(ValueError, match="data.name='mix'.*care_mix"):
        DataConfig(name="mix")
    assert replace(DataConfig(), name="care_mix", train_size=None).train_size is None


def test_unset_path_loads_the_hub_id_and_fails_at_once_offline(processor, cache_dir, monkeypatch):
    import time

    import datasets  # noqa: F401  (imported before timing)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DatasetUnavailable, match="data=geometry3k: .*hiyouga/geometry3k.*HF_HUB_OFFLINE.*data.path"):
        split_training_data(Config(cache_dir=str(cache_dir), data=DataConfig(name="geometry3k", train_size=None)),
                            processor)
    assert time.monotonic() - start < 5


def test_prepare_reuses_a_split_only_for_the_same_limit(processor, cache_dir):
    """Jobs of one local sweep share a process: a job with another prompt limit must not get the
    split prepared for the job before it."""
    from dataclasses import replace

    from care.data.training import prepare, prompt_token_counts

    cfg = mix_config(cache_dir, max_overlong_fraction=1.0)
    first = prepare(cfg, processor)
    assert prepare(replace(cfg), processor) is first  # same config: prepared once
    lengths = sorted(prompt_token_counts(processor, first.train, cfg.backbone.min_pixels, cfg.backbone.max_pixels))
    median = lengths[len(lengths) // 2]
    tighter = prepare(replace(cfg, rl=replace(cfg.rl, max_prompt_length=median)), processor)
    assert tighter is not first and tighter.counts["filtered_overlong"] > first.counts["filtered_overlong"]
