"""Bad data never trains silently: one test per class of bad input, through the real loaders.

Every bad row is used (repaired without loss), dropped with a named reason, or fails naming the file, the
row and the column; counts are contracts. Classes covered (beyond the list in the issue, marked +):
missing/NaN/blank/+non-text/+infinite golds; null, non-string, binary, lone-surrogate and +blank
questions; NUL characters and tokenizer control tokens (escaped); +a JSONL line that is not JSON, and
+one that is not an object; an all-null image column, +a missing image file; undecodable, truncated,
+zero-byte and oversized images, extreme aspect ratios; 16-bit, CMYK, palette, +transparent palette and
alpha images (pixel values); huge JPEGs and PNGs (shrunk, JPEG decoded at reduced size); an empty mix
component; train_size over what exists, a filter leaving fewer than asked, a preset's cap; a bad
benchmark row whatever the drop policy; SFT files: truncated image, lone surrogate, content as a list of
strings, +a bad JSONL line numbered as an editor numbers it, +control tokens in a completion.
"""

import io
import json
import shutil
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from care.config import Config, DataConfig
from care.data.images import MAX_KEPT_PIXELS, ImageProblem, checked_image
from care.data.loading import DatasetUnavailable, RowProblem, load_records
from care.data.rows import ZERO_WIDTH_SPACE, DropReport
from care.data.training import split_training_data
from care.models import load_processor, resolve_backbone
from care.sft_files import SFTDataError, load_sft_rows

FIXTURES = Path(__file__).parent / "fixtures"


def png(size=(32, 32), color=(200, 30, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (its pixel data is a stub): what a bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def chartqa_jsonl(folder: Path, rows: list[dict], images: dict[str, bytes] | None = None, good: int = 6) -> Path:
    """A ChartQA copy in its real columns (image path, query, label) as JSONL: `good` fine rows, then `rows`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "img.png").write_bytes(png())
    for name, data in (images or {}).items():
        (folder / name).write_bytes(data)
    lines = [{"image": "img.png", "query": f"What is bar {i}?", "label": [str(i)]} for i in range(good)]
    lines += [{"image": "img.png", "query": "What is the total?", "label": ["7"], **row} for row in rows]
    (folder / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder / "train.jsonl"


def one_problem(tmp_path, row: dict, images=None) -> RowProblem:
    """Load a copy whose 7th row (line 7) is `row`, strictly; return the problem raised, checked for place."""
    file = chartqa_jsonl(tmp_path / "chartqa", [row], images)
    with pytest.raises(RowProblem) as raised:
        load_records("chartqa", path=file.parent)
    assert f"{file} line 7: " in str(raised.value)  # the file and the line an editor shows
    report = DropReport()  # the same row, counted and dropped instead
    records = load_records("chartqa", path=file.parent, report=report)
    assert len(records) == 6 and report.total_rows == 7
    assert report.dropped == {"chartqa": {raised.value.reason: 1}}
    return raised.value


# ------------------------------------------------------------------------------------------------ cells


@pytest.mark.parametrize(("row", "reason", "column"), [
    ({"label": None}, "missing_answer", "label"),
    ({"label": []}, "missing_answer", "label"),
    ({"label": [float("nan")]}, "missing_answer", "label"),
    ({"label": ["  "]}, "missing_answer", "label"),
    ({"label": [float("inf")]}, "missing_answer", "label"),
    ({"label": [{"a": 1}]}, "not_text", "label"),
    ({"query": None}, "missing_text", "query"),
    ({"query": 12}, "not_text", "query"),
    ({"query": ["a", "b"]}, "not_text", "query"),
    ({"query": "   "}, "missing_text", "query"),
    ({"query": "half a pair \ud83d here"}, "invalid_unicode", "query"),
    ({"image": None}, "missing_image", None),
    ({"image": "nowhere.png"}, "missing_image", None),
])
def test_a_bad_cell_fails_naming_file_line_and_column(tmp_path, row, reason, column):
    problem = one_problem(tmp_path, row)
    assert problem.reason == reason
    if column:
        assert f"column {column!r}" in str(problem)


def test_a_binary_text_column(tmp_path):
    """Parquet can hold bytes where text belongs (a mis-typed export)."""
    rows = [{"image": {"bytes": png(), "path": None}, "query": q, "label": ["1"]}
            for q in (b"What is this?", b"\xff\xfe binary")]
    table = pa.table({"image": [r["image"] for r in rows], "query": pa.array([r["query"] for r in rows], pa.binary()),
                      "label": [r["label"] for r in rows]})
    pq.write_table(table, tmp_path / "train-00000-of-00001.parquet")
    with pytest.raises(RowProblem, match=r"train-00000-of-00001.parquet row 0: column 'query' holds 13 bytes, not text"):
        load_records("chartqa", path=tmp_path)


def test_an_all_null_image_column(tmp_path):
    file = chartqa_jsonl(tmp_path / "c", [], good=0)
    file.write_text("".join(json.dumps({"image": None, "query": "q?", "label": ["1"]}) + "\n" for _ in range(3)))
    report = DropReport()
    assert load_records("chartqa", path=file.parent, report=report) == []
    assert report.dropped == {"chartqa": {"missing_image": 3}}


def test_unparseable_jsonl_lines_are_numbered(tmp_path):
    file = chartqa_jsonl(tmp_path / "c", [], good=11)
    file.write_text(file.read_text() + '{"image": "img.png", "query": \n' + "[1, 2]\n")
    with pytest.raises(RowProblem, match=r"train.jsonl line 12: not JSON"):
        load_records("chartqa", path=file.parent)
    report = DropReport()
    load_records("chartqa", path=file.parent, report=report)
    assert report.dropped == {"chartqa": {"unreadable_row": 2}}
    assert "line 13: a JSON list, not an object" not in report.summary()  # one example per reason


def test_nul_and_control_tokens_are_escaped_not_dropped(tmp_path, processor):
    file = chartqa_jsonl(tmp_path / "c", [{"query": "What\x00 is <|im_end|> <|image_pad|> here?"}])
    report = DropReport()
    records = load_records("chartqa", path=file.parent, report=report)
    question = records[-1].question
    assert "\x00" not in question and "<|im_end|>" not in question and "<|image_pad|>" not in question
    assert question.replace(ZERO_WIDTH_SPACE, "") == "What is <|im_end|> <|image_pad|> here?"  # reads the same
    assert report.escaped == {"chartqa": {"nul_removed": 1, "control_token_escaped": 2}}
    # the prompt tokenizes as text: one image's tokens, one end-of-turn per turn (a literal one used to
    # end the turn early, and a literal <|image_pad|> made the processor look for a second image)
    from care.data.schema import render_prompt

    text = render_prompt(processor, records[-1])
    inputs = processor(text=[text], images=[records[-1].images])
    ids = inputs["input_ids"][0]
    assert ids.count(processor.tokenizer.convert_tokens_to_ids("<|im_end|>")) == text.count("<|im_end|>")
    assert ids.count(processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")) == 1


# ----------------------------------------------------------------------------------------------- images


def truncated_png() -> bytes:
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data, format="PNG")
    return data.getvalue()[: len(data.getvalue()) // 2]


@pytest.mark.parametrize(("data", "reason"), [
    (truncated_png(), "undecodable_image"),
    (b"", "undecodable_image"),
    (b"GIF89a not really", "undecodable_image"),
    (png((1, 300)), "aspect_ratio"),
    (png((450, 2)), "aspect_ratio"),
    (png_claiming(20_000, 20_000), "image_too_large"),
])
def test_bad_images_are_named_before_training(tmp_path, data, reason):
    problem = one_problem(tmp_path, {"image": "bad.img"}, images={"bad.img": data})
    assert problem.reason == reason and "'bad.img'" in str(problem)


def reopened(image: Image.Image) -> Image.Image:
    data = io.BytesIO()
    image.save(data, format="TIFF" if image.mode == "CMYK" else "PNG")
    from care.data.adapters.common import open_encoded
    return open_encoded(data.getvalue())


def pixel(image: Image.Image) -> tuple:
    checked = checked_image(reopened(image))
    assert checked.mode == "RGB"
    return checked.getpixel((0, 0))


def test_sixteen_bit_greys_are_scaled_not_clipped():
    grey = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert grey.mode == "I;16"
    assert pixel(grey) == (128, 128, 128)  # PIL's own convert("RGB") gives (255, 255, 255)
    assert pixel(Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))) == (255, 255, 255)
    assert pixel(Image.fromarray(np.zeros((4, 4), dtype=np.uint16))) == (0, 0, 0)


def test_cmyk_palette_and_alpha_become_correct_rgb():
    assert pixel(Image.new("CMYK", (4, 4), (0, 255, 255, 0))) == (255, 0, 0)
    assert pixel(Image.new("CMYK", (4, 4), (0, 0, 0, 255))) == (0, 0, 0)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    assert pixel(palette) == (0, 128, 0)
    palette.info["transparency"] = 1  # index 1 is see-through: the white page behind it
    assert pixel(palette) == (255, 255, 255)
    assert pixel(Image.new("RGBA", (4, 4), (0, 0, 255, 255))) == (0, 0, 255)
    assert pixel(Image.new("RGBA", (4, 4), (0, 0, 0, 0))) == (255, 255, 255)  # convert("RGB") gives black
    assert pixel(Image.new("RGBA", (4, 4), (255, 0, 0, 128))) == (255, 127, 127)
    assert pixel(Image.new("LA", (4, 4), (0, 0))) == (255, 255, 255)
    assert pixel(Image.new("L", (4, 4), 77)) == (77, 77, 77)


def test_a_sixteen_bit_png_reaches_the_record_as_rgb(tmp_path):
    data = io.BytesIO()
    Image.fromarray(np.full((8, 8), 16384, dtype=np.uint16)).save(data, format="PNG")
    file = chartqa_jsonl(tmp_path / "c", [{"image": "deep.png"}], images={"deep.png": data.getvalue()})
    record = load_records("chartqa", path=file.parent)[-1]
    assert record.images[0].mode == "RGB" and record.images[0].getpixel((3, 3)) == (64, 64, 64)


def test_an_rgb_image_within_limits_is_kept_as_read():
    from care.data.adapters.common import open_encoded

    image = open_encoded(png())
    assert checked_image(image) is image  # still lazily decoded: a 39K-image set stays compressed


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_huge_images_are_shrunk_keeping_their_shape(fmt):
    from care.data.adapters.common import open_encoded

    data = io.BytesIO()
    Image.new("RGB", (6000, 3000), (10, 200, 10)).save(data, format=fmt)
    checked = checked_image(open_encoded(data.getvalue()))
    width, height = checked.size
    assert width * height <= MAX_KEPT_PIXELS and abs(width / height - 2) < 0.01
    assert np.abs(np.asarray(checked, dtype=int)[height // 2, width // 2] - (10, 200, 10)).max() <= 2


def test_a_jpeg_too_large_for_pil_is_decoded_at_reduced_size(monkeypatch):
    """Over PIL's own bomb limit, a JPEG is still usable (draft decodes it at 1/8 scale); a PNG is not."""
    from care.data import images
    from care.data.adapters.common import open_encoded

    data = io.BytesIO()
    Image.new("RGB", (4000, 1000), (0, 0, 250)).save(data, format="JPEG")
    monkeypatch.setattr(images, "MAX_DECODED_PIXELS", 1_000_000)
    monkeypatch.setattr(images, "MAX_KEPT_PIXELS", 100_000)
    checked = images.checked_image(open_encoded(data.getvalue()))
    assert checked.width * checked.height <= 100_000
    png_data = io.BytesIO()
    Image.new("RGB", (4000, 1000)).save(png_data, format="PNG")
    with pytest.raises(ImageProblem, match="4000x1000 pixels is over the 1,000,000"):
        images.checked_image(open_encoded(png_data.getvalue()))


# ------------------------------------------------------------------------------------- policy and counts


@pytest.fixture(scope="module")
def processor(cache_dir):
    cfg = Config(cache_dir=str(cache_dir))
    return load_processor(resolve_backbone(cfg.backbone, cache_dir), cfg.backbone.family)


def chartqa_config(cache_dir, folder: Path, **data) -> Config:
    # chartqa_jsonl's copies are one train.jsonl without human_or_machine: read it whole
    fields = {"name": "chartqa", "path": str(folder), "train_size": None, "eval_size": 2, "chartqa_splits": ["train"],
              "chartqa_subset": "all", **data}
    return Config(cache_dir=str(cache_dir), data=DataConfig(**fields))


def test_by_default_one_bad_row_fails_the_run_naming_it(tmp_path, cache_dir, processor):
    file = chartqa_jsonl(tmp_path / "c", [{"label": None}, {"label": [""]}], good=20)
    with pytest.raises(ValueError) as raised:
        split_training_data(chartqa_config(cache_dir, file.parent), processor)
    message = str(raised.value)
    assert "2 of 22 rows are bad (chartqa: missing_answer 2" in message
    assert f"{file} line 21: column 'label' holds no gold answer" in message
    assert "data.max_dropped_fraction=0 allows none" in message and "data.max_dropped_fraction=0.1" in message


def test_drops_the_policy_allows_are_counted_and_never_trained_on(tmp_path, cache_dir, processor):
    file = chartqa_jsonl(tmp_path / "c", [{"label": None, "query": "BAD ROW"}], good=20)
    data = split_training_data(chartqa_config(cache_dir, file.parent, max_dropped_fraction=0.05), processor)
    assert data.counts["dropped"] == {"chartqa": {"missing_answer": 1}}
    assert data.counts["loaded"] == 21 and data.counts["train"] + data.counts["held_out"] == 20
    assert not any(r.question == "BAD ROW" for r in data.train + data.held_out)


def test_asking_for_more_prompts_than_exist_is_an_error(tmp_path, cache_dir, processor):
    folder = chartqa_jsonl(tmp_path / "c", [], good=12).parent
    with pytest.raises(ValueError, match=r"data.train_size=50 asks for more training prompts than the 10 left"):
        split_training_data(chartqa_config(cache_dir, folder, train_size=50), processor)
    fewer = split_training_data(chartqa_config(cache_dir, folder, train_size=50, allow_fewer=True), processor)
    assert fewer.counts["train"] == 10
    assert split_training_data(chartqa_config(cache_dir, folder), processor).counts["train"] == 10  # null: all
    # a preset's cap is a cap: scale=toy's 48 on 10 prompts trains on the 10, and caps a larger set
    assert split_training_data(chartqa_config(cache_dir, folder, max_train_size=48), processor).counts["train"] == 10
    assert split_training_data(chartqa_config(cache_dir, folder, max_train_size=4), processor).counts["train"] == 4


def test_a_filter_that_removes_too_many_prompts_fails_with_the_numbers(tmp_path, cache_dir, processor):
    folder = chartqa_jsonl(tmp_path / "c", [{"query": "word " * 400 + str(i)} for i in range(3)], good=17).parent
    cfg = chartqa_config(cache_dir, folder)
    cfg = replace(cfg, rl=replace(cfg.rl, max_prompt_length=300))
    with pytest.raises(ValueError, match=r"3 of 20 prompts are longer than rl.max_prompt_length=300 tokens.*"
                                         r"data.max_overlong_fraction=0.05"):
        split_training_data(cfg, processor)
    allowed = split_training_data(replace(cfg, data=replace(cfg.data, max_overlong_fraction=0.2)), processor)
    assert allowed.counts["filtered_overlong"] == 3 and allowed.counts["train"] == 15


def test_an_empty_mix_component_is_refused(tmp_path):
    mix = tmp_path / "mix"
    shutil.copytree(FIXTURES / "care_mix", mix)
    folder = mix / "geometry3k" / "data"
    for file in folder.glob("*.parquet"):
        table = pq.read_table(file)
        pq.write_table(table.slice(0, 0), file)
    with pytest.raises(DatasetUnavailable, match=r"care_mix: the geometry3k component .* holds no rows"):
        load_records("care_mix", path=mix)


def test_a_bad_benchmark_row_fails_whatever_the_drop_policy(tmp_path, cache_dir):
    from care.evaluation.harness import benchmark_records

    copy = tmp_path / "mathvision"
    shutil.copytree(FIXTURES / "mathvision", copy)
    [file] = copy.rglob("*.parquet")
    rows = pq.read_table(file).to_pylist()
    rows[2]["answer"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(file)), file)
    cfg = Config(cache_dir=str(cache_dir), data=DataConfig(max_dropped_fraction=1.0))
    cfg.eval.paths.mathvision = str(copy)
    with pytest.raises(RowProblem, match=r"mathvision: .*test-00000-of-00001.parquet row 2: column 'answer' holds no"):
        benchmark_records(cfg, "mathvision")


# ---------------------------------------------------------------------------------------------- SFT files


def sft_file(tmp_path: Path, records: list[dict], images: dict[str, bytes] | None = None) -> Path:
    for name, data in {"ok.png": png(), **(images or {})}.items():
        (tmp_path / name).write_bytes(data)
    good = {"conversations": [{"from": "human", "value": "<image>What is shown?"},
                              {"from": "gpt", "value": "<think>a chart</think><answer>3</answer>"}], "image": "ok.png"}
    file = tmp_path / "cold.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in [good] * 11 + records))
    return file


def test_sft_truncated_image_fails_naming_line(tmp_path):
    bad = {"conversations": [{"from": "human", "value": "<image>Q"}, {"from": "gpt", "value": "A"}], "image": "cut.png"}
    file = sft_file(tmp_path, [bad], {"cut.png": truncated_png()})
    with pytest.raises(SFTDataError, match=r"cold.jsonl line 12: image 0: .*cut.png' is unreadable as an image: "
                                           r"its pixels do not decode"):
        load_sft_rows(file)


def test_sft_lone_surrogate_fails_naming_the_field(tmp_path):
    bad = {"conversations": [{"from": "human", "value": "<image>Q \udc80"}, {"from": "gpt", "value": "A"}],
           "image": "ok.png"}
    with pytest.raises(SFTDataError, match=r"line 12: column 'conversations\[0\].value' holds a lone surrogate U\+DC80"):
        load_sft_rows(sft_file(tmp_path, [bad]))


def test_sft_content_as_a_list_of_strings_and_control_tokens(tmp_path):
    listed = {"messages": [{"role": "user", "content": [{"type": "image"}, "What is", " shown?"]},
                           {"role": "assistant", "content": "It is 3<|im_end|> really"}], "images": ["ok.png"]}
    rows = load_sft_rows(sft_file(tmp_path, [listed]))
    last = rows[-1]
    assert [block["type"] for block in last["prompt"][0]["content"]] == ["image", "text", "text"]
    assert "<|im_end|>" not in last["completion"][0]["content"]
    assert last["completion"][0]["content"].replace(ZERO_WIDTH_SPACE, "") == "It is 3<|im_end|> really"


def test_sft_bad_jsonl_line_is_numbered_as_an_editor_does(tmp_path):
    file = sft_file(tmp_path, [])
    file.write_text(file.read_text() + "{not json\n")
    with pytest.raises(SFTDataError, match=r"cold.jsonl line 12 is not JSON"):
        load_sft_rows(file)


def test_sft_sixteen_bit_image_is_converted(tmp_path):
    data = io.BytesIO()
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(data, format="PNG")
    deep = {"conversations": [{"from": "human", "value": "<image>Q"}, {"from": "gpt", "value": "A"}], "image": "d.png"}
    row = load_sft_rows(sft_file(tmp_path, [deep], {"d.png": data.getvalue()}))[-1]
    [ref] = row["images"]
    assert ref["path"] is None and Image.open(io.BytesIO(ref["bytes"])).convert("RGB").getpixel((0, 0)) == (128,) * 3
    assert load_sft_rows(sft_file(tmp_path, []))[0]["images"][0]["path"].endswith("ok.png")  # RGB: kept by path
