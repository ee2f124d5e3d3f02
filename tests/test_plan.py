"""task=plan: the recipe's jobs, what fits which GPU in memory and in time, a sweep's shared phases counted once,
the hand-computed figures behind it, and the estimate vs torch on the tiny backbone."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from care.config import BackboneConfig
from care.plan import (
    GIB,
    GPUS,
    SAVE_TOTAL_LIMIT,
    TimeLimit,
    check_fits,
    decoder_params,
    describe,
    launcher_gpus,
    launcher_resources,
    launcher_time_limit,
    layer_recompute_bytes,
    lm_head_bytes,
    plan_cold_start,
    plan_job,
    plan_sweep,
    sizes,
    training_state_bytes,
)
from run import to_config

ROOT = Path(__file__).resolve().parents[1]
REAL = {  # text decoder shapes from the hub config.json files: (tied embeddings, qkv bias)
    "qwen2_5_vl_3b": (True, True), "qwen2_5_vl_7b": (False, True), "qwen3_vl_8b": (False, False)}
P7 = 8_292_166_656  # Qwen2.5-VL-7B's parameters (conf/backbone/qwen2_5_vl_7b.yaml)
SLURM = {"timeout_min": 240, "max_num_timeout": 3, "gpus_per_node": 8, "nodes": 1,  # conf/cluster/slurm.yaml's shape
         "per_backbone": {"qwen2_5_vl_3b": {"gpus_per_node": 4}}}


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=["task=plan", *overrides]))


def trained(*overrides: str):
    """A job's config as task=plan sees it: composed as a plan, planned as the training run it stands for."""
    cfg = composed(*overrides)
    cfg.task = "train"
    return cfg


def run_plan(*overrides: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "task=plan", *overrides], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def test_gpu_table():
    """One GPU type gives memory, FLOP/s and decode rate (care/plan/figures.py has each figure's source)."""
    assert {name: (g.memory_gib, g.bf16_flops, g.decode_tokens_per_s_7b) for name, g in GPUS.items()} == {
        "a100": (79.2, 312e12, 2_500), "h100": (79.2, 989e12, 5_000), "h200": (139.8, 989e12, 7_000)}
    job = plan_job(composed("backbone=qwen2_5_vl_7b", "cluster.gpu=h200"), 8)
    assert (job["gpu"], job["gpu_mem_gb"], job["assumed"]["peak_flops"]) == ("h200", 139.8, 989e12)
    assert plan_job(composed("backbone=qwen2_5_vl_7b", "cluster.gpu_mem_gb=40"), 8)["gpu_mem_gb"] == 40  # explicit wins


def test_the_7b_recipe_memory_term_by_term():
    """Qwen2.5-VL-7B, paper recipe, FSDP over 8 H100s: every term from its hand formula (GiB, 2 decimals)."""
    job = plan_job(composed("backbone=qwen2_5_vl_7b"), 8)
    m = job["memory_gib"]
    shard = P7 * 4 / 8  # fp32 weights over 8 GPUs
    root = 152_064 * 3_584 * 2 + 3_584 + (676_000_000 - 32 * 19_702_200)  # embeddings + lm_head + norm + merger
    layer = (P7 - 676_000_000 - 152_064 * 3_584 * 2 - 3_584) // 28
    tokens = 4 * (2_048 + 2_048)  # micro-batch 4 x (prompt + response limits)
    expected = {
        "weights": shard, "gradients": shard, "optimizer": 2 * shard, "reference": shard,
        "fsdp_root": 2 * 2 * root, "fsdp_layers": 4 * 2 * layer,
        "activations": tokens * 3_584 * 2 * 28,
        "recompute": tokens * (8 * 3_584 + 9 * 2 * 3_584 + 6 * 2 * 18_944),  # SwiGLU: I = 5.3 x hidden
        "vision_activations": 4 * 4 * 2_048 * 1_280 * 2 * 32,  # 2,048 image tokens = 8,192 patches a sequence
        "vision_recompute": 4 * 4 * 2_048 * layer_recompute_bytes(1_280, 3_420, True, 2),
        "logits": 4_096 * 32_768 * 2 + 8_192 * 3_584 * (2 + 6) + 152_064 * 3_584 * 6,  # TRL's fused LM head
        "pixel_values": 512 * 8 / 8 * 8_192 * 3 * 2 * 14 * 14 * 4,  # the rollout buffer, fp32
        "vllm": 0.35 * 79.2 * GIB, "cuda_context": 2 * GIB,
    }
    for key, value in expected.items():
        assert m[key] == round(value / GIB, 2), key
    assert (m["fsdp_root"], m["pixel_values"], m["recompute"], m["logits"]) == (4.23, 18.38, 4.89, 3.51)
    assert m["generation_phase"] == round((4 * shard + 2 * GIB + expected["pixel_values"] + expected["vllm"]) / GIB, 2)
    assert m["generation_phase"] == m["peak"] == job["est_gpu_mem_gb"] == job["memory_gb"]["peak"] == 63.54
    assert job["memory_gb"] == {"training": 56.1, "generation": 63.54, "scoring": 59.13, "peak": 63.54}


def test_the_recipe_fits_7b_and_8b_on_the_default_gpu_and_says_what_3b_on_4_needs():
    """At the recipe's 0.35 vLLM share (the reference's 0.6 needs 83.3 / 89.9 GiB) 7B and 8B fit 80 GB H100s; 3B on
    4 GPUs holds twice 36.75 GiB of rollout pixels while scoring and is told what would fit it."""
    seven, eight = (plan_job(composed(f"backbone={b}"), 8) for b in ("qwen2_5_vl_7b", "qwen3_vl_8b"))
    assert (seven["fits"], seven["est_gpu_mem_gb"], seven["gpu"]) == (True, 63.54, "h100")
    assert (eight["fits"], eight["est_gpu_mem_gb"], eight["memory_gib"]["pixel_values"]) == (True, 71.05, 24.0)
    for job in (seven, eight):
        assert job["est_gpu_mem_gb"] < 0.95 * 79.2 and job["to_fit"] == []
    reference = plan_job(composed("backbone=qwen3_vl_8b", "rollout.vllm_gpu_memory_utilization=0.6"), 8)
    assert not reference["fits"] and reference["memory_gb"]["generation"] == 89.85  # 42.33 without vLLM: (79.2 - 42.33) / 79.2
    assert any("rollout.vllm_gpu_memory_utilization <= 0.46" in line for line in reference["to_fit"])
    three = plan_job(composed("backbone=qwen2_5_vl_3b"), 4)
    assert not three["fits"] and three["memory_gib"]["pixel_values"] == 36.75
    assert three["memory_gb"]["scoring"] == 91.56 and any("gpus_per_node" in line for line in three["to_fit"])
    assert plan_job(composed("backbone=qwen2_5_vl_3b"), 8)["fits"]


def test_gpu_type_changes_hours_and_fit():
    """A100 is 989/312 slower at the same MFU and half the decode; H200's memory fits 3B on 4 GPUs."""
    a100, h100, h200 = (plan_job(composed("backbone=qwen2_5_vl_7b", f"cluster.gpu={g}"), 8) for g in GPUS)
    assert h100["wall_h"]["training"] == 11.72 and a100["wall_h"]["training"] == round(11.7225 * 989 / 312, 2)
    decode = 96 * 4_096 * 1_024 / (8 * 7e9 / P7) / 3600  # hours at 1 token/s per GPU for a 7B policy
    assert [job["wall_h"]["generation"] for job in (a100, h100, h200)] == [round(decode / r, 2) for r in (2500, 5000, 7000)]
    assert a100["gpu_hours"] > h100["gpu_hours"] > h200["gpu_hours"]
    assert [plan_job(composed("backbone=qwen2_5_vl_3b", f"cluster.gpu={g}"), 4)["fits"] for g in GPUS] == \
        [False, False, True]


def test_wall_hours_and_gpu_hours_by_hand():
    """7B on 8 H100s, 384 steps = 96 rollout batches of 4,096: decode 96 x 4,096 x 1,024 tokens at 5,000 x 7e9/P
    tokens/s a GPU; train 96 x 4,096 x 2,048 tokens x 10 P FLOPs at 0.2 x 989 TFLOP/s a GPU; 19 saves of 12 B/param
    at 2 GB/s and the 4 B/param policy; the after-RL check's 62,980 generations x 1,024 tokens."""
    job = plan_job(composed("backbone=qwen2_5_vl_7b", "eval=paper6"), 8, time_limit=TimeLimit(240, 5))
    rate = 5_000 * 7e9 / P7
    generation = 96 * 4_096 * 1_024 / (rate * 8) / 3600
    training = 96 * 4_096 * 2_048 * 10 * P7 / (0.2 * 989e12 * 8) / 3600
    saves = (19 * P7 * 12 + P7 * 4) / 2e9 / 3600
    after = 62_980 * 1_024 / rate / 8 / 3600
    assert job["wall_h"] == {"generation": round(generation, 2), "training": round(training, 2), "saves": round(saves, 2),
                             "after_eval": round(after, 2), "total": round(generation + training + saves + after, 2)}
    assert job["wall_h"]["total"] == 15.83 and job["gpu_hours"] == round(8 * (generation + training + saves), 1) == 122.4
    lost = (20 * (generation + training) / 384 * 3600 + 2 * P7 * 12 / 2e9) / 3600  # one save interval + a save + a resume
    assert job["lost_per_requeue_h"] == round(lost, 2) == 0.81
    assert (job["time_limit_h"], job["requeues"], job["fits_time"]) == (24.0, 4, True)  # 4 h runs: 4 + 4 x 3.19 >= 15.83
    assert job["disk_gb"] == {"checkpoint": 99.5, "checkpoints_kept": 2, "checkpoints_peak": 298.5, "policy": 33.2}


def test_dynamic_sampling_prices_each_extra_round_by_hand():
    """DAPO's extra round: the same decoding as a round, plus the old-policy forward (2 P FLOPs a token: 4
    updates per rollout batch); no reference forward (no KL). The one-round hours are unchanged."""
    dapo = plan_job(composed("backbone=qwen2_5_vl_7b", "algorithm=dapo"), 8)
    gspo = plan_job(composed("backbone=qwen2_5_vl_7b", "algorithm=gspo"), 8)
    rate = 5_000 * 7e9 / P7
    extra = 96 * 4_096 * 1_024 / (rate * 8) / 3600 + 96 * 4_096 * 2_048 * 2 * P7 / (0.2 * 989e12 * 8) / 3600
    assert dapo["dynamic_sampling"] == {"max_rounds": 10, "wall_h_per_extra_round": round(extra, 2)}
    assert dapo["wall_h"] == gspo["wall_h"] and "dynamic_sampling" not in gspo
    assert "each extra round adds ~5.66 wall hours" in describe(dapo)


def test_a_job_whose_time_limit_is_too_short_is_refused_with_the_figures():
    cfg = composed("backbone=qwen2_5_vl_7b", "cluster.gpu=a100")
    with pytest.raises(ValueError) as err:
        check_fits(cfg, 8, TimeLimit(240, 3))
    text = str(err.value)
    for figure in ("qwen2_5_vl_7b RL job on 8 a100 GPUs", "needs 44.05 h of wall time", "training 37.16",
                   "rl.save_steps=20 of rl.steps=384", "timeout_min=240", "max_num_timeout=3 + 1) = 16.0 h"):
        assert figure in text, figure
    check_fits(cfg, 8)  # no SLURM time limit: it fits in memory
    check_fits(cfg, 8, TimeLimit(600, 5))  # 60 h
    check_fits(composed("backbone=qwen2_5_vl_7b", "cluster.gpu=a100", "cluster.require_fit=false"), 8, TimeLimit(240, 3))
    with pytest.raises(ValueError, match=r"a requeue loses up to 15\.06 h \(rl\.save_steps=384 of rl\.steps=384"):
        check_fits(composed("backbone=qwen2_5_vl_7b", "rl.save_steps=384"), 8, TimeLimit(240, 3))
    with pytest.raises(ValueError, match=r"cold start on 8 a100 GPUs .*\(cold_start\.save_steps=500 of cold_start "
                                         r"steps=12500 .*timeout_min=60 x \(max_num_timeout=0 \+ 1\) = 1\.0 h"):
        check_fits(trained("backbone=qwen2_5_vl_7b", "cold_start=sft", "cluster.gpu=a100"), 8, TimeLimit(60, 0),
                   phase="cold_start")


def test_check_fits_names_the_memory_figures():
    check_fits(composed("backbone=qwen2_5_vl_7b"))  # FSDP over 8 GPUs: fits
    with pytest.raises(ValueError, match=r"qwen2_5_vl_7b RL job on 8 h100 GPUs with parallel=ddp needs ~\d+\.\d+ GiB "
                                         r"per GPU > 79\.2 GiB \(cluster\.gpu=h100: H100 80GB SXM, cluster\.gpu_mem_gb "
                                         r"unset; weights 30\.89, gradients 30\.89, optimizer 61\.78"):
        check_fits(composed("backbone=qwen2_5_vl_7b", "parallel=ddp"))
    check_fits(composed("backbone=qwen2_5_vl_7b", "parallel=ddp", "cluster.gpu_mem_gb=300",  # explicit keys win
                        "rollout.vllm_gpu_memory_utilization=0.1"))
    check_fits(composed("backbone=qwen2_5_vl_7b", "parallel=ddp", "cluster.require_fit=false"))


def test_launcher_resources_and_time_limit():
    """A phase job's resources: the launcher's own, per_backbone over them, phases.<phase> over both; the time
    limit is timeout_min x (max_num_timeout + 1)."""
    launcher = {**SLURM, "per_backbone": {"qwen2_5_vl_3b": {"gpus_per_node": 4, "timeout_min": 600},
                                          "tiny_qwen2_5_vl": {"gpus_per_node": 0}},
                "phases": {"cold_start": {"timeout_min": 480, "gpus_per_node": 2}, "eval": {"timeout_min": None}}}
    assert [launcher_gpus(launcher, b) for b in ("qwen2_5_vl_3b", "qwen2_5_vl_7b", "tiny_qwen2_5_vl")] == [4, 8, 0]
    assert launcher_gpus({**launcher, "nodes": 2}, "qwen2_5_vl_7b") == 16
    assert launcher_gpus(launcher, "qwen2_5_vl_3b", "cold_start") == 2 and launcher_gpus(launcher, "qwen2_5_vl_3b", "eval") == 4
    assert launcher_gpus({"timeout_min": 60}, "qwen2_5_vl_7b") is None  # a launcher without GPU settings
    assert launcher_time_limit(launcher, "qwen2_5_vl_7b") == TimeLimit(240, 3) and TimeLimit(240, 3).hours == 16.0
    assert launcher_time_limit(launcher, "qwen2_5_vl_3b").hours == 40.0
    assert launcher_time_limit(launcher, "qwen2_5_vl_3b", "cold_start") == TimeLimit(480, 3)
    assert launcher_time_limit(launcher, "qwen2_5_vl_3b", "eval") == TimeLimit(600, 3)  # None keeps per_backbone's
    assert launcher_resources(launcher, "qwen2_5_vl_3b", "cold_start")["gpus_per_node"] == 2
    assert launcher_time_limit({"gpus_per_node": 8}, "qwen2_5_vl_7b") is None and launcher_time_limit(None, "x") is None


def test_shared_phases_are_planned_once_and_totals_add_up():
    """Two 7B runs and one 8B run on Vision-R1-cold: two cold starts, two before-RL evaluations, three after-RL ones,
    and a Base task=eval job; each counted once in the totals."""
    entries = [(trained(f"backbone={b}", f"algorithm={a}", f"seed={s}", "cold_start=sft", "eval=paper6",
                        "data=care_mix"), [], SLURM)
               for b, a, s in (("qwen2_5_vl_7b", "care", 0), ("qwen2_5_vl_7b", "grpo", 1), ("qwen3_vl_8b", "care", 0))]
    base = composed("backbone=qwen2_5_vl_7b", "eval=paper6", "data=care_mix")
    base.task = "eval"
    planned = plan_sweep([*entries, (base, ["task=eval"], SLURM)])
    assert [job["algorithm"] for job in planned["jobs"]] == ["care", "grpo", "care"]
    assert [(c["backbone"], c["jobs"], c["samples"], c["steps"]) for c in planned["cold_starts"]] == [
        ("qwen2_5_vl_7b", [0, 1], 200_000, 12_500), ("qwen3_vl_8b", [2], 200_000, 12_500)]
    assert [(e["phase"], e["backbone"], e["jobs"]) for e in planned["evals"]] == [
        ("before", "qwen2_5_vl_7b", [0, 1]), ("before", "qwen3_vl_8b", [2]), ("after", "qwen2_5_vl_7b", [0]),
        ("after", "qwen2_5_vl_7b", [1]), ("after", "qwen3_vl_8b", [2]), ("base", "qwen2_5_vl_7b", [])]
    assert planned["evals"][-1]["generations"] == 12_340 * 5  # task=eval: the six benchmarks, no held-out slice
    assert planned["evals"][0]["generations"] == (12_340 + 256) * 5
    t = planned["totals"]
    assert t["rl"] == pytest.approx(sum(j["gpu_hours"] for j in planned["jobs"]), abs=0.051)
    assert t["cold_start"] == pytest.approx(sum(c["gpu_hours"] for c in planned["cold_starts"]), abs=0.051)
    assert t["eval"] == pytest.approx(sum(e["gpu_hours"] for e in planned["evals"]), abs=0.051)
    assert t["gpu_hours"] == pytest.approx(t["rl"] + t["cold_start"] + t["eval"], abs=0.051)
    assert planned["disk_gb"]["kept"] == pytest.approx(3 * 33.2 + 2 * 35.1)  # 3 trained policies + 2 cold starts
    assert planned["warnings"] == []  # real data, real cold start


def test_the_vision_r1_cold_start_by_hand():
    """200K samples x 2 epochs / batch 32 = 12,500 steps; 6 P FLOPs per token at 2,048 mean tokens (assumed)."""
    entry = plan_cold_start(trained("backbone=qwen2_5_vl_7b", "cold_start=sft"), 8, TimeLimit(480, 3))
    training = 200_000 * 2 * 2_048 * 6 * P7 / (0.2 * 989e12 * 8) / 3600
    saves = (25 * P7 * 12 + P7 * 4) / 2e9 / 3600  # cold_start.save_steps=500
    assert (entry["steps"], entry["micro_batch_size"], entry["longest_tokens"]) == (12_500, 1, 16_384)
    assert entry["wall_h"] == {"training": round(training, 2), "saves": round(saves, 2),
                               "total": round(training + saves, 2)}
    assert entry["gpu_hours"] == round(8 * (training + saves), 1) and entry["fits"] and entry["fits_time"]
    assert entry["memory_gib"]["reference"] == 0 and entry["memory_gib"]["logits"] == 3.73  # 16,384 tokens scored


def test_task_plan_of_a_whole_sweep_exits_0_and_adds_up(tmp_path):
    """sweep=main on SLURM: 60 RL jobs in sweep order, one cold start and one before-RL check per backbone (the
    synthetic cold start, warned about), an after-RL check per job; totals are the sum of the entries."""
    result, planned = run_plan("sweep=main", "cluster=slurm", tmp_path=tmp_path)
    jobs = planned["jobs"]
    assert len(jobs) == 60 and {job["algorithm"] for job in jobs} == {"grpo", "dapo", "gspo", "care"}
    assert {(job["backbone"], job["gpus"]) for job in jobs} == {
        ("qwen2_5_vl_7b", 8), ("qwen3_vl_8b", 8), ("qwen2_5_vl_3b", 8)}  # conf/cluster/slurm.yaml per_backbone
    assert all(job["fits"] for job in jobs)  # 3B on 4 GPUs would not: hence 8 in conf/cluster/slurm.yaml
    assert all(job["fits_time"] and job["time_limit_h"] == 24.0 for job in jobs)
    assert [len(c["jobs"]) for c in planned["cold_starts"]] == [20, 20, 20]
    assert [e["phase"] for e in planned["evals"]] == ["before"] * 3 + ["after"] * 60
    t = planned["totals"]
    assert t["rl"] == pytest.approx(sum(job["gpu_hours"] for job in jobs), abs=0.051)
    assert t["gpu_hours"] == pytest.approx(t["rl"] + t["cold_start"] + t["eval"], abs=0.051)
    assert t["eval"] == pytest.approx(sum(e["gpu_hours"] for e in planned["evals"]), abs=0.051)
    assert "warning: qwen2_5_vl_7b planned on the synthetic task (data=synthetic)" in result.stdout
    assert not (tmp_path / "multirun").exists() and "run_dir:" not in result.stdout


def test_task_plan_on_a100_exits_0_and_says_it_does_not_fit_in_time(tmp_path):
    result, planned = run_plan("backbone=qwen2_5_vl_7b", "cluster=slurm", "cluster.gpu=a100", tmp_path=tmp_path)
    (job,) = planned["jobs"]
    assert (job["gpu"], job["fits"], job["fits_time"], job["wall_h"]["total"]) == ("a100", True, False, 44.05)
    assert "DOES NOT FIT" in result.stdout and not any(tmp_path.iterdir())


def test_plan_rejects_a_batch_that_does_not_divide(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "task=plan", "backbone=qwen2_5_vl_7b",
                             "rl.micro_batch_size=3"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "rl.micro_batch_size=3" in result.stderr and "cluster.gpus=8" in result.stderr


def test_the_before_after_check_is_priced_from_the_benchmark_sizes():
    """eval=paper6 under the recipe: the six benchmarks' 12,340 prompts (docs/paper_eval.md) and the 256
    held out, 5 seeds each, per phase, on vLLM; eval.limit and greedy decoding shrink it."""
    job = plan_job(composed("backbone=qwen2_5_vl_7b", "eval=paper6"), 8)
    assert job["eval_engine"] == "vllm" and job["eval_generations_per_phase"] == (12_340 + 256) * 5
    hours = job["eval_generations_per_phase"] * 0.5 * 2048 / (5_000 * 7e9 / P7) / 3600
    assert job["eval_gpu_hours_per_phase"] == round(hours, 1) == 4.2
    small = plan_job(composed("backbone=qwen2_5_vl_7b", "eval=paper6", "eval.limit=100", "eval.do_sample=false"), 8)
    assert small["eval_generations_per_phase"] == 7 * 100  # six benchmarks and the held-out slice, one pass


def test_pixel_values_per_image_and_the_lm_head_by_hand():
    """What the HF processor stores: 4 patches a token, 3 x 2 x patch^2 fp32 values; Qwen3-VL at 2,048 tokens is
    48 MiB an image. TRL's fused LM head: a 4,096 x 32,768 tile, fp32 gradients of the scored states and lm_head."""
    from care.plan import pixel_bytes_per_image

    assert pixel_bytes_per_image(composed("backbone=qwen3_vl_8b").backbone, 2048) == 4 * 2048 * 3 * 2 * 16 * 16 * 4
    assert pixel_bytes_per_image(composed("backbone=qwen2_5_vl_7b").backbone, None) == 4 * 5349 * 1176 * 4  # cap only
    assert lm_head_bytes(8192, 152_064, 3584, 2, 2) == 3_773_300_736
    assert lm_head_bytes(16, 512, 128, 4, 4, backward=False) == 16 * 32_768 * 4 + 16 * 128 * 4
    assert layer_recompute_bytes(3584, 18944, True, 2) == 320_512  # ~89 x hidden (Korthikanti's GELU layer: 34)


def test_save_total_limit_is_the_trainers():
    """The plan's checkpoints on disk come from the trainers' own setting."""
    for path in ("care/trainer/build.py", "care/coldstart.py"):
        assert re.findall(r"save_total_limit=(\d+)", (ROOT / path).read_text()) == [str(SAVE_TOTAL_LIMIT)], path


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
    (Geometry3K 2,101 + ViRL39K 38,870 + ChartQA's human-written train + val 8,358) minus the hold-out,
    without loading it; the recipe's 384 updates of 128 prompts are one epoch."""
    job = plan_job(composed("backbone=qwen2_5_vl_7b", "data=care_mix"), 8)
    assert job["train_prompts"] == 49_329 - 256
    assert job["optimizer_steps_per_epoch"] == 384 and job["epochs"] == 1.0


@pytest.mark.parametrize(("overrides", "rows"), [
    ((), 49_329),  # the default: human-written train + val (issue 25's count after dedupe)
    (("data.chartqa_splits=[train]",), 48_369),  # human train alone (issue 25)
    (("data.chartqa_subset=all", "data.chartqa_splits=[train]"), 69_270),  # the three train splits whole (issue 25)
    (("data.chartqa_subset=augmented",), 2_101 + 38_870 + 20_901 + 960),  # derived: 28,299 - 7,398 and 1,920 - 960
    (("data.chartqa_subset=all",), 69_270 + 1_920),
])
def test_the_plans_prompt_count_follows_the_chartqa_key(overrides, rows):
    job = plan_job(composed("backbone=qwen2_5_vl_7b", "data=care_mix", *overrides), 8)
    assert job["train_prompts"] == rows - 256
    alone = plan_job(composed("backbone=qwen2_5_vl_7b", "data=chartqa", *overrides), 8)
    assert alone["train_prompts"] == rows - 2_101 - 38_870 - 256


def test_a_bad_chartqa_key_fails_at_composition_naming_the_accepted_values():
    with pytest.raises(Exception, match="data.chartqa_subset='machine' is not accepted; choose one of human, "
                                        "augmented, all"):
        composed("data=care_mix", "data.chartqa_subset=machine")
    with pytest.raises(Exception, match="data.chartqa_splits='validation' is not accepted; choose one of train, val, "
                                        "test"):
        composed("data=care_mix", "data.chartqa_splits=[train,validation]")


def test_gpu_calibrate_runs_on_a_cpu(tmp_path):
    """benchmarks/gpu_calibrate.py's CPU smoke run (a real architecture, one layer, a short sequence): every
    measurement runs and the constants it prints for the plan are there and positive."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_calibrate.py"), "--device", "cpu",
                             "--layers", "1", "--tiny-seq", "--backbone", "qwen2_5_vl_3b"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [key for key, value in out.items() if isinstance(value, dict) and "error" in value] == []
    constants = out["constants"]
    assert constants["state_bytes_per_param"] == 16.0 and constants["kv_bytes_per_token_per_layer"] == 1024.0
    assert constants["pixel_values_bytes_per_image"] == 4 * 16 * 1176 * 4  # 16 image tokens, patch 14, fp32
    for key in ("recompute_bytes_per_token", "forward_bytes_per_token", "vision_recompute_bytes_per_patch",
                "lm_head_gib", "scoring_bytes_per_token", "hf_decode_tokens_per_s", "achieved_tflops", "context_gib"):
        assert constants[key] > 0, key
    assert constants["mfu"] is None  # no GPU peak to divide by
