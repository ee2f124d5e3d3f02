"""The before/after check of a training run: shared before-RL scores, the evaluation split over a
job's processes, vLLM in a child process per engine, and a requeue after RL that only evaluates.

vLLM itself cannot run here (no GPU, not installed): tests/fake_vllm stands in for it in the child
processes, so what is checked is everything around the engine — who starts it, on which GPUs and
environment, with which prompts, and how the samples come back.
"""

import json
import socket

import pytest
import torch.multiprocessing as mp

from tests.test_eval_harness import fake_vllm, read_calls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ids(path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_two_process_job_evaluates_with_one_vllm_engine_per_process(tmp_path, monkeypatch):
    from care.config import BackboneConfig
    from care.data.synthetic import splits_from_config
    from care.evaluation.protocol import prompt_texts
    from care.models import load_processor, resolve_backbone
    from tests.dist_pipeline import run_rank
    from tests.trainer_helpers import tiny_config

    cache_dir, run_dir = tmp_path / "cache", tmp_path / "run"
    backbone = resolve_backbone(BackboneConfig(), cache_dir)  # built once here, not raced by the ranks
    log = fake_vllm(monkeypatch, tmp_path)
    mp.spawn(run_rank, args=(2, _free_port(), str(cache_dir), str(run_dir), "vllm"), nprocs=2, join=True)

    final = json.loads((run_dir / "final.json").read_text())
    assert final["processes"] == 2 and final["global_step"] == 1
    assert json.loads((run_dir / "rl_done.json").read_text())["global_step"] == 1
    calls = read_calls(log)
    inits = [c for c in calls if c["event"] == "init"]
    # before (the backbone: cold_start=none) and after (the saved policy), one engine per process, each
    # a process of its own outside the job's process group
    assert sorted(c["kwargs"]["model"] for c in inits) == sorted([backbone] * 2 + [str(run_dir / "policy")] * 2)
    assert all(c["distributed_env"] == {} for c in inits) and len({c["pid"] for c in inits}) == 4
    # each engine got its share of the held-out slice; together, every record once, in order
    cfg = tiny_config(cache_dir)
    cfg.data.eval_size = 5
    _, held_out = splits_from_config(cfg.data)
    processor = load_processor(backbone, cfg.backbone.family, cfg.backbone.min_pixels, cfg.backbone.max_pixels)
    by_engine = {}
    for call in calls:
        if call["event"] == "generate":
            by_engine.setdefault(call["pid"], []).append(call)
    pids = [c["pid"] for c in inits]
    expected = prompt_texts(processor, held_out)
    for phase in (pids[:2], pids[2:]):  # the before engines start first, the after ones once RL is done
        rank0, rank1 = sorted((by_engine[pid] for pid in phase), key=lambda calls_of: len(calls_of[0]["prompts"]))
        for seed in (0, 1):  # rank 0 holds records 0-1, rank 1 records 2-4
            assert rank0[seed]["prompts"] + rank1[seed]["prompts"] == expected
            assert rank0[seed]["params"]["seed"] == rank1[seed]["params"]["seed"] == seed
    for tag in ("before", "after"):
        for seed in (0, 1):
            assert _ids(run_dir / "eval" / f"{tag}-synthetic-seed{seed}.jsonl") == [r.id for r in held_out]
    assert final["before"]["n"] == final["after"]["n"] == 5
    assert final["eval_protocol"]["engine"] == "vllm"


def test_hf_in_a_child_process_scores_exactly_as_in_the_job(tmp_path, cache_dir):
    """eval.isolate=true: the same records, batches and greedy decoding in a fresh process give the
    same samples as the job's own process (the child path changes where, not what)."""
    from care.config import Config, EvalConfig, EvalPaths
    from care.evaluation.harness import run_eval
    from care.tracking import RunFiles
    from tests.test_eval_harness import ROOT

    paths = EvalPaths(mmmu=str(ROOT / "tests/fixtures/mmmu"), mathvista=str(ROOT / "tests/fixtures/mathvista"))
    results = {}
    for isolate in (False, True):
        cfg = Config(task="eval", cache_dir=str(cache_dir),
                     eval=EvalConfig(benchmarks=["mmmu", "mathvista"], paths=paths, do_sample=False,
                                     max_new_tokens=12, isolate=isolate))
        run_eval(cfg, RunFiles(tmp_path / str(isolate)))
        results[isolate] = {name: (tmp_path / str(isolate) / "eval" / f"{name}-seed0.jsonl").read_text()
                            for name in ("mmmu", "mathvista")}
    assert results[True] == results[False]
    assert all(text.count("\n") >= 3 for text in results[True].values())
