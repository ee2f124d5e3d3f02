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
    result = _run("backbone=qwen2_5_vl_7b", "rollout=hf", "eval.engine=hf", f"hydra.run.dir={tmp_path}/c", env=env)
    assert result.returncode == 2
    assert "backbone.path" in result.stderr and "Qwen/Qwen2.5-VL-7B-Instruct" in result.stderr
    missing = _run("backbone=qwen2_5_vl_3b", "rollout=hf", "eval.engine=hf", f"backbone.path={tmp_path}/nowhere",
                   f"hydra.run.dir={tmp_path}/d", env=env)
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


def compose_cfg(*overrides: str) -> Config:
    from hydra import compose, initialize_config_dir

    from run import to_config

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


def test_grpo_shares_cares_loss_settings_and_grpo_trl_is_trls():
    """GRPO differs from CARE only in the advantages; TRL's own defaults are `algorithm=grpo_trl`."""
    from dataclasses import asdict, replace

    from trl import GRPOConfig

    care, grpo = compose_cfg("algorithm=care").algorithm, compose_cfg("algorithm=grpo").algorithm
    assert replace(grpo, name="care") == care and (care.beta, care.epsilon, care.epsilon_high) == (0.01, 0.2, 0.3)
    trl = GRPOConfig(output_dir="/tmp/unused", use_cpu=True)
    trl_algorithm = compose_cfg("algorithm=grpo_trl").algorithm
    assert not trl_algorithm.dynamic_sampling and trl_algorithm.kl_clamp is None  # TRL has neither
    for key, value in asdict(trl_algorithm).items():
        if key in ("name", "dynamic_sampling", "max_sampling_rounds", "kl_clamp"):
            continue
        expected = getattr(trl, "use_bias_correction_kl" if key == "kl_bias_correction" else key)
        if key == "epsilon_high" and expected is None:  # TRL: None means "same as epsilon"
            expected = trl.epsilon
        assert value == expected, key
    from tests.trainer_helpers import algorithm_preset

    for name in ("grpo", "grpo_trl", "dapo", "gspo", "care"):
        cfg = compose_cfg(f"algorithm={name}")
        assert algorithm_preset(name) == cfg.algorithm
        assert cfg.rgr.enabled == (name == "care")  # RGR is CARE's
    # one way to turn RGR off: rgr=off (CARE w/o RGR); no algorithm preset does it a second way
    assert not compose_cfg("algorithm=care", "rgr=off").rgr.enabled
    assert not (Path(__file__).resolve().parents[1] / "conf" / "algorithm" / "care_no_rgr.yaml").exists()


def test_presets_write_only_what_they_change():
    """Each default is written once: a method preset never restates an AlgorithmConfig default."""
    import yaml

    from care.config import AlgorithmConfig

    defaults = AlgorithmConfig()
    for path in sorted((ROOT / "conf" / "algorithm").glob("*.yaml")):
        for key, value in yaml.safe_load(path.read_text())["algorithm"].items():
            undoes_the_recipe = path.name == "grpo_trl.yaml" and key in ("delta", "kl_clamp", "kl_bias_correction")  # recipe=paper sets them
            assert key == "name" or undoes_the_recipe or value != getattr(defaults, key), \
                f"{path.name}: {key}={value} is the default"


# Keys that name the option a group file is (its identity), allowed to equal the default.
IDENTITY_KEYS = {"name", "family", "engine", "vllm_mode", "strategy", "variant", "enabled", "benchmarks", "tiny"}


@pytest.mark.parametrize("group", ["backbone", "data", "eval", "parallel", "rgr", "rollout"])
def test_group_files_do_not_restate_dataclass_defaults(group):
    import dataclasses

    import yaml

    for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
        text = path.read_text()
        values = {k: v for k, v in (yaml.safe_load(text) or {}).items() if k != "defaults"}
        # a `# @package _global_` file sets several nodes (data=care_mix also sets rl's reward keys)
        nodes = values if text.startswith("# @package _global_") else {group: values}
        for node, node_values in nodes.items():
            defaults = getattr(Config(), node)
            for key, value in node_values.items():
                default = getattr(defaults, key)
                default = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default
                assert key in IDENTITY_KEYS or value != default, \
                    f"conf/{group}/{path.name}: {node}.{key}={value!r} is the default"


def test_real_backbones_get_the_paper_recipe_unless_overridden():
    tiny, paper = compose_cfg(), compose_cfg("backbone=qwen2_5_vl_7b")
    assert (tiny.rl, tiny.parallel.strategy, tiny.rollout.engine) == (Config().rl, "ddp", "hf")  # the CPU settings
    rl = paper.rl
    assert (rl.learning_rate, rl.weight_decay, rl.max_grad_norm, rl.temperature, rl.top_p) == (1e-6, 1e-2, 1.0, 1.0, 1.0)
    assert (rl.prompts_per_rollout, rl.prompts_per_update, rl.num_generations) == (512, 128, 8)
    assert (rl.max_prompt_length, rl.max_completion_length, rl.compute_dtype) == (2048, 2048, "bfloat16")
    assert (paper.backbone.dtype, paper.parallel.strategy, paper.rollout.engine) == ("float32", "fsdp", "vllm")
    from dataclasses import replace

    # loss and RGR decode: one set, but for the reference's dual-clip, which the recipe alone adds
    assert paper.algorithm == replace(tiny.algorithm, delta=3.0, kl_clamp=10.0, kl_bias_correction=False) and paper.rgr == tiny.rgr
    for backbone in ("qwen2_5_vl_3b", "qwen3_vl_8b"):
        assert compose_cfg(f"backbone={backbone}").rl == rl
    mine = compose_cfg("backbone=qwen2_5_vl_7b", "rl.learning_rate=2e-6", "parallel=zero3", "rollout=hf")
    assert (mine.rl.learning_rate, mine.parallel.strategy, mine.rollout.engine) == (2e-6, "zero3", "hf")
    assert compose_cfg("backbone=qwen2_5_vl_7b", "recipe=cpu").rl == tiny.rl
    toy = compose_cfg("backbone=qwen2_5_vl_7b", "scale=toy").rl
    assert (toy.steps, toy.prompts_per_rollout, toy.micro_batch_size, toy.max_completion_length) == (3, 2, None, 64)


# One rollout batch of 512 prompts x 8 and updates of 128 prompts, on 1, 2, 4 or 8 GPUs alike.
GOLDEN_GEOMETRY = {1: (4, 256, 1024), 2: (4, 128, 512), 4: (4, 64, 256), 8: (4, 32, 128)}


@pytest.mark.parametrize("gpus", GOLDEN_GEOMETRY)
def test_batch_geometry_keeps_the_recipes_batches_on_any_gpu_count(gpus):
    from care.config import batch_geometry

    g = batch_geometry(compose_cfg("backbone=qwen2_5_vl_7b").rl, gpus)
    assert (g.micro_batch_size, g.gradient_accumulation_steps, g.steps_per_generation) == GOLDEN_GEOMETRY[gpus]
    assert g.micro_batch_size * gpus * g.gradient_accumulation_steps == 128 * 8  # sequences per update
    assert g.micro_batch_size * gpus * g.steps_per_generation == g.generation_batch_size == 512 * 8
    assert g.updates_per_rollout == 4


def test_batch_geometry_of_the_cpu_settings_is_todays():
    """One update per rollout batch, the whole batch split over the processes (TRL's defaults)."""
    from care.config import batch_geometry

    for processes, micro in ((1, 64), (2, 32)):
        g = batch_geometry(RLConfig(), processes)
        assert (g.micro_batch_size, g.gradient_accumulation_steps, g.steps_per_generation) == (micro, 1, 1)


@pytest.mark.parametrize("overrides, keys", [
    (["cluster.gpus=3"], ["rl.micro_batch_size=4", "cluster.gpus=3"]),
    (["rl.prompts_per_update=100"], ["rl.prompts_per_rollout=512", "rl.prompts_per_update=100"]),
    (["rl.micro_batch_size=5"], ["rl.micro_batch_size=5", "cluster.gpus=8"]),
])
def test_a_batch_that_does_not_divide_fails_at_composition(overrides, keys):
    with pytest.raises(ValueError) as err:
        compose_cfg("backbone=qwen2_5_vl_7b", *overrides)
    assert all(key in str(err.value) for key in keys), str(err.value)


def test_precision_is_mixed_on_gpus_and_fp32_on_cpus():
    """fp32 master weights + bf16 autocast at paper scale on a GPU; bf16 weights under AdamW refused."""
    from care.trainer.build import precision_args

    paper = compose_cfg("backbone=qwen2_5_vl_7b")
    assert paper.backbone.dtype == "float32"  # what TRL loads the policy (and AdamW's state) in
    assert precision_args(paper, on_gpu=True) == {"use_cpu": False, "bf16": True, "fp16": False}
    assert precision_args(paper, on_gpu=False) == {"use_cpu": True, "bf16": False, "fp16": False}
    assert precision_args(compose_cfg(), on_gpu=True) == {"use_cpu": False, "bf16": False, "fp16": False}
    with pytest.raises(ValueError, match=r"backbone\.dtype='bfloat16'.*rl\.compute_dtype=bfloat16"):
        compose_cfg("backbone=qwen2_5_vl_7b", "backbone.dtype=bfloat16")


def test_the_rgr_cue_is_one_key():
    assert compose_cfg("rgr.cue=paper").rgr.cue_string != compose_cfg().rgr.cue_string
    assert not (ROOT / "conf" / "rgr_cue").exists() and not (ROOT / "conf" / "method").exists()


def test_grpo_args_carry_the_recipe_into_trl(tmp_path):
    """TRL accepts the derived geometry and gets the recipe's optimizer and sampling settings (1 CPU process)."""
    from care.trainer.build import grpo_args

    args = grpo_args(compose_cfg("backbone=qwen2_5_vl_7b", "rollout=hf"), tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.steps_per_generation) == (4, 256, 1024)
    assert args.generation_batch_size == 512 * 8 and args.num_generations == 8
    assert (args.learning_rate, args.weight_decay, args.max_grad_norm, args.lr_scheduler_type) == (1e-6, 1e-2, 1.0, "constant")
    assert (args.temperature, args.top_p, args.max_completion_length, args.max_steps) == (1.0, 1.0, 2048, 384)
    assert (args.beta, args.epsilon, args.epsilon_high) == (0.01, 0.2, 0.3)
    assert args.model_init_kwargs["dtype"] == "float32"
    tiny = grpo_args(compose_cfg(), tmp_path)  # today's CPU layout: one update per rollout batch
    assert (tiny.per_device_train_batch_size, tiny.gradient_accumulation_steps, tiny.steps_per_generation) == (64, 1, 1)
    assert (tiny.weight_decay, tiny.learning_rate, tiny.bf16) == (0.0, 3e-4, False)


def test_the_paper_recipe_sets_the_reference_loss_details_and_grpo_trl_keeps_trls():
    """Dual-clip 3.0, the KL clamp, a plain k3 and no importance-sampling correction for vLLM rollouts,
    in recipe=paper only."""
    from care.trainer.build import grpo_args

    paper = compose_cfg("backbone=qwen2_5_vl_7b")
    assert (paper.algorithm.delta, paper.algorithm.kl_clamp, paper.rollout.vllm_importance_sampling_correction) \
        == (3.0, 10.0, False)
    grpo = compose_cfg("backbone=qwen2_5_vl_7b", "algorithm=grpo").algorithm  # GRPO shares CARE's loss
    assert (grpo.delta, grpo.kl_clamp, grpo.kl_bias_correction) == (3.0, 10.0, False)
    trl = compose_cfg("backbone=qwen2_5_vl_7b", "algorithm=grpo_trl").algorithm
    assert (trl.delta, trl.kl_clamp, trl.kl_bias_correction) == (None, None, True)
    assert not grpo_args(compose_cfg("backbone=qwen2_5_vl_7b", "rollout=hf", "parallel=ddp"),
                         Path("/tmp/unused")).use_bias_correction_kl
    cpu = compose_cfg()
    assert (cpu.algorithm.delta, cpu.algorithm.kl_clamp, cpu.rollout.vllm_importance_sampling_correction) \
        == (None, None, True)
    assert grpo_args(compose_cfg("algorithm.delta=3.0"), Path("/tmp/unused")).delta == 3.0
    with pytest.raises(Exception, match="algorithm.delta=1.2 must exceed 1 \\+ algorithm.epsilon_high = 1.3"):
        compose_cfg("algorithm.delta=1.2")
