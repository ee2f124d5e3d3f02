"""The `data` group's path from files to training prompts: load -> dedupe -> length filter -> seeded
shuffle -> hold-out -> cap, one prompt builder for training and evaluation, and bad data refused early.

Uses the real-schema care_mix fixture (scripts/make_fixtures.py): 12 Geometry3K + 10 ViRL39K rows, ChartQA's
train split 8 human-written + 5 machine-augmented rows and its val split 5 + 3 (the default human subset of
train + val: 13 ChartQA rows, 8 left out), one ViRL39K row repeating a Geometry3K one, one ChartQA question
far over 2,048 tokens.
"""

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from care.config import Config, DataConfig
from care.data.adapters import DatasetUnavailable, Selection
from care.data.adapters.mix import dedupe_key
from care.data.loading import load_records
from care.data.rows import DropReport
from care.data.schema import render_prompt, to_prompt_row
from care.data.synthetic import make_splits
from care.data.training import prompt_token_counts, selections, split_training_data
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
        "held_out_by_source": data.counts["held_out_by_source"], "dropped": {}, "escaped": {},
        "loaded_by_source": {"chartqa": 13, "geometry3k": 12, "virl39k": 10}, "subset_filtered": {"chartqa": 8}}
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


# ---------------------------------------------------------------------------------- ChartQA's subset


@pytest.mark.parametrize(("subset", "splits", "chartqa", "filtered"), [
    ("human", ["train", "val"], 13, 8), ("augmented", ["train", "val"], 8, 13), ("all", ["train", "val"], 21, 0),
    ("human", ["train"], 8, 5), ("augmented", ["train"], 5, 8), ("all", ["train"], 13, 0),
])
def test_the_chartqa_subset_filters_the_fixture_rows(subset, splits, chartqa, filtered):
    """human_or_machine is 0 (human-written) or 1 (machine-augmented), as in HuggingFaceM4/ChartQA's ClassLabel."""
    report = DropReport()
    data = DataConfig(name="chartqa", path=str(MIX / "chartqa"), train_size=None, chartqa_subset=subset,
                      chartqa_splits=splits)
    records = load_records("chartqa", path=data.path, report=report, selections=selections(data))
    assert len(records) == report.rows["chartqa"] == chartqa
    assert report.filtered["chartqa"] == filtered and report.total_dropped == 0
    assert {r.meta["split"] for r in records} == set(splits)
    assert {r.meta["human_or_machine"] for r in records} == {"human": {0}, "augmented": {1}, "all": {0, 1}}[subset]
    assert len({r.id for r in records}) == chartqa  # ids stay per split and row: "chartqa-val-3"


def test_the_subset_is_counted_apart_from_bad_rows(processor, cache_dir):
    """Rows of another subset are neither loaded nor dropped: care_mix with every ChartQA row trains on 8 more."""
    data = split_training_data(mix_config(cache_dir, chartqa_subset="all"), processor)
    assert data.counts["loaded"] == 43 and data.counts["loaded_by_source"]["chartqa"] == 21
    assert data.counts["subset_filtered"] == {} and data.counts["dropped"] == {}
    assert data.counts["train"] == 43 - 1 - 1 - 4
    human = split_training_data(mix_config(cache_dir), processor)
    assert human.counts["subset_filtered"] == {"chartqa": 8} and human.counts["dropped"] == {}
    assert all(r.meta["human_or_machine"] == 0 for r in human.train + human.held_out if r.source == "chartqa")


def test_a_copy_lacking_a_split_the_key_asks_for_fails_naming_the_key(processor, cache_dir, tmp_path):
    for component in ("geometry3k", "virl39k"):
        shutil.copytree(MIX / component, tmp_path / component)
    shutil.copytree(MIX / "chartqa", tmp_path / "chartqa", ignore=shutil.ignore_patterns("val-*"))
    with pytest.raises(DatasetUnavailable, match=r"data.chartqa_splits=\['train', 'val'\] asks for the 'val' split; "
                                                 r"no 'val' split under .*chartqa' \(found train\)\. .*"
                                                 r"set data.chartqa_splits=\[train\] to train without it"):
        split_training_data(mix_config(cache_dir, tmp_path), processor)
    fewer = split_training_data(mix_config(cache_dir, tmp_path, chartqa_splits=["train"]), processor)
    assert fewer.counts["loaded_by_source"]["chartqa"] == 8 and fewer.counts["subset_filtered"] == {"chartqa": 5}


def test_a_single_file_copy_cannot_stand_for_several_splits(tmp_path):
    file = tmp_path / "rows.parquet"
    shutil.copy(MIX / "chartqa" / "data" / "train-00000-of-00001.parquet", file)
    with pytest.raises(DatasetUnavailable, match="asks for the 'train' split; .*is one file, not named after 'train'"):
        load_records("chartqa", path=file, selections=selections(DataConfig()))
    assert len(load_records("chartqa", path=file, selections=selections(DataConfig(chartqa_splits=["train"])))) == 8


def test_a_row_without_the_subset_column_is_a_bad_row_naming_the_key(tmp_path):
    import datasets

    rows = datasets.Dataset.from_parquet(str(MIX / "chartqa" / "data" / "train-00000-of-00001.parquet"))
    rows.remove_columns("human_or_machine").to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    only_train = selections(DataConfig(chartqa_splits=["train"]))
    with pytest.raises(ValueError, match="column 'human_or_machine' is missing: data.chartqa_subset='human' picks rows "
                                         "by it .*data.chartqa_subset=all reads every row"):
        load_records("chartqa", path=tmp_path, selections=only_train)
    everything = selections(DataConfig(chartqa_splits=["train"], chartqa_subset="all"))
    assert len(load_records("chartqa", path=tmp_path, selections=everything)) == 13


def test_chartqa_keys_are_checked():
    with pytest.raises(ValueError, match="data.chartqa_subset='machine' is not accepted; choose one of human, "
                                         "augmented, all"):
        DataConfig(chartqa_subset="machine")
    with pytest.raises(ValueError, match="data.chartqa_splits='validation' is not accepted; choose one of train, val, test"):
        DataConfig(chartqa_splits=["train", "validation"])
    with pytest.raises(ValueError, match="data.chartqa_splits is empty"):
        DataConfig(chartqa_splits=[])
    with pytest.raises(ValueError, match="names a split twice"):
        DataConfig(chartqa_splits=["train", "train"])
    assert selections(DataConfig())["chartqa"] == Selection(("train", "val"), "human", "data.chartqa_splits",
                                                            "data.chartqa_subset")


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
