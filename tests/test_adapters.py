"""Dataset adapters: every dataset's fixture (real schema, real file layout) -> valid `Record`s.

Fixtures are written by scripts/make_fixtures.py. Nothing here touches the network: the hub path is
exercised with HF_HUB_OFFLINE=1 (fails fast) and with `datasets.load_dataset` replaced by a fake.
"""

import json
import shutil
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from care.data.adapters import DATASET_NAMES, SPECS, clean_placeholders, dedupe, parse_options_literal
from care.data.adapters.common import (
    LETTERS,
    image_digest,
    looks_mathematical,
    open_encoded,
    split_embedded_options,
)
from care.data.loading import DatasetUnavailable, MalformedRow, RowProblem, load_records
from care.data.schema import ANSWER_TYPES, Record, prompt_text, to_prompt_row
from care.verifiers import verify
from tests.no_network import no_network

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_PATHS = {
    "geometry3k": "geometry3k", "chartqa": "chartqa", "virl39k": "virl39k", "care_mix": "care_mix",
    "mathvista": "mathvista", "mathverse": "mathverse", "mathvision": "mathvision", "mmmu": "mmmu",
    "mmmu_pro_standard": "mmmu_pro", "mmmu_pro_vision": "mmmu_pro",
}
EXPECTED_COUNTS = {"geometry3k": 4, "chartqa": 4, "virl39k": 6, "care_mix": 34, "mathvista": 5, "mathverse": 4,
                   "mathvision": 4, "mmmu": 4, "mmmu_pro_standard": 3, "mmmu_pro_vision": 3}
MIX_SOURCES = {"geometry3k", "chartqa", "virl39k"}


def load(name, **kwargs):
    return load_records(name, path=FIXTURES / FIXTURE_PATHS[name], **kwargs)


def by_id(records):
    return {r.id: r for r in records}


def test_registry_covers_every_dataset():
    assert set(DATASET_NAMES) == set(FIXTURE_PATHS)
    assert SPECS["geometry3k"].config_key == "data.path"
    assert SPECS["mmmu"].config_key == "eval.paths.mmmu"


# ----------------------------------------------------------------------------------- schema, per dataset


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_fixture_loads_into_valid_records(name):
    records = load(name)
    assert len(records) == EXPECTED_COUNTS[name]
    assert len({r.id for r in records}) == len(records)
    for r in records:
        assert isinstance(r, Record) and isinstance(r.id, str) and r.id
        assert r.source == name or (name == "care_mix" and r.source in MIX_SOURCES)
        assert r.id.startswith(f"{r.source}-")
        assert isinstance(r.question, str) and r.question.strip()
        assert isinstance(r.answer, str) and r.answer.strip()
        assert r.answer_type in ANSWER_TYPES
        assert r.images and all(isinstance(image, Image.Image) for image in r.images)
        assert all(image.size == (32, 32) for image in r.images)
        assert "<image>" not in r.question and "<image" not in r.question.replace("<image ", "")
        if r.choices is not None:
            assert r.answer_type == "choice"
            assert isinstance(r.choices, list) and all(isinstance(c, str) for c in r.choices)
            assert 2 <= len(r.choices) <= len(LETTERS)
        if r.answer_type == "choice":
            assert r.answer in LETTERS
            if r.choices:
                assert LETTERS.index(r.answer) < len(r.choices)
            assert verify(f"<think>.</think><answer>{r.answer}</answer>", r.answer, "choice", r.choices).correct
        row = to_prompt_row(r)
        assert row["images"] is r.images and row["answer"] == r.answer


def test_records_are_stable_across_loads():
    first, second = load("virl39k"), load("virl39k")
    assert [r.id for r in first] == [r.id for r in second]
    assert [image_digest(r.images[0]) for r in first] == [image_digest(r.images[0]) for r in second]


def test_geometry3k_strips_bare_placeholders_and_is_math():
    records = load("geometry3k")
    assert [r.id for r in records] == [f"geometry3k-train-{i}" for i in range(4)]
    assert records[0].question == "Find x." and records[0].answer == "3"
    assert {r.answer_type for r in records} == {"math"}
    assert records[3].answer == "4+2\\sqrt{3}"


def test_chartqa_takes_first_label_and_types_numbers_as_math():
    records = load("chartqa")
    assert [(r.answer, r.answer_type) for r in records] == [
        ("62", "math"), ("Yes", "text"), ("Democrats", "text"), ("17.5", "math")]
    assert records[0].meta["labels"] == ["62"]


def test_virl39k_unboxes_answers_and_splits_inline_choices():
    records = by_id(load("virl39k"))
    mc = records["virl39k-virl-mc-1"]
    assert mc.answer == "B" and mc.answer_type == "choice"
    assert mc.choices == ["the circle", "the square", "the triangle", "they are equal"]
    assert mc.question == "Which shape covers the largest area?"
    assert "(A) the circle" in prompt_text(mc)
    assert (records["virl39k-virl-num-2"].answer, records["virl39k-virl-num-2"].answer_type) == ("7", "math")
    assert records["virl39k-virl-expr-3"].answer == "2\\sqrt{3}"
    two = records["virl39k-virl-two-4"]
    assert len(two.images) == 2 and (two.answer, two.answer_type) == ("left", "text")
    assert not two.question.startswith(" ") and "<image>" not in two.question
    in_image = records["virl39k-virl-imgmc-6"]
    assert (in_image.answer, in_image.answer_type, in_image.choices) == ("C", "choice", None)
    assert mc.meta["category"] == "Spatial Reasoning" and mc.meta["raw_answer"] == "\\boxed{B}"
    assert mc.meta["PassRate_32BTrained"] == 0.5


def test_mathvista_maps_option_text_to_letter_and_keeps_format_hints():
    records = by_id(load("mathvista"))
    mc = records["mathvista-1"]
    assert (mc.answer, mc.answer_type, mc.choices) == ("C", "choice", ["35°", "55°", "145°", "155°"])
    assert records["mathvista-2"].answer_type == "math"
    assert records["mathvista-3"].answer == "1.2" and "1 decimal place" in records["mathvista-3"].question
    assert records["mathvista-3"].meta["unit"] == "m"
    assert records["mathvista-4"].answer_type == "text"
    assert records["mathvista-5"].answer_type == "math" and "list" in records["mathvista-5"].question


def test_mathverse_json_with_image_folder():
    records = by_id(load("mathverse"))
    mc = records["mathverse-1"]
    assert mc.choices == ["40°", "50°", "120°", "130°"] and mc.answer == "D"
    assert "Choices" not in mc.question and mc.question.endswith("What is the size of angle 2?")
    vision_only = records["mathverse-2"]
    assert vision_only.choices is None and vision_only.answer_type == "choice"
    assert "shown in the image" in vision_only.question
    assert vision_only.meta["problem_version"] == "Vision Only"
    assert (records["mathverse-3"].answer, records["mathverse-3"].answer_type) == ("2\\sqrt{5}", "math")


def test_mathvision_normalises_numbered_placeholders():
    records = by_id(load("mathvision"))
    assert records["mathvision-1"].question.startswith("When the ant <image 1> walks from home <image 2>")
    assert records["mathvision-1"].choices == list("ABCDE") and records["mathvision-1"].answer == "C"
    assert records["mathvision-2"].answer == "B" and records["mathvision-2"].choices[1] == "7"
    assert (records["mathvision-3"].answer_type, records["mathvision-4"].answer_type) == ("math", "math")
    assert records["mathvision-4"].meta["subject"] == "metric geometry - area"


def test_mmmu_parses_options_and_collects_image_columns():
    records = by_id(load("mmmu"))
    assert set(records) == {"mmmu-validation_Accounting_1", "mmmu-validation_Accounting_2",
                            "mmmu-validation_Art_Theory_1", "mmmu-validation_Art_Theory_2"}  # no dev row
    mc = records["mmmu-validation_Accounting_1"]
    assert mc.choices == ["$6", "Smith's, Inc.", "1,000", "None of the above"] and mc.answer == "B"
    assert mc.question.startswith("<image 1> ") and mc.meta["subject"] == "Accounting"
    art = records["mmmu-validation_Art_Theory_1"]
    assert len(art.images) == 3 and art.meta["image_columns"] == ["image_1", "image_2", "image_3"]
    assert art.choices == ["<image 2>", "<image 3>"]
    open_numeric = records["mmmu-validation_Accounting_2"]
    assert (open_numeric.answer, open_numeric.answer_type, open_numeric.choices) == ("0.25", "math", None)
    listed = records["mmmu-validation_Art_Theory_2"]
    assert listed.answer == "1889" and listed.meta["accepted_answers"] == ["1889", "1890"]


def test_mmmu_other_split_by_file_name():
    [record] = load("mmmu", split="dev")
    assert record.id == "mmmu-dev_Accounting_1" and record.answer == "A"


def test_mmmu_pro_standard_ten_options_from_snapshot_root():
    records = by_id(load("mmmu_pro_standard"))  # path is the repo root: the config folder is picked
    first = records["mmmu_pro_standard-test_Math_1"]
    assert len(first.choices) == 10 and first.answer == "J"
    assert first.choices[-1] == "It cannot be determined, as 'x' is unknown"
    assert len(records["mmmu_pro_standard-test_Physics_2"].images) == 2


def test_mmmu_pro_vision_hides_options_from_the_prompt():
    records = load("mmmu_pro_vision")
    for r in records:
        assert r.choices is None and r.meta["options"] and "shown in the image" in r.question
        assert "(A)" not in prompt_text(r)
    assert [r.answer for r in records] == ["J", "C", "A"]


# ---------------------------------------------------------------------------------------------- care_mix


def test_care_mix_drops_the_cross_source_duplicate():
    records = load("care_mix")
    ids = [r.id for r in records]
    assert "virl39k-virl-dup-5" not in ids and "geometry3k-train-0" in ids
    assert by_id(records)["geometry3k-train-0"].meta["duplicate_ids"] == ["virl39k-virl-dup-5"]
    assert {r.source for r in records} == MIX_SOURCES
    assert len(load("care_mix", limit=2)) == 2


def test_care_mix_from_the_top_fixture_folder_unions_all_three():
    records = load_records("care_mix", path=FIXTURES)
    assert len(records) == 4 + 4 + 6 - 1


def _record(rid, question, image, answer="1"):
    return Record(id=rid, images=[image], question=question, answer=answer, answer_type="math", source="x")


def test_dedupe_key_is_normalised_text_plus_pixels():
    picture = Image.new("RGB", (8, 8), (10, 20, 30))
    encoded = _png_bytes(picture)
    other = Image.new("RGB", (8, 8), (10, 20, 31))
    records = [
        _record("a", "Find  X.", picture),
        _record("b", "find x.", open_encoded(encoded), answer="2"),  # same pixels via bytes: duplicate
        _record("c", "find x.", other),  # different image: kept
        _record("d", "find y.", picture),  # different question: kept
    ]
    kept = dedupe(records)
    assert [r.id for r in kept] == ["a", "c", "d"]
    assert kept[0].meta == {"duplicate_ids": ["b"], "duplicate_answers": ["2"]}


def _png_bytes(image):
    import io
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- options


def test_options_literal_with_quotes_and_commas():
    raw = "['$6', \"Smith's, Inc.\", '1,000', 'a \"quoted\" one', 3]"
    assert parse_options_literal(raw, "t") == ["$6", "Smith's, Inc.", "1,000", 'a "quoted" one', "3"]
    assert parse_options_literal("[]", "t") == [] and parse_options_literal(["x", "y"], "t") == ["x", "y"]


@pytest.mark.parametrize("hostile", [
    "__import__('os').system('touch {marker}')",
    "[__import__('os').system('touch {marker}')]",
    "[open('{marker}', 'w')]",
    "().__class__.__bases__[0].__subclasses__()",
    "['a'] + [__import__('os').system('touch {marker}')]",
    "lambda: 1",
    "{{'a': 1}}",
    "'just a string'",
    "[['nested']]",
    "[" * 5000 + "]" * 5000,
    "['x'," * 10_000,
])
def test_hostile_options_raise_without_running_anything(hostile, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(MalformedRow, match="options"):
        parse_options_literal(hostile.format(marker=marker), "mmmu test_1")
    assert not marker.exists()


def test_hostile_options_in_a_dataset_file_fail_naming_the_row(tmp_path):
    marker = tmp_path / "pwned"
    source = FIXTURES / "mmmu/Accounting/validation-00000-of-00001.parquet"
    table = pq.read_table(source)
    options = table.column("options").to_pylist()
    options[0] = f"__import__('os').system('touch {marker}')"
    table = table.set_column(table.schema.get_field_index("options"), "options", [options])
    pq.write_table(table, tmp_path / "validation-00000-of-00001.parquet")
    with pytest.raises(MalformedRow, match="validation_Accounting_1.*options must be a Python list literal"):
        load_records("mmmu", path=tmp_path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ text helpers


def test_placeholder_policy():
    assert clean_placeholders("<image>Find x.") == "Find x."
    assert clean_placeholders("<image>\n<image><image> Compare them.") == "Compare them."
    assert clean_placeholders("A <image> B\nC <image>") == "A B\nC"
    assert clean_placeholders("Code:\n    x = 1\n<image>") == "Code:\n    x = 1"  # indentation kept
    assert clean_placeholders("See <image 1> and <image2>.") == "See <image 1> and <image 2>."


@pytest.mark.parametrize(("text", "expected_options"), [
    ("Q?\nChoices:\nA:1\nB:2", ["1", "2"]),
    ("Q?\n(A) one\n(B) two\n(C) three", ["one", "two", "three"]),
    ("Q? Choices:\nA. yes\nB. no", ["yes", "no"]),
    ("Q?\nA) x\nB) y", ["x", "y"]),
    ("Q?\nB: 1\nC: 2", None),  # must start at A
    ("Q?\nA: 1\nC: 2", None),  # must be consecutive
    ("Find x.", None),
])
def test_split_embedded_options(text, expected_options):
    question, options = split_embedded_options(text)
    assert options == expected_options
    assert question == ("Q?" if options else text)


@pytest.mark.parametrize(("answer", "is_math"), [
    ("12", True), ("-3.5", True), ("1,000", True), ("45%", True), ("\\frac{1}{2}", True), ("2x+1", True),
    ("5 cm", True), ("3 sqrt 2", True), ("[-1, 3]", True), ("y=2x", True),
    ("Yes", False), ("Democrats", False), ("blue and red", False), ("", False), ("2019 election", False),
])
def test_free_form_answer_type(answer, is_math):
    assert looks_mathematical(answer) is is_math


# -------------------------------------------------------------------------------------- loading options


def test_limit():
    assert len(load("mathvista", limit=2)) == 2
    assert [r.id for r in load("mmmu", limit=3)] == [r.id for r in load("mmmu")][:3]
    assert load("chartqa", limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load("chartqa", limit=-1)


def test_unknown_dataset_lists_accepted_names():
    with pytest.raises(ValueError, match="unknown dataset 'mathvista2'") as info:
        load_records("mathvista2", path=FIXTURES / "mathvista")
    assert all(name in str(info.value) for name in DATASET_NAMES)


@pytest.mark.parametrize(("name", "key"), [("virl39k", "data.path"), ("care_mix", "data.path"),
                                           ("mmmu", "eval.paths.mmmu"), ("mathvista", "eval.paths.mathvista")])
def test_missing_path_fails_fast_naming_the_key(name, key, tmp_path):
    missing = tmp_path / "nowhere"
    with no_network() as attempts, pytest.raises(DatasetUnavailable) as info:
        load_records(name, path=missing)
    assert attempts == []  # a missing local copy never falls back to the hub (timed in benchmarks/fail_fast.py)
    assert isinstance(info.value, FileNotFoundError)
    assert key in str(info.value) and str(missing) in str(info.value)


@pytest.mark.parametrize(("name", "hub_id", "key"), [
    ("mmmu", None, "eval.paths.mmmu"), ("geometry3k", "care-tests/no-such-dataset", "data.path")])
def test_missing_hub_dataset_fails_fast_offline(name, hub_id, key, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with no_network() as attempts, pytest.raises(DatasetUnavailable) as info:
        load_records(name, hub_id=hub_id)
    assert attempts == []  # offline means no hub call at all, not retries (timed in benchmarks/fail_fast.py)
    message = str(info.value)
    assert key in message and (hub_id or SPECS[name].hub_id) in message and "HF_HUB_OFFLINE" in message


def test_care_mix_folder_missing_a_component(tmp_path):
    shutil.copytree(FIXTURES / "care_mix" / "chartqa", tmp_path / "chartqa")
    with pytest.raises(DatasetUnavailable, match="data.path.*'geometry3k'"):
        load_records("care_mix", path=tmp_path)


def test_unknown_split_lists_the_ones_found():
    assert [r.id for r in load("geometry3k", split="test")] == ["geometry3k-test-0"]
    with pytest.raises(DatasetUnavailable, match="no 'validation' split.*test, train.*data.path"):
        load("geometry3k", split="validation")


def test_missing_image_file_names_the_key(tmp_path):
    shutil.copytree(FIXTURES / "virl39k", tmp_path / "virl")
    (tmp_path / "virl/images/Processed-fixture-0022-0.png").unlink()
    with pytest.raises(RowProblem, match=r"39Krelease.parquet row \d+: image 'images/Processed-fixture-0022-0.png' "
                                         r"not found.*data.path") as raised:
        load_records("virl39k", path=tmp_path / "virl")
    assert raised.value.reason == "missing_image"


def test_unreadable_file_and_wrong_schema(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetUnavailable, match="broken.parquet.*eval.paths.mathvision"):
        load_records("mathvision", path=tmp_path / "broken.parquet")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"query": "q", "label": ["1"]}) + "\n")
    with pytest.raises(MalformedRow, match=r"rows.jsonl line 1: column 'image' is missing"):
        load_records("chartqa", path=tmp_path / "rows.jsonl")


def test_jsonl_and_single_file_paths(tmp_path):
    """ViRL39K's rows rewritten as jsonl next to the same images folder load to the same records."""
    shutil.copytree(FIXTURES / "virl39k/images", tmp_path / "images")
    rows = pq.read_table(FIXTURES / "virl39k/39Krelease.parquet").to_pylist()
    (tmp_path / "virl.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    from_jsonl = load_records("virl39k", path=tmp_path / "virl.jsonl")
    from_parquet = load_records("virl39k", path=FIXTURES / "virl39k/39Krelease.parquet")
    assert [(r.id, r.answer, r.choices) for r in from_jsonl] == [(r.id, r.answer, r.choices) for r in from_parquet]
    assert [image_digest(r.images[0]) for r in from_jsonl] == [image_digest(r.images[0]) for r in from_parquet]


def test_saved_datasets_folder_and_arrow_file(tmp_path):
    import datasets

    original = load("chartqa")
    dataset = datasets.Dataset.from_parquet(str(FIXTURES / "chartqa/data/train-00000-of-00001.parquet"),
                                            cache_dir=str(tmp_path / "cache"))
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "saved"))
    from_dict = load_records("chartqa", path=tmp_path / "saved")
    [arrow] = (tmp_path / "saved/train").glob("*.arrow")
    from_arrow = load_records("chartqa", path=arrow)
    for records in (from_dict, from_arrow):
        assert [(r.id, r.answer, r.answer_type) for r in records] == [(r.id, r.answer, r.answer_type) for r in original]
        assert [image_digest(r.images[0]) for r in records] == [image_digest(r.images[0]) for r in original]
    with pytest.raises(DatasetUnavailable, match="splits \\['train'\\]"):
        load_records("chartqa", split="test", path=tmp_path / "saved")


def test_parquet_preferred_when_a_split_ships_in_two_formats(tmp_path):
    shutil.copytree(FIXTURES / "mathverse", tmp_path / "mv")
    rows = json.loads((tmp_path / "mv/testmini.json").read_text())
    (tmp_path / "mv/testmini.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:1]))
    assert len(load_records("mathverse", path=tmp_path / "mv")) == 1  # jsonl outranks json: no doubled rows


# ----------------------------------------------------------------------------------- hub path (faked)


def _fake_hub(monkeypatch, tables):
    """Replace datasets.load_dataset by a lookup of (hub_id, config, split) -> rows; record calls."""
    import datasets

    calls = []

    def fake_load_dataset(hub_id, config=None, split=None):
        calls.append((hub_id, config, split))
        if (hub_id, config, split) not in tables:
            raise FileNotFoundError(f"{hub_id}/{config} not found")
        return tables[(hub_id, config, split)]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return calls


def _rows(relative):
    return pq.read_table(FIXTURES / relative).to_pylist()


def test_hub_mmmu_walks_subject_configs_and_stops_at_limit(monkeypatch):
    accounting = _rows("mmmu/Accounting/validation-00000-of-00001.parquet")
    calls = _fake_hub(monkeypatch, {("MMMU/MMMU", "Accounting", "validation"): accounting,
                                    ("MMMU/MMMU", "Agriculture", "validation"): accounting[:1]})
    records = load_records("mmmu", limit=3)
    assert calls == [("MMMU/MMMU", "Accounting", "validation"), ("MMMU/MMMU", "Agriculture", "validation")]
    assert [r.meta["subject"] for r in records] == ["Accounting", "Accounting", "Agriculture"]
    assert records[2].id == "mmmu-validation_Accounting_1~2"  # a repeated native id stays unique


def test_hub_id_override_and_config_for_mmmu_pro(monkeypatch):
    rows = _rows("mmmu_pro/vision/test-00000-of-00001.parquet")
    calls = _fake_hub(monkeypatch, {("my/mirror", "vision", "test"): rows})
    assert len(load_records("mmmu_pro_vision", hub_id="my/mirror")) == 3
    assert calls == [("my/mirror", "vision", "test")]
    with pytest.raises(DatasetUnavailable, match="'MMMU/MMMU_Pro' config 'vision' split 'validation'.*eval.paths"):
        load_records("mmmu_pro_vision", split="validation")


@pytest.mark.parametrize("prefixed", [True, False])
def test_hub_virl39k_extracts_the_image_zip_once(monkeypatch, tmp_path, prefixed):
    import datasets.config
    import huggingface_hub

    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for png in sorted((FIXTURES / "virl39k/images").iterdir()):
            bundle.write(png, f"images/{png.name}" if prefixed else png.name)
    _fake_hub(monkeypatch, {("TIGER-Lab/ViRL39K", None, "train"): _rows("virl39k/39Krelease.parquet")})
    downloads = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo, name, repo_type: downloads.append((repo, name, repo_type)) or str(archive))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    for _ in range(2):
        records = load_records("virl39k")
        assert len(records) == 6 and len(records[3].images) == 2
    assert downloads == [("TIGER-Lab/ViRL39K", "images.zip", "dataset")] * 2
    assert len(list((tmp_path / "cache/care_extracted").iterdir())) == 1
