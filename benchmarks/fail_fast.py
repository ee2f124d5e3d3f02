"""How long the "fails at once" paths take: a missing real backbone or dataset, offline.

The tests check these paths clock-free (no host-name lookup or connection is attempted, see
tests/no_network.py); this script measures what that buys. Cases, all with HF_HUB_OFFLINE=1:
- `run.py backbone=qwen2_5_vl_7b rollout=hf` with an empty HF_HOME: the whole process, start-up included,
  until it exits 2 naming backbone.path (hub retries alone would add ~50 s);
- `resolve_backbone` for an uncached hub id, in process;
- `load_records` for each dataset whose local copy is missing (virl39k, care_mix, mmmu, mathvista);
- `load_records` for hub datasets missing from the cache (mmmu, geometry3k with a made-up id).

Run: python benchmarks/fail_fast.py. Prints one JSON line: seconds per case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return round(time.perf_counter() - start, 3)


def expect_failure(fn, error: type[Exception]):
    def call():
        try:
            fn()
        except error:
            return
        raise AssertionError(f"{fn} did not raise {error.__name__}")
    return call


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT))
    import datasets  # noqa: F401  (its import, a second or two, is not the failure path)

    from care.config import BackboneConfig
    from care.data.loading import DatasetUnavailable, load_records
    from care.models import BackboneUnavailable, resolve_backbone

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "HF_HOME": str(Path(scratch) / "hf")}

        def run_py():
            result = subprocess.run([sys.executable, "run.py", "backbone=qwen2_5_vl_7b", "rollout=hf",
                                     f"hydra.run.dir={scratch}/run"], cwd=ROOT, env=env, capture_output=True,
                                    text=True, timeout=600)
            if result.returncode != 2 or "backbone.path" not in result.stderr:
                raise AssertionError(f"run.py exited {result.returncode}: {result.stderr[-500:]}")
        figures["run_py_backbone_offline_s"] = seconds(run_py)

        backbone = BackboneConfig(name="qwen2_5_vl_7b", hub_id="care-tests/no-such-backbone", tiny=None)
        figures["resolve_backbone_offline_s"] = seconds(
            expect_failure(lambda: resolve_backbone(backbone, scratch), BackboneUnavailable))
        for name in ("virl39k", "care_mix", "mmmu", "mathvista"):
            figures[f"missing_path_{name}_s"] = seconds(expect_failure(
                lambda name=name: load_records(name, path=Path(scratch) / "nowhere"), DatasetUnavailable))
        for name, hub_id in (("mmmu", None), ("geometry3k", "care-tests/no-such-dataset")):
            figures[f"missing_hub_{name}_offline_s"] = seconds(expect_failure(
                lambda name=name, hub_id=hub_id: load_records(name, hub_id=hub_id), DatasetUnavailable))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
