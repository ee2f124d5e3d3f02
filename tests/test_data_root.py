"""data_root=DIR fills the data keys from README step 1's layout: only keys still unset and read by
the config, explicit keys win, a layout missing what it must fill is refused naming every sub-folder,
a relative data_root resolves like the other path keys, and task=plan needs none of it on disk."""

import subprocess
import sys
from pathlib import Path

import pytest

from care.config import BackboneConfig, ColdStartConfig, Config, DataConfig, EvalConfig
from care.data_root import apply_data_root

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
BENCH = {"mathvista": "mathvista", "mathverse": "mathverse", "mathvision": "mathvision", "mmmu": "mmmu",
         "mmmu_pro": "mmmu_pro"}
PAPER6 = ("mathvista", "mathverse", "mathvision", "mmmu", "mmmu_pro_standard", "mmmu_pro_vision")


def make_layout(root: Path, bench=BENCH, mix=True, cold=True) -> Path:
    """README step 1's layout, its folders symlinked to the real-schema fixtures."""
    (root / "bench").mkdir(parents=True)
    if mix:
        (root / "care_mix").symlink_to(FIXTURES / "care_mix")
    if cold:
        (root / "vision_r1_cold").symlink_to(FIXTURES / "sft" / "vision_r1_cold")
    for name, fixture in bench.items():
        (root / "bench" / name).symlink_to(FIXTURES / fixture)
    return root


@pytest.fixture
def layout(tmp_path):
    return make_layout(tmp_path / "data")


def compose_cfg(*overrides: str) -> Config:
    from hydra import compose, initialize_config_dir

    from run import to_config

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


def test_data_root_fills_every_data_key_the_config_reads(layout):
    cfg = compose_cfg(f"data_root={layout}", "data=care_mix", "cold_start=sft", "eval=paper6")
    assert cfg.data.path == str(layout / "care_mix")
    assert cfg.cold_start.path == str(layout / "vision_r1_cold")
    for name in ("mathvista", "mathverse", "mathvision", "mmmu"):
        assert cfg.eval.paths.get(name) == str(layout / "bench" / name)
    assert cfg.eval.paths.mmmu_pro_standard == cfg.eval.paths.mmmu_pro_vision == str(layout / "bench" / "mmmu_pro")
    assert cfg.backbone.path is None  # a tiny backbone reads no weights


@pytest.mark.parametrize("name", ["geometry3k", "chartqa", "virl39k"])
def test_a_component_alone_reads_its_folder_inside_care_mix(layout, name):
    assert compose_cfg(f"data_root={layout}", f"data={name}", "cold_start=none").data.path == \
        str(layout / "care_mix" / name)


def test_explicit_keys_win(layout, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # eval=fixtures' paths are relative to the launch directory
    mine = tmp_path / "my_mix"
    mine.symlink_to(FIXTURES / "care_mix")
    cfg = compose_cfg(f"data_root={layout}", "data=care_mix", f"data.path={mine}", "cold_start=sft",
                      f"cold_start.path={FIXTURES / 'sft' / 'trl'}", "eval=fixtures", "eval.paths.mmmu=null")
    assert cfg.data.path == str(mine)
    assert cfg.cold_start.path == str(FIXTURES / "sft" / "trl")
    assert cfg.eval.paths.mathvista == str(FIXTURES / "mathvista")  # eval=fixtures' own path
    assert cfg.eval.paths.mmmu == str(layout / "bench" / "mmmu")  # the one left unset


def test_keys_the_config_does_not_read_stay_unset(tmp_path):
    """An empty data_root is fine for the default job: it reads no data key."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = compose_cfg(f"data_root={empty}")
    assert (cfg.data.path, cfg.cold_start.path) == (None, None)
    assert all(value is None for value in vars(cfg.eval.paths).values())


def test_only_the_listed_benchmarks_and_no_training_keys_for_task_eval(layout):
    cfg = compose_cfg(f"data_root={layout}", "task=eval", "data=care_mix", "cold_start=sft",
                      "eval=paper6", "eval.benchmarks=[mathvista,mmmu_pro_vision]")
    assert (cfg.data.path, cfg.cold_start.path) == (None, None)  # task=eval reads neither
    assert cfg.eval.paths.mathvista == str(layout / "bench" / "mathvista")
    assert cfg.eval.paths.mmmu_pro_vision == str(layout / "bench" / "mmmu_pro")
    assert (cfg.eval.paths.mathverse, cfg.eval.paths.mmmu, cfg.eval.paths.mmmu_pro_standard) == (None, None, None)


def test_only_the_sub_folders_it_fills_must_exist(tmp_path):
    partial = make_layout(tmp_path / "data", bench={}, cold=False)  # care_mix alone
    cfg = compose_cfg(f"data_root={partial}", "data=care_mix", "cold_start=none")
    assert cfg.data.path == str(partial / "care_mix")


def test_every_missing_sub_folder_is_named_with_the_layout(tmp_path):
    partial = make_layout(tmp_path / "data", bench={"mathvista": "mathvista"}, cold=False)
    with pytest.raises(ValueError) as err:
        compose_cfg(f"data_root={partial}", "data=care_mix", "cold_start=sft", "eval=paper6")
    message = str(err.value)
    assert f"data_root={str(partial)!r}" in message
    for sub, key in (("vision_r1_cold", "cold_start.path"), ("bench/mathverse", "eval.paths.mathverse"),
                     ("bench/mathvision", "eval.paths.mathvision"), ("bench/mmmu", "eval.paths.mmmu")):
        assert f"{sub} (for {key})" in message, message
    assert "bench/mmmu_pro (for eval.paths.mmmu_pro_standard, eval.paths.mmmu_pro_vision)" in message
    assert "care_mix (for" not in message and "bench/mathvista (for" not in message  # those are there
    assert "DIR/care_mix/{geometry3k,chartqa,virl39k}" in message and "README" in message


def test_run_py_refuses_a_missing_layout_before_any_work(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "run.py", f"data_root={empty}", "data=care_mix", "cold_start=none",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert "care_mix (for data.path)" in line
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_relative_data_root_resolves_against_the_launch_directory(tmp_path, monkeypatch):
    make_layout(tmp_path / "data")
    monkeypatch.setenv("CARE_LAUNCH_DIR", str(tmp_path))  # what a sweep job running from its snapshot gets
    cfg = compose_cfg("data_root=data", "data=care_mix", "cold_start=none")
    assert (cfg.data_root, cfg.data.path) == (str(tmp_path / "data"), str(tmp_path / "data" / "care_mix"))
    monkeypatch.delenv("CARE_LAUNCH_DIR")
    monkeypatch.chdir(tmp_path)  # no launch directory: the working directory, as for the other path keys
    assert compose_cfg("data_root=data", "data=care_mix", "cold_start=none").data.path == \
        str(tmp_path / "data" / "care_mix")


def test_real_weights_come_from_models_when_that_folder_exists(layout, tmp_path):
    assert compose_cfg(f"data_root={layout}", "backbone=qwen2_5_vl_7b").backbone.path is None  # the HF cache then
    weights = layout / "models" / "Qwen2.5-VL-7B-Instruct"
    weights.mkdir(parents=True)
    assert compose_cfg(f"data_root={layout}", "backbone=qwen2_5_vl_7b").backbone.path == str(weights)
    assert compose_cfg(f"data_root={layout}", "backbone=qwen2_5_vl_3b").backbone.path is None  # not downloaded
    assert compose_cfg(f"data_root={layout}", "backbone=qwen2_5_vl_7b",
                       f"backbone.path={tmp_path}").backbone.path == str(tmp_path)


def test_plan_composes_without_data_or_a_layout_on_disk(tmp_path):
    cfg = compose_cfg("task=plan", "data=care_mix", "cold_start=sft", "backbone=qwen2_5_vl_7b")
    assert (cfg.data.path, cfg.cold_start.path) == (None, None)
    nowhere = tmp_path / "nowhere"
    planned = compose_cfg("task=plan", f"data_root={nowhere}", "data=care_mix", "cold_start=sft")
    assert planned.cold_start.path == str(nowhere / "vision_r1_cold")  # filled, not checked
    result = subprocess.run([sys.executable, "run.py", "task=plan", "data=care_mix", "cold_start=sft",
                             "backbone=qwen2_5_vl_7b", f"data_root={nowhere}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1].startswith('{"jobs"')


def test_the_launcher_applies_it_to_a_typed_config_without_hydra(layout, tmp_path):
    """What the sweep launcher does with each job's Config; check=False looks at nothing on disk."""
    cfg = Config(data_root=str(layout), data=DataConfig(name="chartqa", train_size=None),
                 cold_start=ColdStartConfig(name="sft"), eval=EvalConfig(benchmarks=["mmmu"]))
    assert apply_data_root(cfg) == []
    assert (cfg.data.path, cfg.eval.paths.mmmu) == (str(layout / "care_mix" / "chartqa"), str(layout / "bench" / "mmmu"))
    bare = Config(data_root=str(tmp_path / "nowhere"), backbone=BackboneConfig(name="x", hub_id="org/X", tiny=None),
                  cold_start=ColdStartConfig(name="sft"), data=DataConfig(name="care_mix", train_size=None))
    assert apply_data_root(bare, check=False) == []
    assert bare.cold_start.path == str(tmp_path / "nowhere" / "vision_r1_cold") and bare.backbone.path is None
    (problem,) = apply_data_root(Config(data_root=str(tmp_path / "nowhere"),
                                        data=DataConfig(name="care_mix", train_size=None),
                                        cold_start=ColdStartConfig(name="none")))
    assert "care_mix (for data.path)" in problem


def test_a_job_on_the_fixture_layout_passes_preflight(layout, cache_dir):
    """The whole toy path of test_real_data_run, its paths from data_root alone: nothing left to refuse."""
    from care.preflight import preflight

    cfg = compose_cfg(f"data_root={layout}", "data=care_mix", "cold_start=sft", "eval=paper6", "scale=toy",
                      f"cache_dir={cache_dir}")
    data = preflight(cfg)  # the prepared training data, which the job then uses as it is
    assert data is not None and data.counts["train"] > 0


def test_readme_step_1_downloads_into_this_layout():
    """The download commands and data_root's layout are one list: a folder renamed in one breaks this."""
    import re

    from care.data_root import BENCH_DIRS, COLD_START_DIR, data_dir, model_dir

    readme = (ROOT / "README.md").read_text()
    folders = set(re.findall(r"--local-dir /data/(\S+)", readme))
    expected = {data_dir(name) for name in ("geometry3k", "chartqa", "virl39k")} | {COLD_START_DIR}
    expected |= set(BENCH_DIRS.values()) | {model_dir("Qwen/Qwen2.5-VL-7B-Instruct")}
    assert folders == expected
    assert "data_root=/data" in readme
