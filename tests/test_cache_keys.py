"""Cache keys cover the bytes of what they read (images, SFT files, weights), never paths or mtimes alone:
a changed picture under the same id is a new key, a copy elsewhere is the same key."""

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

import care.hashing
from care.config import Config
from care.hashing import digest, file_digest, tree_digest

FIXTURES = Path(__file__).parent / "fixtures"
OLD_NS = 1_600_000_000 * 10**9  # an mtime well outside the racy window


@pytest.fixture
def memo(tmp_path, monkeypatch):
    """A fresh memo, and a count of the files actually read by care.hashing.hash_file."""
    monkeypatch.setenv(care.hashing.MEMO_ENV, str(tmp_path / "memo" / "digests.sqlite"))
    reads = []
    real = care.hashing.hash_file

    def counting(path):
        reads.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(care.hashing, "hash_file", counting)
    return reads


def _repaint(png: Path, colour=(255, 0, 0)) -> None:
    """Other pixels in the same file, keeping its name (the record's id and path do not change)."""
    with Image.open(png) as image:
        size = image.size
    Image.new("RGB", size, colour).save(png)


def test_a_file_is_hashed_once_then_read_from_the_memo_until_it_changes(tmp_path, memo):
    file = tmp_path / "weights.bin"
    file.write_bytes(b"a" * 1000)
    os.utime(file, ns=(OLD_NS, OLD_NS))
    first = file_digest(file)
    assert first == digest(b"a" * 1000)
    assert file_digest(file) == first and memo == ["weights.bin"]  # the second call read the memo

    file.write_bytes(b"b" * 1000)  # same size, and the old mtime put back: the ctime still moves
    os.utime(file, ns=(OLD_NS, OLD_NS))
    assert file_digest(file) == digest(b"b" * 1000) and len(memo) == 2

    file.write_bytes(b"b" * 999)  # another size
    os.utime(file, ns=(OLD_NS, OLD_NS))
    assert file_digest(file) == digest(b"b" * 999) and len(memo) == 3


def test_a_file_written_just_now_is_not_memoised(tmp_path, memo):
    """Within the mtime's resolution a second write could leave (size, mtime, ctime) as they were."""
    file = tmp_path / "fresh.bin"
    file.write_bytes(b"x")
    file_digest(file)
    file_digest(file)
    assert memo == ["fresh.bin", "fresh.bin"]


def test_an_unusable_memo_only_costs_a_second_read(tmp_path, memo, monkeypatch):
    (tmp_path / "not-a-db").write_text("garbage, not sqlite")
    monkeypatch.setenv(care.hashing.MEMO_ENV, str(tmp_path / "not-a-db"))
    file = tmp_path / "f.bin"
    file.write_bytes(b"abc")
    assert file_digest(file) == file_digest(file) == digest(b"abc") and len(memo) == 2


def test_a_hub_snapshot_is_identified_by_its_blob_names_without_reading_them(tmp_path, memo):
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "rev"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    (blobs / "0123abcd").write_bytes(b"weights")
    (snapshot / "model.safetensors").symlink_to(blobs / "0123abcd")
    (snapshot / "local.json").write_text("{}")
    assert tree_digest(snapshot) == [("local.json", 2, digest("{}")), ("model.safetensors", 7, "0123abcd")]
    assert memo == ["local.json"]


def _benchmark(tmp_path, name):
    from care.data.loading import load_records

    copy = tmp_path / name
    if not copy.exists():
        shutil.copytree(FIXTURES / "mathverse", copy)
    return copy, load_records("mathverse", path=copy)


def _before_key(policy, records):
    from care.evaluation.harness import before_key

    return before_key(Config(), str(policy), {"mathverse": records}, ["mathverse"])


def test_the_before_key_follows_every_image_and_text_not_the_ids_or_paths(tmp_path, memo):
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "model.safetensors").write_bytes(b"weights")
    moved = tmp_path / "elsewhere" / "policy"
    shutil.copytree(policy, moved)

    a, records_a = _benchmark(tmp_path, "a")
    b, records_b = _benchmark(tmp_path, "b")
    key = _before_key(policy, records_a)
    assert _before_key(moved, records_b) == key  # a copy of the data and of the policy: the same key

    _repaint(b / "images" / "image_2.png")
    repainted = _benchmark(tmp_path, "b")[1]
    assert [r.id for r in repainted] == [r.id for r in records_a]
    assert _before_key(policy, repainted) != key

    reworded = [replace(r, question=r.question + " ") if i == 0 else r for i, r in enumerate(records_a)]
    assert _before_key(policy, reworded) != key
    (moved / "model.safetensors").write_bytes(b"other weights")
    assert _before_key(moved, records_a) != key


def test_in_memory_images_enter_the_before_key_by_their_pixels(tmp_path):
    from care.data.schema import Record

    def record(colour):
        return Record("q0", [Image.new("RGB", (8, 8), colour)], "What colour?", "red", "text", "synthetic")

    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    assert _before_key(policy, [record("red")]) == _before_key(policy, [record("red")])
    assert _before_key(policy, [record("red")]) != _before_key(policy, [record("blue")])


def test_the_sft_digest_follows_the_referenced_images_bytes_not_their_place(tmp_path, memo):
    from care.sft_files import content_digest

    a, b = tmp_path / "a" / "cold", tmp_path / "b" / "cold"
    shutil.copytree(FIXTURES / "sft" / "vision_r1_cold", a)
    shutil.copytree(FIXTURES / "sft" / "vision_r1_cold", b)
    assert content_digest(a) == content_digest(b)

    _repaint(b / "mulberry_images" / "chartqa" / "chart_0.png")
    assert content_digest(a) != content_digest(b)
    assert (a / "vision_r1_mulberry_sft_full.json").read_bytes() == (b / "vision_r1_mulberry_sft_full.json").read_bytes()


def test_the_cold_start_key_does_not_hold_the_cache_path(tmp_path, cache_dir):
    """A copied (or read-only) cache holding the same backbone names the same cold starts."""
    from care.coldstart import cold_start_dir
    from care.models import resolve_backbone

    cfg = Config()
    built = Path(resolve_backbone(cfg.backbone, cache_dir))
    other_cache = tmp_path / "copied-cache"
    shutil.copytree(built, other_cache / built.relative_to(cache_dir))
    copied = resolve_backbone(cfg.backbone, other_cache)
    assert copied != str(built)
    assert cold_start_dir(cfg, copied, other_cache).name == cold_start_dir(cfg, str(built), cache_dir).name

    sft = replace(cfg, cold_start=replace(cfg.cold_start, name="sft", path=str(FIXTURES / "sft" / "trl")))
    assert cold_start_dir(sft, copied, other_cache).name == cold_start_dir(sft, str(built), cache_dir).name

    # real weights (backbone.path) by their content: a copy is the same backbone, an edit is another
    at_a, at_b = tmp_path / "weights-a", tmp_path / "weights-b"
    shutil.copytree(built, at_a)
    shutil.copytree(built, at_b)
    by_path = [replace(cfg, backbone=replace(cfg.backbone, path=str(p))) for p in (at_a, at_b)]
    assert cold_start_dir(by_path[0], str(at_a), tmp_path).name == cold_start_dir(by_path[1], str(at_b), tmp_path).name
    (at_b / "config.json").write_text((at_b / "config.json").read_text() + "\n")
    assert cold_start_dir(by_path[0], str(at_a), tmp_path).name != cold_start_dir(by_path[1], str(at_b), tmp_path).name
