"""A toy-size training run on real-schema data through run.py (data=care_mix, an SFT cold start on a
Vision-R1-cold-layout file, eval=fixtures), the main sweep over the same through cluster=local, and bad
data refused before any work: exit 2 naming the key and value, no final.json, other runs untouched."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIX = ROOT / "tests" / "fixtures" / "care_mix"
SIX = ("mathvista", "mathverse", "mathvision", "mmmu", "mmmu_pro_standard", "mmmu_pro_vision")
SFT = ("cold_start=sft", "cold_start.path=tests/fixtures/sft/vision_r1_cold")  # relative: the launch directory


def run(run_dir: Path, cache_dir: Path, *overrides: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cold_start = [] if any(o.startswith("cold_start") for o in overrides) else ["cold_start=none"]
    args = [sys.executable, "run.py", "data=care_mix", "eval=fixtures", "scale=toy", *cold_start,
            f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}", *overrides]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mix_run(tmp_path_factory, cache_dir):
    run_dir = tmp_path_factory.mktemp("mix") / "job"
    result = run(run_dir, cache_dir, "data.path=tests/fixtures/care_mix", *SFT)  # relative: the launch directory
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir


def test_the_sft_cold_start_is_what_rl_started_from(mix_run, cache_dir):
    final = json.loads((mix_run / "final.json").read_text())
    assert final["policy_source"].startswith(str(Path(cache_dir).resolve() / "cold_start"))
    assert "-sft-" in Path(final["policy_source"]).name


def test_the_main_sweep_over_real_schema_data_through_cluster_local(tmp_path, cache_dir, mix_run):
    """sweep=main at toy scale, one seed: every method trains on the mix from one shared SFT cold start."""
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "run.py", "sweep=main", "scale=toy", "seed=0", "data=care_mix",
                             "data.path=tests/fixtures/care_mix", *SFT, "eval=fixtures", "cluster=local",
                             f"cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = [json.loads((job / "run.json").read_text()) for job in sorted(sweep.glob("[0-9]*"))]
    finals = [json.loads((job / "final.json").read_text()) for job in sorted(sweep.glob("[0-9]*"))]
    assert sorted(r["choices"]["algorithm"] for r in runs) == ["care", "dapo", "grpo", "gspo"]
    assert all(r["data"]["train_by_source"] == runs[0]["data"]["train_by_source"] for r in runs)
    assert len({f["policy_source"] for f in finals}) == 1  # one cold start, reused by every RL run
    assert finals[0]["policy_source"] == json.loads((mix_run / "final.json").read_text())["policy_source"]
    assert all(set(SIX) < set(f["after"]) for f in finals)
    # the before-RL scores depend only on the cold start and the protocol: evaluated once (by mix_run),
    # every run of the sweep reuses them
    shared = [path for path in (Path(cache_dir) / "eval").glob("before-*/eval_metrics.json")
              if json.loads(path.read_text())["checkpoint"] == finals[0]["policy_source"]]
    assert len(shared) == 1
    assert all(f["before"] == json.loads((mix_run / "final.json").read_text())["before"] for f in finals)
    assert all((job / "eval" / "before-mathvista-seed0.jsonl").read_bytes() ==
               (shared[0].parent / "before-mathvista-seed0.jsonl").read_bytes() for job in sweep.glob("[0-9]*"))


def test_six_benchmarks_and_the_held_out_slice_before_and_after(mix_run):
    final = json.loads((mix_run / "final.json").read_text())
    for phase in ("before", "after"):
        scores = final[phase]
        assert set(scores) == {*SIX, "care_mix", "macro", "macro_std", "n", "seeds"}
        assert scores["macro"] == pytest.approx(sum(scores[name] for name in SIX) / 6)
        for name in (*SIX, "care_mix"):
            assert (mix_run / "eval" / f"{phase}-{name}-seed0.jsonl").is_file()
    samples = [json.loads(line) for line in (mix_run / "eval" / "after-care_mix-seed0.jsonl").read_text().splitlines()]
    assert len(samples) == 16 and {s["source"] for s in samples} <= {"geometry3k", "chartqa", "virl39k"}
    assert final["global_step"] == 3
    assert final["reward"] == {"accuracy_weight": 0.9, "format_weight": 0.1, "extraction": "strict"}
    assert final["eval_protocol"]["extraction"] == "strict"


def test_data_counts_reach_final_and_run_json(mix_run):
    final = json.loads((mix_run / "final.json").read_text())
    run_json = json.loads((mix_run / "run.json").read_text())
    assert final["data"] == run_json["data"]
    data = final["data"]
    assert (data["loaded"], data["duplicates_removed"], data["filtered_overlong"]) == (35, 1, 1)
    assert (data["held_out"], data["train"]) == (16, 17)  # scale=toy holds out 16; its cap of 48 caps nothing
    # ChartQA's human-written rows of train (8) + val (5), the default data.chartqa_subset/_splits; its 8
    # machine-augmented rows are counted apart from the loaded ones, and are not bad rows
    assert data["loaded_by_source"] == {"chartqa": 13, "geometry3k": 12, "virl39k": 10}
    assert data["subset_filtered"] == {"chartqa": 8}
    assert (data["dropped"], data["escaped"]) == ({}, {})
    assert set(data["train_by_source"]) == {"geometry3k", "chartqa", "virl39k"}
    assert sum(data["train_by_source"].values()) == 17
    assert run_json["config"]["data"]["path"] == str(MIX)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.path=/nonexistent/care_mix"], "data.path='/nonexistent/care_mix' does not exist"),
    (["data.path=tests/fixtures/care_mix", "rl.max_prompt_length=8"],
     "34 of 34 prompts are longer than rl.max_prompt_length=8 tokens"),
    (["data.path=tests/fixtures/care_mix", "data.train_size=40"],
     "data.train_size=40 asks for more training prompts than the 17 left"),
])
def test_bad_data_fails_before_any_work(tmp_path, cache_dir, overrides, message):
    neighbour = tmp_path / "other-run"
    neighbour.mkdir()
    (neighbour / "final.json").write_text('{"after": {"macro": 1.0}}')
    run_dir = tmp_path / "job"
    result = run(run_dir, cache_dir, *overrides, timeout=300)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (run_dir / "final.json").exists() and not (run_dir / "run.json").exists()
    assert (neighbour / "final.json").read_text() == '{"after": {"macro": 1.0}}'


def test_a_picture_that_would_break_a_step_is_caught_at_load(tmp_path, cache_dir):
    """A truncated image used to load (header only) and break the training step that decoded it. Now
    the default refuses it before any work, naming file, row and image; a user who accepts drops gets a
    run that trains without that row and records the drop in run.json and final.json."""
    import shutil

    mix = tmp_path / "mix"
    shutil.copytree(MIX, mix)
    picture = sorted((mix / "virl39k" / "images").glob("*.png"))[3]
    picture.write_bytes(picture.read_bytes()[:-40])  # the end of the pixel data is gone
    refused = run(tmp_path / "refused", cache_dir, f"data.path={mix}", timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert re.search(rf"39Krelease.parquet row \d+: image 0 \('images/{picture.name}'\)", refused.stderr), refused.stderr
    assert "its pixels do not decode" in refused.stderr and "data.max_dropped_fraction=0.03" in refused.stderr
    assert not (tmp_path / "refused" / "run.json").exists()
    run_dir = tmp_path / "accepted"
    accepted = run(run_dir, cache_dir, f"data.path={mix}", "data.max_dropped_fraction=0.03", "rl.steps=1",
                   timeout=600)
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    final = json.loads((run_dir / "final.json").read_text())
    assert final["data"]["dropped"] == {"virl39k": {"undecodable_image": 1}}
    assert json.loads((run_dir / "run.json").read_text())["data"]["dropped"] == final["data"]["dropped"]
    counts = final["data"]
    assert counts["loaded"] == 35 == 1 + counts["duplicates_removed"] + counts["filtered_overlong"] + counts["held_out"] + counts["train"]
