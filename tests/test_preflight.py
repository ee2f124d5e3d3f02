"""preflight names every problem of a job in one line (weights, data, cold start, each benchmark, engines),
refuses a real backbone on the synthetic task, never runs for task=plan, and runs the expensive data
check only once the cheap ones passed."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from care.config import Config, EvalConfig, EvalPaths
from care.evaluation.harness import check_benchmarks_reachable
from care.preflight import preflight, problems_message
from tests.test_data_root import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
VLLM_RUNS_HERE = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def weights(tmp_path: Path) -> Path:
    """A folder resolve_backbone accepts as a real backbone's weights (it looks for config.json)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def several_problems(tmp_path: Path) -> list[str]:
    """A paper job with its weights missing, a benchmark missing and (on CPU) the recipe's vLLM engines."""
    return ["backbone=qwen2_5_vl_7b", f"backbone.path={tmp_path}/no-weights", "data=care_mix",
            f"data.path={FIXTURES / 'care_mix'}", "cold_start=none", "eval=fixtures",
            f"eval.paths.mathvista={tmp_path}/no-mathvista", f"cache_dir={tmp_path}/cache"]


def test_one_problem_is_its_own_message_and_several_are_numbered_on_one_line():
    assert problems_message(["rl.steps=0 is out of range"]) == "rl.steps=0 is out of range"
    assert problems_message(["a\nb", "c"]) == "2 problems: (1) a b; (2) c"


@pytest.mark.skipif(VLLM_RUNS_HERE, reason="vLLM and a GPU are here: the engines are no problem")
def test_every_problem_is_named_at_once(tmp_path):
    with pytest.raises(ValueError) as err:
        preflight(compose_cfg(*several_problems(tmp_path)))
    message = str(err.value)
    assert message.startswith("4 problems: (1) ") and "\n" not in message, message
    for text in ("rollout.engine='vllm'", "eval.engine='vllm'", f"backbone.path='{tmp_path}/no-weights'",
                 f"eval.paths.mathvista='{tmp_path}/no-mathvista'"):
        assert text in message, message
    assert message.index("rollout.engine") < message.index("backbone.path") < message.index("eval.paths.mathvista")


@pytest.mark.skipif(VLLM_RUNS_HERE, reason="vLLM and a GPU are here: the engines are no problem")
def test_run_py_prints_them_all_in_one_config_error_line(tmp_path):
    result = subprocess.run([sys.executable, "run.py", *several_problems(tmp_path),
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if "problems" in line]
    assert line.startswith("config error: 4 problems: (1) ") and "no-weights" in line and "no-mathvista" in line
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_real_backbone_on_the_synthetic_boards_is_refused_naming_the_keys(tmp_path):
    real = ["backbone=qwen2_5_vl_7b", f"backbone.path={weights(tmp_path)}", "rollout=hf", "eval.engine=hf"]
    with pytest.raises(ValueError, match=r"^backbone=qwen2_5_vl_7b would train on the synthetic boards "
                                         r"\(data=synthetic, cold_start=synthetic\): set data=care_mix") as err:
        preflight(compose_cfg(*real))
    assert "data_root=" in str(err.value) and "cold_start=sft" in str(err.value)
    with pytest.raises(ValueError, match=r"\(data=synthetic\): set data=care_mix with data.path or data_root=") as err:
        preflight(compose_cfg(*real, "cold_start=none"))
    assert "cold_start=synthetic" not in str(err.value)
    assert preflight(compose_cfg(*real, "task=eval")) is None  # evaluating trains nothing


def test_task_eval_needs_only_the_engine_it_evaluates_with(tmp_path):
    """The paper recipe's rollout=vllm_colocate stays in the config of task=eval, which never rolls out."""
    cfg = compose_cfg("backbone=qwen2_5_vl_7b", f"backbone.path={weights(tmp_path)}", "task=eval", "eval.engine=hf")
    assert cfg.rollout.engine == "vllm"
    assert preflight(cfg) is None


def test_an_incomplete_cold_start_composes_and_training_refuses_it():
    """cold_start=sft without its path is a valid config (task=plan composes it); preflight refuses it."""
    for choice, message in (("sft", "cold_start=sft needs cold_start.path"),
                            ("checkpoint", "cold_start=checkpoint needs cold_start.checkpoint")):
        cfg = compose_cfg(f"cold_start={choice}")
        with pytest.raises(ValueError, match=message):
            preflight(cfg)


def test_task_plan_is_never_preflighted(tmp_path):
    cfg = compose_cfg("task=plan", *several_problems(tmp_path), "cold_start=sft")
    assert preflight(cfg) is None


def test_each_missing_component_of_the_training_data_is_named(tmp_path):
    mix = tmp_path / "mix"
    mix.mkdir()
    (mix / "geometry3k").symlink_to(FIXTURES / "care_mix" / "geometry3k")
    with pytest.raises(ValueError) as err:
        preflight(compose_cfg("data=care_mix", f"data.path={mix}", "cold_start=none"))
    message = str(err.value)
    assert message.startswith("2 problems: ") and "geometry3k" not in message.replace(f"{mix}", "")
    assert f"data.path='{mix / 'chartqa'}' does not exist" in message
    assert f"data.path='{mix / 'virl39k'}' does not exist" in message


def test_a_chartqa_split_the_key_asks_for_and_the_copy_lacks_is_named(tmp_path):
    """The cheap check reads one row, but finds every split data.chartqa_splits asks for first."""
    with pytest.raises(ValueError, match=r"data.chartqa_splits=\['train', 'val'\] asks for the 'val' split"):
        preflight(compose_cfg("data=chartqa", f"data.path={FIXTURES / 'chartqa'}", "cold_start=none"))


def test_the_expensive_data_check_waits_for_the_cheap_ones(tmp_path):
    """rl.max_prompt_length=8 drops every prompt, but only prepare() can tell: a cheap problem stops first."""
    with pytest.raises(FileNotFoundError) as err:
        preflight(compose_cfg("data=care_mix", f"data.path={FIXTURES / 'care_mix'}", "cold_start=none",
                              "rl.max_prompt_length=8", "eval=fixtures", f"eval.paths.mmmu={tmp_path}/no-mmmu"))
    assert "eval.paths.mmmu=" in str(err.value) and "drops all" not in str(err.value)


def test_every_unreachable_benchmark_is_named(tmp_path):
    paths = EvalPaths(mathvista=str(FIXTURES / "mathvista"), mmmu=str(tmp_path / "a"), mathvision=str(tmp_path / "b"))
    cfg = Config(eval=EvalConfig(benchmarks=["mathvista", "mmmu", "mathvision"], paths=paths))
    with pytest.raises(ValueError) as err:
        check_benchmarks_reachable(cfg)
    assert f"eval.paths.mmmu='{tmp_path / 'a'}'" in str(err.value)
    assert f"eval.paths.mathvision='{tmp_path / 'b'}'" in str(err.value)
    problems: list[str] = []
    check_benchmarks_reachable(cfg, problems)
    assert len(problems) == 2 and "eval.paths.mmmu" in problems[0] and "eval.paths.mathvision" in problems[1]


def test_a_bad_sft_line_refuses_the_sweep_before_anything_is_queued(tmp_path):
    """The SFT set is read whole when the sweep is launched, not when its cold-start job starts."""
    import shutil

    sft = tmp_path / "sft"
    shutil.copytree(FIXTURES / "sft" / "vision_r1_cold", sft)
    file = sft / "vision_r1_llava_cot_full.json"
    records = __import__("json").loads(file.read_text())
    records[1]["conversations"][0]["value"] = "What is \udc80 shown?"  # a lone surrogate: no valid UTF-8
    file.write_text(__import__("json").dumps(records))
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "run.py", "-m", "seed=0,1", "data=care_mix",
                             f"data.path={FIXTURES / 'care_mix'}", "cold_start=sft", f"cold_start.path={sft}",
                             "eval=fixtures", "scale=toy", "cluster=submitit_local", f"cache_dir={tmp_path}/cache",
                             f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{file} record 1: column 'conversations[0].value' holds a lone surrogate U+DC80" in result.stderr
    assert not [p for p in sweep.rglob("*") if p.is_dir() and p.name[0].isdigit()]  # no job ran or was queued
    assert not list((tmp_path / "cache").glob("cold_start/*"))
