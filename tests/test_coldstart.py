"""Cold start: which parts of a reflection trace the SFT loss sees."""

import torch

from care.coldstart import demonstration_rows, mask_after_cue, mask_through_cue
from care.config import Config
from care.data.synthetic import make_splits
from care.models import load_backbone
from care.repair import CUE_TEMPLATES

BLANK = 0  # the token id that stands for whitespace in the hand-made rows below


def test_mask_through_cue_hides_up_to_the_last_cue_and_its_trailing_blanks():
    ids = torch.tensor([[5, 7, 8, 9, 0, 0, 3, 4],     # cue [8, 9], two blanks, then the answer
                        [5, 8, 9, 6, 8, 9, 3, 4],     # two cues: the last one counts
                        [5, 6, 7, 3, 4, 4, 4, 4]])    # no cue: a plain demonstration
    labels = ids.clone()
    masked = mask_through_cue(labels, ids, [8, 9], is_blank=lambda t: t == BLANK)
    assert masked[0].tolist() == [-100] * 6 + [3, 4]
    assert masked[1].tolist() == [-100] * 6 + [3, 4]
    assert masked[2].tolist() == ids[2].tolist()
    assert labels.tolist() == ids.tolist()  # the input is not modified


def test_after_cue_collator_trains_only_the_repair_of_a_reflection_trace(cache_dir):
    cfg = Config()
    _, processor, _ = load_backbone(cfg.backbone, cache_dir)
    train, _ = make_splits(seed=0, train_size=40, eval_size=2)
    rows = demonstration_rows(train, 16, reflection_fraction=0.5, answer_slip=0.0, seed=0,
                              reflection_trace="mislocate")
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    trls = DataCollatorForVisionLanguageModeling(processor=processor, max_length=None, completion_only_loss=True)
    whole = _trained_text(processor, rows, trls)
    after = _trained_text(processor, rows, mask_after_cue(trls, processor.tokenizer, CUE_TEMPLATES["structured"]))
    reflections = 0
    for row, full, kept in zip(rows, whole, after, strict=True):
        response = row["completion"][0]["content"]
        answer = response.split("<answer>")[1]
        if "<repair>" in response:
            reflections += 1
            assert full.startswith(response)  # TRL's default trains the failed attempt too
            assert kept.startswith(f"</think><answer>{answer}") and "marked" not in kept
        else:
            assert kept == full and kept.startswith(response)
    assert 0 < reflections < len(rows)


def _trained_text(processor, rows, collator):
    batch = collator([dict(row) for row in rows])
    return [processor.tokenizer.decode(ids[labels != -100]) for ids, labels in zip(batch["input_ids"], batch["labels"],
                                                                                   strict=True)]


def test_the_reflection_loss_is_part_of_the_cold_start_cache_key():
    from dataclasses import replace

    from care.coldstart import cold_start_key

    cfg = Config()
    after = replace(cfg, cold_start=replace(cfg.cold_start, reflection_loss="after_cue"))
    whole = replace(cfg, cold_start=replace(cfg.cold_start, reflection_loss="whole"))
    assert cold_start_key(after, "src") != cold_start_key(whole, "src")


def test_the_pixel_caps_are_part_of_the_cold_start_cache_key():
    """Other caps give other image tokens: a cold start trained at one cap is not another's."""
    from dataclasses import replace

    from care.coldstart import cold_start_key

    cfg = Config()
    wider = replace(cfg, backbone=replace(cfg.backbone, max_pixels=cfg.backbone.max_pixels * 4))
    assert cold_start_key(cfg, "src") != cold_start_key(wider, "src")
    assert cold_start_key(cfg, "src") == cold_start_key(replace(cfg), "src")


# ------------------------------------------------------------------- the cold_start= group

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from care.cache import build_once  # noqa: E402
from care.coldstart import batch_layout, check_cold_start, cold_start_policy  # noqa: E402
from care.config import ColdStartConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SFT = ROOT / "tests" / "fixtures" / "sft"


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from run import to_config

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(hydra_compose(config_name="config", overrides=list(overrides)))


@pytest.mark.parametrize("choice, extra", [("synthetic", []), ("sft", [f"cold_start.path={SFT / 'trl'}"]),
                                           ("checkpoint", ["cold_start.checkpoint=/some/policy"]), ("none", [])])
def test_every_choice_composes_with_the_toy_scale(choice, extra):
    cfg = compose(f"cold_start={choice}", "scale=toy", *extra)
    assert cfg.cold_start.name == choice
    assert cfg.cold_start.epochs == 1.0  # scale=toy applies on top of the choice


def test_the_default_is_the_synthetic_cold_start_and_sft_carries_vision_r1s_recipe():
    assert compose().cold_start == ColdStartConfig()
    sft = compose("cold_start=sft", "cold_start.path=x.jsonl").cold_start
    assert (sft.learning_rate, sft.epochs, sft.batch_size, sft.warmup_ratio, sft.max_length) == (5e-6, 2, 32, 0.05,
                                                                                                 16384)
    assert batch_layout(sft.batch_size, sft.micro_batch_size, processes=8) == (1, 4)  # Vision-R1's 8-GPU layout


def test_one_way_to_turn_the_cold_start_off():
    """cold_start=none; the former cold_start.enabled switch said the same thing and is gone."""
    from hydra.errors import ConfigCompositionException

    assert compose("cold_start=none").cold_start.name == "none"
    with pytest.raises(ConfigCompositionException):
        compose("cold_start.enabled=false")


@pytest.mark.parametrize("overrides, message", [
    (["cold_start=sft"], "cold_start=sft needs cold_start.path"),
    (["cold_start=checkpoint"], "cold_start=checkpoint needs cold_start.checkpoint"),
    (["cold_start=bogus"], "cold_start"),
])
def test_run_py_rejects_an_incomplete_choice_before_any_work(tmp_path, overrides, message):
    result = subprocess.run([sys.executable, "run.py", *overrides, f"hydra.run.dir={tmp_path}/run"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / "final.json").exists()


def test_preflight_checks_name_the_key_and_value(tmp_path):
    cfg = Config()
    no_model = replace(cfg, cold_start=ColdStartConfig(name="checkpoint", checkpoint=str(tmp_path)))
    with pytest.raises(ValueError, match=f"cold_start.checkpoint='{tmp_path}' holds no model"):
        check_cold_start(no_model)
    missing = replace(cfg, cold_start=ColdStartConfig(name="sft", path=str(tmp_path / "cold.json")))
    with pytest.raises(ValueError, match="cold_start.path='.*cold.json' does not exist"):
        check_cold_start(missing)
    real_data = replace(cfg, data=replace(cfg.data))
    real_data.data.name = "care_mix"  # a real training set (issue 15 item 1 adds the choice)
    with pytest.raises(ValueError, match="cold_start=synthetic .* data.name='care_mix'"):
        check_cold_start(real_data)


def test_a_checkpoint_is_used_as_is_and_none_is_the_backbone(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    cfg = replace(Config(), cold_start=ColdStartConfig(name="checkpoint", checkpoint=str(tmp_path)))
    assert cold_start_policy(cfg, [], "/backbone", tmp_path / "cache") == str(tmp_path.resolve())
    cfg = replace(Config(), cold_start=ColdStartConfig(name="none"))
    assert cold_start_policy(cfg, [], "/backbone", tmp_path / "cache") == "/backbone"
    assert not (tmp_path / "cache").exists()  # nothing built


def test_a_batch_that_does_not_split_fails_naming_the_keys():
    assert batch_layout(16, None, processes=2) == (8, 1)  # the toy's layout: no accumulation
    with pytest.raises(ValueError, match="cold_start.batch_size=32 is not a multiple of cold_start.micro_batch_size=3"):
        batch_layout(32, 3, processes=2)


# ------------------------------------------------------------------- one build per key, locked

def race(tmp_path: Path, *modes: str, stagger: bool = False) -> tuple[list[subprocess.CompletedProcess], list[str]]:
    """Run one racer per mode against the same out_dir; returns their results and the build log."""
    out_dir, log, go = tmp_path / "cache" / "cold", tmp_path / "builds.log", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    for mode in modes:
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.coldstart_race", str(out_dir), str(log), str(go),
                                       mode], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
        if stagger:  # the next racer starts once the first holds the lock and is building
            go.touch()
            deadline = time.time() + 60
            while not (log.exists() and log.read_text()) and time.time() < deadline:
                time.sleep(0.05)
    deadline = time.time() + 60
    while len(list(tmp_path.glob("builds.log.ready.*"))) < len(modes) and time.time() < deadline:
        time.sleep(0.05)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results, log.read_text().splitlines()


def test_two_jobs_that_need_the_same_cold_start_at_once_build_it_once(tmp_path):
    results, builds = race(tmp_path, "build", "build")
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    assert len(builds) == 1  # one built, the other waited and reused it
    assert sum("another job is building" in r.stderr for r in results) == 1
    builder = builds[0].split()[0]
    assert (tmp_path / "cache" / "cold" / "config.json").read_text() == builder
    assert {r.stdout.strip() for r in results} == {str(tmp_path / "cache" / "cold")}


def test_a_builder_that_dies_leaves_no_stale_lock_and_the_waiting_job_builds(tmp_path):
    results, builds = race(tmp_path, "die", "build", stagger=True)
    assert [r.returncode for r in results] == [3, 0], [r.stderr[-2000:] for r in results]
    assert len(builds) == 2 and builds[0].split()[0] != builds[1].split()[0]
    assert (tmp_path / "cache" / "cold" / "config.json").read_text() == builds[1].split()[0]


def test_a_finished_cold_start_is_reused_without_training(tmp_path):
    out_dir = tmp_path / "cold"
    out_dir.mkdir()
    (out_dir / "config.json").write_text("{}")

    def train():
        raise AssertionError("a cached cold start must not be rebuilt")

    assert build_once(out_dir, train, save=None) == out_dir


# ------------------------------------------------------------------- cold_start=sft, for real

def test_sft_rows_train_the_response_only_with_the_image_in_the_prompt(cache_dir):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from care.sft_files import load_sft_rows

    _, processor, _ = load_backbone(Config().backbone, cache_dir)
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    from datasets import Dataset, Image, List

    for layout in ("trl", "vision_r1_cold"):
        dataset = Dataset.from_list(load_sft_rows(SFT / layout)).cast_column("images", List(Image()))
        rows = [dataset[i] for i in range(len(dataset))]
        collator = DataCollatorForVisionLanguageModeling(processor=processor, max_length=None, completion_only_loss=True)
        batch = collator([dict(row) for row in rows])
        trained = [processor.tokenizer.decode(ids[labels != -100]) for ids, labels in
                   zip(batch["input_ids"], batch["labels"], strict=True)]
        for row, ids, text in zip(rows, batch["input_ids"], trained, strict=True):
            assert text.startswith(row["completion"][0]["content"])  # the response (and its end token), no prompt
            assert (ids == image_pad).sum() > 0  # the picture reached the model's input


def test_a_real_sft_cold_start_trains_once_and_is_reused(cache_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import care.coldstart
    from care.models import resolve_backbone

    cfg = Config()
    backbone_dir = resolve_backbone(cfg.backbone, cache_dir)
    cold = ColdStartConfig(name="sft", path=str(SFT / "vision_r1_cold"), epochs=1.0, batch_size=2)
    cfg = replace(cfg, cold_start=cold)
    policy = Path(cold_start_policy(cfg, [], backbone_dir, tmp_path))
    assert policy.parent == tmp_path / "cold_start" and policy.name.startswith("tiny_qwen2_5_vl-sft-")
    trained, base = load_file(policy / "model.safetensors"), load_file(Path(backbone_dir) / "model.safetensors")
    assert trained.keys() == base.keys()
    assert any(not torch.equal(trained[k], base[k]) for k in base)  # the SFT steps moved the weights
    assert json.loads((policy / "config.json").read_text())["model_type"]

    def no_training(*args, **kwargs):
        raise AssertionError("the cached cold start must be reused")

    monkeypatch.setattr(care.coldstart, "sft_trainer", no_training)
    assert cold_start_policy(cfg, [], backbone_dir, tmp_path) == str(policy)
    other = replace(cfg, cold_start=replace(cold, path=str(SFT / "trl")))  # other data: another key
    with pytest.raises(AssertionError, match="must be reused"):
        cold_start_policy(other, [], backbone_dir, tmp_path)


def test_bad_sft_data_fails_before_any_weights_load(tmp_path, monkeypatch):
    import care.coldstart

    (tmp_path / "cold.jsonl").write_text(json.dumps({"question": "Q?", "answer": "A"}) + "\n")

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the data was checked")

    monkeypatch.setattr(care.coldstart, "load_backbone", no_loading)
    cfg = replace(Config(), cold_start=ColdStartConfig(name="sft", path=str(tmp_path / "cold.jsonl")))
    with pytest.raises(ValueError, match="cold_start.path=.*neither 'messages'"):
        cold_start_policy(cfg, [], "/backbone", tmp_path / "cache")
    built = [p.name for p in (tmp_path / "cache" / "cold_start").iterdir() if not p.name.endswith(".lock")]
    assert built == []  # no cold start, half-built or otherwise


def test_in_a_two_process_job_every_rank_trains_and_rank_0_alone_saves(tmp_path):
    import socket

    import torch.multiprocessing as mp

    from tests.coldstart_race import rank_main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "ranks.log"
    mp.spawn(rank_main, args=(2, port, str(tmp_path / "cold"), str(log)), nprocs=2, join=True)
    assert sorted(log.read_text().splitlines()) == ["rank0 save", "rank0 train", "rank1 train"]
