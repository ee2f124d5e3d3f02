"""Reading cold-start SFT sets (care.sft_files): both layouts, the release's folder, and bad input.

The fixtures under tests/fixtures/sft come from scripts/make_sft_fixtures.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from care.sft_files import SFTDataError, content_digest, load_sft_rows

SFT = Path(__file__).resolve().parent / "fixtures" / "sft"
LAYOUTS = ["trl/train.jsonl", "trl", "trl_embedded", "vision_r1_cold"]


def image_places(row: dict) -> int:
    return sum(block["type"] == "image" for message in row["prompt"] for block in message["content"])


def prompt_text(row: dict) -> str:
    return " ".join(block["text"] for message in row["prompt"] for block in message["content"]
                    if block["type"] == "text")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_prompt_completion_rows_with_their_images(layout):
    rows = load_sft_rows(SFT / layout)
    assert len(rows) == 4
    for row in rows:
        assert len(row["images"]) == 1 and image_places(row) == 1
        assert row["completion"][0]["role"] == "assistant"
        assert row["completion"][0]["content"].startswith("<think>")
        assert row["completion"][0]["content"].endswith("</answer>")
        assert "<image>" not in prompt_text(row)
        assert row["prompt"][-1]["role"] == "user" and prompt_text(row).rstrip().endswith("?")
        ref = row["images"][0]
        assert (ref["bytes"] is not None) == (layout == "trl_embedded")
        if ref["path"] is not None:
            assert Path(ref["path"]).is_absolute() and Path(ref["path"]).is_file()


def test_the_release_layout_maps_both_tag_sets_and_skips_llama_factorys_registry():
    rows = load_sft_rows(SFT / "vision_r1_cold")
    paths = sorted(Path(row["images"][0]["path"]).relative_to((SFT / "vision_r1_cold").resolve()).as_posix()
                   for row in rows)
    assert paths == ["llava_cot_images/sqa/train_0.png", "llava_cot_images/sqa/train_1.png",
                     "mulberry_images/chartqa/chart_0.png", "mulberry_images/chartqa/chart_1.png"]
    assert {m["role"] for row in rows for m in row["prompt"]} == {"user"}  # human and user both map to user


def test_a_system_turn_and_structured_content_are_kept():
    rows = load_sft_rows(SFT / "trl" / "train.jsonl")
    assert [m["role"] for m in rows[2]["prompt"]] == ["system", "user"]
    assert rows[1]["prompt"][0]["content"][0]["type"] == "image"  # the record placed it explicitly
    assert rows[0]["prompt"][0]["content"][0]["type"] == "image"  # no mark: images precede the user text


def test_rows_become_a_dataset_whose_images_decode():
    from datasets import Dataset, Image, List

    for layout in ("trl", "trl_embedded"):
        dataset = Dataset.from_list(load_sft_rows(SFT / layout)).cast_column("images", List(Image()))
        assert dataset[0]["images"][0].size == (32, 32)


def test_the_content_digest_follows_the_files_bytes(tmp_path):
    copy = tmp_path / "cold"
    shutil.copytree(SFT / "vision_r1_cold", copy)
    assert content_digest(copy) == content_digest(SFT / "vision_r1_cold")
    file = copy / "vision_r1_mulberry_sft_full.json"
    file.write_text(file.read_text().replace("circle", "square"))
    assert content_digest(copy) != content_digest(SFT / "vision_r1_cold")


def test_the_digest_parses_a_set_once_per_process_and_again_when_a_file_changes(tmp_path, monkeypatch):
    """The cold-start key is computed by preflight, the phase header and the build: the records are parsed
    once; an image's bytes still count every time, and an edited file is parsed again."""
    import os

    from care import sft_files

    copy = tmp_path / "cold"
    shutil.copytree(SFT / "vision_r1_cold", copy)
    for path in copy.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))  # old files: past the racy window
    parsed = []
    real = sft_files.read_records
    monkeypatch.setattr(sft_files, "read_records", lambda file: parsed.append(file.name) or real(file))
    first = content_digest(copy)
    assert content_digest(copy) == first and len(parsed) == 2  # the two record files, once each
    image = next((copy / "mulberry_images").rglob("*.png"))
    image.write_bytes(image.read_bytes() + b"\0")
    assert content_digest(copy) != first and len(parsed) == 2  # the image counts; no record file re-read
    file = copy / "vision_r1_mulberry_sft_full.json"
    file.write_text(file.read_text().replace("circle", "square"))
    content_digest(copy)
    assert parsed.count(file.name) == 2


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


GOOD = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}],
        "images": ["../fixtures_img.png"]}


@pytest.mark.parametrize("record, message", [
    ({"question": "Q?", "answer": "A"}, r"neither 'messages'.*nor 'conversations'.*its keys: question, answer"),
    ({"conversations": [{"from": "human", "value": "Q?"}, {"from": "bot", "value": "A"}]},
     r"conversations\[1\]\.from='bot' is not accepted"),
    ({"messages": [{"role": "user", "content": "Q?"}]}, r"end with an assistant turn"),
    ({**GOOD, "messages": [{"role": "user", "content": "<image><image>Q?"}, {"role": "assistant", "content": "A"}]},
     r"marks 2 <image> places but lists 1 images"),
    ({**GOOD, "images": ["missing.png"]}, r"'missing\.png' is unreadable: no such file"),
    ({**GOOD, "images": ["not_an_image.png"]}, r"not_an_image\.png' is unreadable as an image"),
    ({**GOOD, "images": [{"bytes": "%%%"}]}, r"embedded image is not valid base64"),
])
def test_bad_records_fail_naming_the_key_file_and_record(tmp_path, record, message):
    shutil.copy(SFT / "trl" / "images" / "q0.png", tmp_path / "fixtures_img.png")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "not_an_image.png").write_text("this is text, not a PNG")
    file = write_jsonl(tmp_path / "data" / "train.jsonl", [GOOD, record])
    with pytest.raises(SFTDataError, match=message) as err:
        load_sft_rows(file)
    assert f"cold_start.path='{file}'" in str(err.value) and f"{file} line 2" in str(err.value)  # as an editor numbers lines


def test_bad_paths_fail_naming_the_value(tmp_path):
    with pytest.raises(SFTDataError, match=r"cold_start.path='.*nowhere' does not exist"):
        load_sft_rows(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SFTDataError, match=r"cold_start.path='.*notes.txt' is a .txt file; accepted: .json"):
        load_sft_rows(tmp_path / "notes.txt")
    with pytest.raises(SFTDataError, match=r"holds no .json, .jsonl, .parquet file"):
        load_sft_rows(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SFTDataError, match=r"broken.json cannot be read"):
        load_sft_rows(tmp_path / "broken.json")
    (tmp_path / "broken.json").write_text("[]")
    with pytest.raises(SFTDataError, match=r"holds no records"):
        load_sft_rows(tmp_path / "broken.json")
