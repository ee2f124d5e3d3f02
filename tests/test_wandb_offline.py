"""W&B for real: a toy run mirrored with WANDB_MODE=offline (a real wandb.init), its offline run
directory read back by the analysis and compared with the run directory it mirrors."""

import json
import math
import shutil
from pathlib import Path

import pytest

from analysis.collect import collect
from analysis.wandb_offline import OfflineApi, payloads
from analysis.wandb_source import collect_from_wandb

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def offline_run(tiny_run):
    """tests/conftest.py's tiny run, made with WANDB_MODE=offline: its W&B run sits in its run directory."""
    run_dir, _ = tiny_run
    files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, "the run wrote no offline W&B run into its run directory"
    return run_dir, files[0]


def test_the_offline_run_reads_back_as_the_run_directory_it_mirrors(offline_run):
    run_dir, _ = offline_run
    runs, curves, problems = collect([run_dir], quiet=True)
    w_runs, w_curves, w_problems = collect_from_wandb("local/care", api=OfflineApi(run_dir), quiet=True)
    assert len(runs) == len(w_runs) == 1 and problems.empty and w_problems.empty
    mine, mirrored = runs.iloc[0], w_runs.iloc[0]
    assert mirrored["status"] == "finished"
    assert mirrored["run_key"] == mine["run_key"] and mirrored["sweep"] == mine["sweep"]
    score_columns = [c for c in runs.columns if c.startswith("after")]
    assert score_columns
    for column in score_columns + [c for c in runs.columns if c.startswith("choice")]:
        assert mirrored[column] == pytest.approx(mine[column]) if isinstance(mine[column], float) \
            else mirrored[column] == mine[column], column
    # every logged step and value, as metrics.jsonl has it
    assert sorted(w_curves["global_step"]) == sorted(curves["global_step"])
    for metric in ("train/reward", "train/accuracy"):
        want = curves.set_index("global_step")[metric].sort_index()
        got = w_curves.set_index("global_step")[metric].sort_index()
        assert list(got.index) == list(want.index)
        assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(got, want, strict=True)), metric


def test_a_run_killed_mid_record_reads_as_unfinished_with_its_earlier_rows(offline_run, tmp_path):
    _, record_file = offline_run
    whole = list(payloads(record_file))
    killed = tmp_path / "offline-run-killed" / record_file.name
    killed.parent.mkdir()
    data = record_file.read_bytes()
    killed.write_bytes(data[: len(data) - 40])  # the last records cut, the way a SIGKILL leaves them
    torn = list(payloads(killed))
    assert 0 < len(torn) < len(whole) and torn == whole[: len(torn)]
    [run] = OfflineApi(tmp_path).runs("local/care")
    assert run.state == "running"
    runs, _, _ = collect_from_wandb("local/care", api=OfflineApi(tmp_path), quiet=True)
    assert runs.iloc[0]["status"] == "unfinished"


def test_a_file_that_is_not_a_wandb_run_is_refused_by_name(tmp_path):
    bad = tmp_path / "run-x.wandb"
    bad.write_bytes(b"not a record log")
    with pytest.raises(ValueError, match="run-x.wandb"):
        list(payloads(bad))
    with pytest.raises(FileNotFoundError, match="missing"):
        OfflineApi(tmp_path / "missing")


def test_copying_the_offline_folder_elsewhere_keeps_it_readable(offline_run, tmp_path):
    """What a user does on a cluster without internet: copy wandb/ off the cluster, collect there."""
    run_dir, _ = offline_run
    shutil.copytree(run_dir / "wandb", tmp_path / "wandb")
    [run] = OfflineApi(tmp_path).runs("local/care")
    assert run.state == "finished"
    assert run.config["run_key"] == json.loads((run_dir / "run.json").read_text())["run_key"]
    assert any("train/reward" in row for row in run.scan_history())


def test_collect_cli_reads_offline_runs(offline_run, tmp_path, capsys):
    import pandas as pd

    from analysis.collect import main as collect_main

    run_dir, _ = offline_run
    assert collect_main(["--from-wandb-offline", str(run_dir), "--out", str(tmp_path / "out")]) == 0
    assert "1 runs {'finished': 1}" in capsys.readouterr().out
    runs = pd.read_parquet(tmp_path / "out" / "runs.parquet")
    assert runs.iloc[0]["run_key"] == json.loads((run_dir / "run.json").read_text())["run_key"]
