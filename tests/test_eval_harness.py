"""`task=eval` end to end on the six benchmark fixtures, and its failure modes."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SIX = ["mathvista", "mathverse", "mathvision", "mmmu", "mmmu_pro_standard", "mmmu_pro_vision"]


def _run(*overrides):
    return subprocess.run([sys.executable, "run.py", "task=eval", *overrides], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, cache_dir):
    run_dir = tmp_path_factory.mktemp("eval") / "job"
    result = _run("eval=fixtures", "eval.do_sample=true", "eval.seeds=[0,1]", "eval.max_new_tokens=12",
                  f"cache_dir={cache_dir}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_every_benchmark_is_scored_per_sample_and_per_seed(eval_run):
    run_dir, result = eval_run
    assert result.stdout.strip().splitlines()[-1] == f"run_dir: {run_dir}"
    metrics = json.loads((run_dir / "eval_metrics.json").read_text())
    assert sorted(metrics["benchmarks"]) == sorted(SIX) and metrics["seeds"] == [0, 1]
    for name in SIX:
        for seed in (0, 1):
            rows = [json.loads(line) for line in (run_dir / "eval" / f"{name}-seed{seed}.jsonl").read_text().splitlines()]
            assert len(rows) == metrics["n"][name] >= 3
            assert {"id", "benchmark", "response", "parsed", "gold", "correct"} <= set(rows[0])
            assert all(r["benchmark"] == name for r in rows)
            accuracy = 100.0 * sum(r["correct"] for r in rows) / len(rows)
            assert metrics["per_seed"][str(seed)][name] == pytest.approx(accuracy)
    macros = [sum(metrics["per_seed"][s].values()) / 6 for s in ("0", "1")]
    assert metrics["macro"]["mean"] == pytest.approx(sum(macros) / 2)
    final = json.loads((run_dir / "final.json").read_text())
    assert final["after"]["macro"] == pytest.approx(metrics["macro"]["mean"])


def test_a_missing_benchmark_copy_fails_before_any_work(tmp_path):
    result = _run("eval.benchmarks=[mmmu]", f"eval.paths.mmmu={tmp_path}/nowhere", f"hydra.run.dir={tmp_path}/job")
    assert result.returncode == 2
    assert "eval.paths.mmmu" in result.stderr and "nowhere" in result.stderr
    assert not (tmp_path / "job" / "run.json").exists()
    # offline with no local copy: the error names the key to set instead of retrying the hub
    offline = _run("eval=paper6", f"hydra.run.dir={tmp_path}/job2")
    assert offline.returncode == 2 and "eval.paths.mathvista" in offline.stderr


def test_a_bad_checkpoint_or_benchmark_name_is_refused(tmp_path):
    result = _run(f"checkpoint={tmp_path}/missing", f"hydra.run.dir={tmp_path}/a")
    assert result.returncode == 2 and "checkpoint=" in result.stderr
    result = _run("eval.benchmarks=[mathvista,imagenet]", f"hydra.run.dir={tmp_path}/b")
    assert result.returncode == 2 and "imagenet" in result.stderr and "mathvista" in result.stderr


FAKE_VLLM = ROOT / "tests" / "fake_vllm"


def fake_vllm(monkeypatch, tmp_path) -> Path:
    """Child processes import tests/fake_vllm as `vllm`; returns the file it records into."""
    import os

    log = tmp_path / "vllm-calls.jsonl"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE_VLLM), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    return log


def read_calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_vllm_engine_gets_the_hf_prompts_images_and_sampling(tmp_path, cache_dir, monkeypatch):
    """eval.engine=vllm: a child process builds the engine with the backbone's pixel caps, and gets the
    HF prompt text, the images and each seed's sampling settings."""
    from care.config import Config, EvalConfig, EvalPaths
    from care.evaluation.harness import benchmark_records, run_eval
    from care.evaluation.protocol import prompt_texts
    from care.models import load_processor, resolve_backbone
    from care.tracking import RunFiles

    log = fake_vllm(monkeypatch, tmp_path)
    paths = EvalPaths(mmmu=str(ROOT / "tests/fixtures/mmmu"), mathvista=str(ROOT / "tests/fixtures/mathvista"))
    cfg = Config(task="eval", cache_dir=str(cache_dir),
                 eval=EvalConfig(benchmarks=["mmmu", "mathvista"], paths=paths, seeds=[3, 4], engine="vllm",
                                 max_new_tokens=20, temperature=0.7))
    result = run_eval(cfg, RunFiles(tmp_path / "job"))
    calls = read_calls(log)
    (init,) = [c for c in calls if c["event"] == "init"]
    source = resolve_backbone(cfg.backbone, cfg.cache_dir)
    assert init["kwargs"]["model"] == str(source) and init["kwargs"]["limit_mm_per_prompt"]["image"] >= 1
    assert init["pid"] != __import__("os").getpid()  # a process of its own
    # vLLM cuts images to the backbone's pixel caps, as the HF processor that wrote the prompt text does
    assert init["kwargs"]["mm_processor_kwargs"] == {"min_pixels": cfg.backbone.min_pixels,
                                                     "max_pixels": cfg.backbone.max_pixels}
    processor = load_processor(source, cfg.backbone.family, cfg.backbone.min_pixels, cfg.backbone.max_pixels)
    mmmu, mathvista = benchmark_records(cfg, "mmmu"), benchmark_records(cfg, "mathvista")
    generates = [c for c in calls if c["event"] == "generate"]
    assert len(generates) == 4  # 2 seeds x 2 benchmarks
    assert generates[0]["prompts"] == prompt_texts(processor, mmmu)
    assert generates[1]["prompts"] == prompt_texts(processor, mathvista)
    assert generates[0]["images"] == [len(r.images) for r in mmmu]
    assert [c["params"]["seed"] for c in generates] == [3, 3, 4, 4]
    assert {c["params"]["temperature"] for c in generates} == {0.7}
    assert {c["params"]["max_tokens"] for c in generates} == {20}
    rows = [json.loads(line) for line in (tmp_path / "job" / "eval" / "mmmu-seed3.jsonl").read_text().splitlines()]
    assert all(r["response"] == "<think>x</think><answer>A</answer>" and r["parsed"] == "A" for r in rows)
    assert [r["id"] for r in rows] == [r.id for r in mmmu]
    assert result["after"]["n"] == len(mmmu) + len(mathvista)


@pytest.mark.skipif(torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None,
                    reason="a CUDA GPU and vLLM are here: eval.engine=vllm can run")
def test_vllm_engine_is_refused_where_it_cannot_run(tmp_path):
    result = _run("eval.engine=vllm", f"hydra.run.dir={tmp_path / 'job'}")
    assert result.returncode == 2
    assert "eval.engine='vllm'" in result.stderr and "eval.engine=hf" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None,
                    reason="a CUDA GPU and vLLM are here: eval.engine=vllm can run")
def test_a_training_run_with_vllm_evaluation_is_refused_where_it_cannot_run(tmp_path):
    training = subprocess.run([sys.executable, "run.py", "eval.engine=vllm", f"hydra.run.dir={tmp_path / 'train'}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert training.returncode == 2
    assert "eval.engine='vllm'" in training.stderr and "eval.engine=hf" in training.stderr
    assert not (tmp_path / "train" / "run.json").exists()
