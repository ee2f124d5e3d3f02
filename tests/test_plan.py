"""task=plan and the sizes behind it: the recipe's jobs, what fits 80 GB, and the estimate vs torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from care.config import BackboneConfig
from care.plan import check_fits, decoder_params, plan_job, sizes, training_state_bytes
from run import to_config

ROOT = Path(__file__).resolve().parents[1]
REAL = {  # text decoder shapes from the hub config.json files: (tied embeddings, qkv bias)
    "qwen2_5_vl_3b": (True, True), "qwen2_5_vl_7b": (False, True), "qwen3_vl_8b": (False, False)}


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


def plan(*overrides: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "task=plan", *overrides], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    return result, json.loads(result.stdout.strip().splitlines()[-1])["jobs"]


def test_plan_of_paper_backbones_on_slurm(tmp_path):
    """The recipe's values, a sharded layout that fits 80 GB; plain DDP for 7B does not."""
    result, jobs = plan("backbone=qwen2_5_vl_7b,qwen3_vl_8b", "cluster=slurm", tmp_path=tmp_path)
    assert [job["backbone"] for job in jobs] == ["qwen2_5_vl_7b", "qwen3_vl_8b"]
    for job in jobs:
        assert (job["gpus"], job["sharding"], job["prompts_per_rollout"], job["prompts_per_update"]) == (8, "fsdp", 512, 128)
        assert (job["num_generations"], job["learning_rate"], job["max_response_length"]) == (8, 1e-6, 2048)
        assert (job["weights_dtype"], job["compute_dtype"], job["max_prompt_length"]) == ("float32", "bfloat16", 2048)
        assert job["fits"] and job["est_gpu_mem_gb"] <= 80
        assert job["gpu_hours"] > 0 and set(job["memory_gib"]) >= {
            "weights", "gradients", "optimizer", "activations", "reference", "vllm", "logits"}
    assert "run_dir:" not in result.stdout and not any(tmp_path.iterdir())  # nothing written, nothing launched
    _, (ddp,) = plan("backbone=qwen2_5_vl_7b", "cluster=slurm", "parallel=ddp", tmp_path=tmp_path)
    assert ddp["sharding"] == "ddp" and not ddp["fits"] and ddp["est_gpu_mem_gb"] > 80
    assert ddp["memory_gib"]["optimizer"] > 60  # 8.3B params x 8 bytes of AdamW state, unsharded


def test_the_before_after_check_is_priced_from_the_benchmark_sizes():
    """eval=paper6 under the recipe: the six benchmarks' 12,340 prompts (docs/paper_eval.md) and the 256
    held out, 5 seeds each, per phase, on vLLM; eval.limit and greedy decoding shrink it."""
    from care.plan import ASSUMED_DECODE_TOKENS_PER_S_7B, MEAN_LENGTH_FRACTION

    cfg = composed("backbone=qwen2_5_vl_7b", "eval=paper6")
    job = plan_job(cfg, gpus=8)
    assert job["eval_engine"] == "vllm" and job["eval_generations_per_phase"] == (12_340 + 256) * 5
    rate = ASSUMED_DECODE_TOKENS_PER_S_7B * 7e9 / sizes(cfg.backbone).num_params
    hours = job["eval_generations_per_phase"] * MEAN_LENGTH_FRACTION * 2048 / rate / 3600
    assert job["eval_gpu_hours_per_phase"] == round(hours, 1) > 0
    small = plan_job(composed("backbone=qwen2_5_vl_7b", "eval=paper6", "eval.limit=100", "eval.do_sample=false"),
                     gpus=8)
    assert small["eval_generations_per_phase"] == 7 * 100  # six benchmarks and the held-out slice, one pass


def test_plan_lists_every_job_of_a_sweep_from_one_process(tmp_path):
    result, jobs = plan("sweep=main", "cluster=slurm", tmp_path=tmp_path)
    assert len(jobs) == 60  # 4 methods x 3 backbones x 5 seeds, as `python run.py sweep=main` would queue
    assert {job["algorithm"] for job in jobs} == {"grpo", "dapo", "gspo", "care"}
    assert {(job["backbone"], job["gpus"]) for job in jobs} == {
        ("qwen2_5_vl_7b", 8), ("qwen3_vl_8b", 8), ("qwen2_5_vl_3b", 4)}  # conf/cluster/slurm.yaml per_backbone
    assert all(job["fits"] for job in jobs)
    assert not (tmp_path / "multirun").exists()


def test_plan_rejects_a_batch_that_does_not_divide(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "task=plan", "backbone=qwen2_5_vl_7b",
                             "rl.micro_batch_size=3"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "rl.micro_batch_size=3" in result.stderr and "cluster.gpus=8" in result.stderr


def test_launcher_gpus_per_backbone():
    from care.plan import launcher_gpus

    launcher = {"gpus_per_node": 8, "nodes": 1, "per_backbone": {"qwen2_5_vl_3b": {"gpus_per_node": 4},
                                                                 "tiny_qwen2_5_vl": {"gpus_per_node": 0}}}
    assert [launcher_gpus(launcher, b) for b in ("qwen2_5_vl_3b", "qwen2_5_vl_7b", "tiny_qwen2_5_vl")] == [4, 8, 0]
    assert launcher_gpus({**launcher, "nodes": 2}, "qwen2_5_vl_7b") == 16
    assert launcher_gpus({"timeout_min": 60}, "qwen2_5_vl_7b") is None  # a launcher without GPU settings


def test_check_fits_names_the_numbers():
    check_fits(composed("backbone=qwen2_5_vl_7b"))  # FSDP over 8 GPUs: fits
    with pytest.raises(ValueError, match=r"qwen2_5_vl_7b on 8 GPUs with parallel=ddp needs ~\d+\.\d+ GiB per GPU > "
                                         r"cluster\.gpu_mem_gb=80\.0 \(weights 30\.89"):
        check_fits(composed("backbone=qwen2_5_vl_7b", "parallel=ddp"))
    check_fits(composed("backbone=qwen2_5_vl_7b", "parallel=ddp", "cluster.gpu_mem_gb=300",  # explicit keys win
                        "rollout.vllm_gpu_memory_utilization=0.1"))
    check_fits(composed("backbone=qwen2_5_vl_7b", "parallel=ddp", "cluster.require_fit=false"))


@pytest.mark.parametrize("name", REAL)
def test_real_backbone_sizes_agree_with_their_architecture(name):
    """The hard-coded parameter count minus the vision tower is what the decoder's shapes give (±0.1%)."""
    arch = composed(f"backbone={name}").backbone.arch
    tied, bias = REAL[name]
    text = decoder_params(arch.hidden_size, arch.num_layers, arch.num_heads, arch.num_kv_heads,
                          arch.intermediate_size, arch.vocab_size, tied=tied, qkv_bias=bias)
    assert text == pytest.approx(arch.num_params - arch.vision_params, rel=1e-3)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_training_state_estimate_matches_torch_on_the_tiny_backbone(family):
    """Weights + gradients + AdamW state after a real step, vs the plan's 16 bytes/param estimate.
    Tolerance 3%: the estimate counts the configured vocab (512), the tokenizer builds fewer tokens."""
    import torch

    from care.models.tiny import _model_config, _train_tokenizer

    cfg = BackboneConfig(name=f"tiny_{family}", family=family)
    model_config, model_cls = _model_config(cfg, _train_tokenizer(cfg.tiny.vocab_size))
    torch.manual_seed(0)
    model = model_cls(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    params = list(model.parameters())
    measured = {"weights": sum(p.numel() * p.element_size() for p in params),
                "gradients": sum(p.grad.numel() * p.grad.element_size() for p in params),
                "optimizer": sum(t.numel() * t.element_size() for state in optimizer.state.values()
                                 for key, t in state.items() if key != "step")}
    estimate = training_state_bytes(sizes(cfg).num_params, "float32")
    for part in measured:
        assert estimate[part] == pytest.approx(measured[part], rel=0.03), part
    assert sum(estimate.values()) == pytest.approx(sum(measured.values()), rel=0.03)


def test_a_plan_over_real_data_needs_no_data_and_counts_the_mix():
    """data=care_mix trains on everything (train_size unset): the plan takes the mix's ~49.3K prompts
    minus the hold-out, without loading it; the recipe's 384 updates of 128 prompts are one epoch."""
    job = plan_job(composed("backbone=qwen2_5_vl_7b", "data=care_mix"), 8)
    assert job["train_prompts"] == 49_300 - 256
    assert job["optimizer_steps_per_epoch"] == 384 and job["epochs"] == 1.0
