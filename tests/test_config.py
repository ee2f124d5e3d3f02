"""Config validation: bad values fail with the key's name and what is accepted."""

import subprocess
import sys
from pathlib import Path

import pytest

from care.config import (
    AlgorithmConfig,
    BackboneConfig,
    CareOptions,
    ColdStartConfig,
    Config,
    DataConfig,
    RLConfig,
)

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid():
    cfg = Config()
    assert cfg.backbone.name == "tiny_qwen2_5_vl" and cfg.data.name == "synthetic"


@pytest.mark.parametrize("build, key", [
    (lambda: RLConfig(num_generations=1), "rl.num_generations"),
    (lambda: AlgorithmConfig(loss_type="ppo"), "algorithm.loss_type"),
    (lambda: AlgorithmConfig(epsilon=0.0), "algorithm.epsilon"),
    (lambda: AlgorithmConfig(name="ppo"), "algorithm.name"),
    (lambda: AlgorithmConfig(name="care", loss_type="grpo"), "algorithm.loss_type"),
    (lambda: CareOptions(k=0), "care.k"),
    (lambda: CareOptions(s=1.5), "care.s"),
    (lambda: CareOptions(anchor="best"), "care.anchor"),
    (lambda: CareOptions(selector="closest"), "care.selector"),
    (lambda: DataConfig(name="mnist"), "data.name"),
    (lambda: DataConfig(grid=1), "data.grid"),
    (lambda: ColdStartConfig(reflection_fraction=1.5), "cold_start.reflection_fraction"),
    (lambda: ColdStartConfig(reflection_loss="cue_only"), "cold_start.reflection_loss"),
    (lambda: BackboneConfig(family="llava"), "backbone.family"),
    (lambda: BackboneConfig(dtype="fp8"), "backbone.dtype"),
    (lambda: BackboneConfig(name="real", tiny=None), "backbone.path"),
])
def test_bad_values_name_the_key(build, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build()


def _run(*overrides, env=None):
    return subprocess.run([sys.executable, "run.py", *overrides], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


def test_run_py_rejects_bad_input_before_any_work(tmp_path):
    misspelt = _run("rl.stepz=3", f"hydra.run.dir={tmp_path}/a")
    assert misspelt.returncode != 0 and "stepz" in misspelt.stderr
    bad_value = _run("rl.num_generations=1", f"hydra.run.dir={tmp_path}/b")
    assert bad_value.returncode == 2 and "rl.num_generations=1" in bad_value.stderr
    assert "[2, inf]" in bad_value.stderr
    assert not (tmp_path / "b" / "run.json").exists()


def test_unreachable_real_backbone_fails_naming_backbone_path(tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = _run("backbone=qwen2_5_vl_7b", f"hydra.run.dir={tmp_path}/c", env=env)
    assert result.returncode == 2
    assert "backbone.path" in result.stderr and "Qwen/Qwen2.5-VL-7B-Instruct" in result.stderr
    missing = _run("backbone=qwen2_5_vl_3b", f"backbone.path={tmp_path}/nowhere", f"hydra.run.dir={tmp_path}/d",
                   env=env)
    assert missing.returncode == 2 and "backbone.path=" in missing.stderr and "nowhere" in missing.stderr


def test_offline_backbone_resolution_never_touches_the_network(monkeypatch, tmp_path):
    """Fails at once: no hub retries (those alone take ~50 s; benchmarks/fail_fast.py times it)."""
    from care.models import BackboneUnavailable, resolve_backbone
    from tests.no_network import no_network

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone = BackboneConfig(name="qwen2_5_vl_7b", hub_id="care-tests/no-such-backbone", tiny=None)
    with no_network() as attempts, pytest.raises(BackboneUnavailable, match="backbone.path"):
        resolve_backbone(backbone, tmp_path)
    assert attempts == []


def test_algorithm_presets_compose_and_grpo_matches_trl_defaults():
    """`algorithm=grpo` must be TRL's GRPO: every key of the preset equals GRPOConfig's default."""
    import yaml
    from trl import GRPOConfig

    preset = yaml.safe_load((ROOT / "conf" / "algorithm" / "grpo.yaml").read_text())
    trl = GRPOConfig(output_dir="/tmp/unused", use_cpu=True)
    for key, value in preset.items():
        if key == "name":
            continue
        expected = getattr(trl, key)
        if key == "epsilon_high" and expected is None:  # TRL: None means "same as epsilon"
            expected = trl.epsilon
        assert value == expected, key
    from tests.trainer_helpers import algorithm_preset

    for name in ("grpo", "dapo", "gspo", "care"):
        assert algorithm_preset(name).name == name
