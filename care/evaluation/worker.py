"""Evaluate a saved policy in a child process: the vLLM path (and `eval.isolate=true` for HF).

A training job cannot start a vLLM engine inside its own ranks: FSDP state, the trainer's CUDA
caches and the job's process group (which vLLM would try to join) are all there. So each rank
writes its share of the prompts (an Arrow dataset, images embedded; nothing pickled) and a spec
file, starts `python -m care.evaluation.worker SPEC` on its own GPU(s) with the distributed
environment removed, and reads back the samples. The child builds the engine fresh with the
protocol's own settings (`eval.*`, the backbone's pixel caps), so the evaluated lengths and
sampling never depend on the rollout engine's.

    python -m care.evaluation.worker SPEC.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from care.config import Config
from care.data.schema import Record

# what torch.distributed, accelerate and submitit read to join a job: the child is a job of its own
DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                   "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_FSDP",
                   "ACCELERATE_USE_DEEPSPEED", "SUBMITIT_EXECUTOR")


def save_records(records: list[Record], directory: Path) -> None:
    """Records as an Arrow dataset (images as PNG bytes, `meta` as JSON text): safe to read back."""
    from datasets import Dataset, Image, List

    rows = [{**asdict(r), "meta": json.dumps(r.meta)} for r in records]
    if not rows:
        directory.mkdir(parents=True, exist_ok=True)
        return
    Dataset.from_list(rows).cast_column("images", List(Image())).save_to_disk(str(directory))


def load_records(directory: Path) -> list[Record]:
    from datasets import load_from_disk

    if not (directory / "dataset_info.json").exists():
        return []
    return [Record(**{**row, "meta": json.loads(row["meta"])}) for row in load_from_disk(str(directory))]


def child_gpus(first: int, count: int) -> str | None:
    """CUDA_VISIBLE_DEVICES for a child using `count` GPUs from this node's `first`; None without GPUs."""
    import torch

    if not torch.cuda.is_available():
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    chosen = devices[first:first + count]
    if len(chosen) < count:
        raise ValueError(f"eval.vllm_tensor_parallel_size={count} needs GPUs {first}..{first + count - 1} of this "
                         f"node, which has {len(devices)}")
    return ",".join(chosen)


def run_child(cfg: Config, source: str, benchmarks: dict[str, list[Record]], seeds: list[int],
              gpus: str | None) -> dict[tuple[str, int], list[dict]]:
    """This rank's samples {(benchmark, seed): samples}, made by a fresh process on `gpus`."""
    from care.evaluation.protocol import read_samples

    cache_dir = Path(cfg.cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)  # task=eval on a checkpoint may be its first use
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".eval-child-") as scratch:
        scratch = Path(scratch)
        for name, records in benchmarks.items():
            save_records(records, scratch / "records" / name)
        spec = {"config": asdict(cfg), "source": source, "benchmarks": list(benchmarks), "seeds": seeds,
                "dir": str(scratch)}
        (scratch / "spec.json").write_text(json.dumps(spec))
        env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
        done = subprocess.run([sys.executable, "-m", "care.evaluation.worker", str(scratch / "spec.json")], env=env)
        if done.returncode != 0:
            raise RuntimeError(f"the evaluation child process for {source} exited with {done.returncode} "
                               f"(eval.engine={cfg.eval.engine}); its output is above")
        return {(name, seed): read_samples(scratch / "samples" / f"{name}-seed{seed}.jsonl")
                for name in benchmarks for seed in seeds}


def main(spec_path: str) -> None:
    import torch

    from care.config import config_from_dict
    from care.evaluation.protocol import load_engine, sample, write_samples

    spec = json.loads(Path(spec_path).read_text())
    cfg = config_from_dict(spec["config"])
    torch.set_num_threads(cfg.threads)  # the job's share of the machine's cores (HF on CPU)
    scratch = Path(spec["dir"])
    benchmarks = {name: load_records(scratch / "records" / name) for name in spec["benchmarks"]}
    max_images = max((len(r.images) for records in benchmarks.values() for r in records), default=1)
    model, processor = load_engine(cfg, spec["source"], max_images)
    for seed in spec["seeds"]:
        for name, records in benchmarks.items():
            samples = sample(model, processor, records, cfg.eval, seed=seed, benchmark=name) if records else []
            write_samples(scratch / "samples" / f"{name}-seed{seed}.jsonl", samples)


if __name__ == "__main__":
    main(*sys.argv[1:])
