"""analysis.collect: finding run dirs, statuses, dedupe by run_key, curves, idempotent parquet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.collect import collect, main, read_collected
from analysis.fake_runs import FIXTURE_SCORES, set_mtime, synthetic_curves, write_run

FIXTURE_RUNS = Path(__file__).parent / "fixtures" / "runs"


def test_finds_nested_sweep_runs_and_flattens_everything(tmp_path):
    sweep = tmp_path / "multirun" / "2026-01-01" / "10-00-00"
    write_run(sweep, "0", seed=0, algorithm="grpo", sweep="main", steps=7, after={"synthetic": 40.0})
    write_run(sweep / "deeper" / "1", "nested", seed=1, algorithm="care", sweep="main", steps=5,
              overrides={"care.k": 2}, after={"synthetic": 55.0}, before={"synthetic": 30.0})
    runs, curves, problems = collect([tmp_path], quiet=True)

    assert len(runs) == 2 and problems.empty
    care = runs[runs["choice.algorithm"] == "care"].iloc[0]
    assert care["sweep"] == "main" and care["status"] == "finished"
    assert care["cfg.care.k"] == 2 and care["cfg.seed"] == 1 and care["cfg.backbone.name"] == "tiny_qwen2_5_vl"
    assert care["after.synthetic"] == 55.0 and care["after.macro"] == 55.0 and care["before.synthetic"] == 30.0
    assert care["final.global_step"] == 5 and care["final.processes"] == 1
    assert care["cfg.wandb.tags"] == "[]"  # lists as JSON text
    assert Path(care["path"]).name == "nested"
    assert list(curves.columns[:2]) == ["run_key", "global_step"]
    assert curves.groupby("run_key").size().sort_values().tolist() == [5, 7]
    expected = synthetic_curves(5, seed=1, algorithm="care", rgr=True, k=2)
    got = curves[curves["run_key"] == care["run_key"]].reset_index(drop=True)
    np.testing.assert_allclose(got["train/accuracy"], expected["train/accuracy"])
    np.testing.assert_allclose(got["care/k_prime_hist/2"], expected["care/k_prime_hist/2"])
    assert got["rgr/attempts"].dtype == np.float64


def test_failed_and_unfinished_runs_are_listed_not_dropped(tmp_path, capsys):
    write_run(tmp_path, "ok", seed=0, sweep="main")
    write_run(tmp_path, "died", seed=1, sweep="main", status="failed")
    write_run(tmp_path, "running", seed=2, sweep="main", status="unfinished")
    runs, _, problems = collect([tmp_path])

    assert sorted(runs["status"]) == ["failed", "finished", "unfinished"]
    assert sorted(problems["status"]) == ["failed", "unfinished"] and problems["kept"].all()
    failed = problems[problems["status"] == "failed"].iloc[0]
    assert failed["detail"] == "RuntimeError: CUDA out of memory" and failed["path"].endswith("died")
    printed = capsys.readouterr().err
    assert "[failed]" in printed and "[unfinished]" in printed and "running" in printed


def test_finished_beats_a_newer_unfinished_attempt(tmp_path):
    done = write_run(tmp_path, "done", seed=0, run_key="aaaaaaaaaaaa", steps=4, after={"synthetic": 61.0})
    retry = write_run(tmp_path, "retry", seed=0, run_key="aaaaaaaaaaaa", steps=2, status="unfinished")
    set_mtime(done / "final.json", 1_000)
    for name in ("run.json", "metrics.jsonl"):
        set_mtime(retry / name, 2_000)
    runs, curves, problems = collect([tmp_path], quiet=True)

    assert len(runs) == 1 and runs.iloc[0]["path"] == str(done.resolve())
    assert runs.iloc[0]["after.synthetic"] == 61.0 and len(curves) == 4  # the winner's curves only
    loser = problems.iloc[0]
    assert loser["status"] == "superseded-unfinished" and not loser["kept"] and "done" in loser["detail"]


def test_newer_finished_beats_older_finished(tmp_path):
    old = write_run(tmp_path, "old", seed=0, run_key="bbbbbbbbbbbb", after={"synthetic": 10.0})
    new = write_run(tmp_path, "new", seed=0, run_key="bbbbbbbbbbbb", after={"synthetic": 20.0})
    set_mtime(old / "final.json", 5_000)  # older final.json, though its dir sorts after "new"
    set_mtime(new / "final.json", 6_000)
    runs, _, problems = collect([tmp_path], quiet=True)
    assert runs["after.synthetic"].tolist() == [20.0]
    assert problems["status"].tolist() == ["superseded-finished"]
    set_mtime(old / "final.json", 7_000)
    runs, _, _ = collect([tmp_path], quiet=True)
    assert runs["after.synthetic"].tolist() == [10.0]


def test_a_run_key_shared_by_two_sweeps_belongs_to_both(tmp_path):
    write_run(tmp_path, "a", seed=0, sweep="main")
    write_run(tmp_path, "b", seed=0, sweep="components")  # same config, same run_key
    runs, _, _ = collect([tmp_path], quiet=True)
    assert len(runs) == 1 and runs.iloc[0]["sweeps"] == "components,main"


def test_torn_last_line_nulls_and_repeated_steps(tmp_path):
    curves = synthetic_curves(4, seed=0, algorithm="grpo")
    run_dir = write_run(tmp_path, "torn", seed=0, algorithm="grpo", curves=curves, status="unfinished")
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"global_step": 4, "train/accuracy": 0.99, "signal/fss_neg": None}) + "\n")  # resumed
        f.write('{"global_step": 5, "train/accur')  # killed mid-write
    runs, got, problems = collect([tmp_path], quiet=True)
    assert got["global_step"].tolist() == [1, 2, 3, 4]
    assert got["train/accuracy"].iloc[-1] == 0.99 and np.isnan(got["signal/fss_neg"].iloc[-1])
    assert "skipped 1 unreadable line(s) [6]" in problems.iloc[0]["detail"]


def test_runs_without_rgr_group_count_as_rgr_off_and_bad_run_json_is_reported(tmp_path):
    run_dir = write_run(tmp_path, "old", seed=0)
    meta = json.loads((run_dir / "run.json").read_text())
    del meta["config"]["rgr"], meta["run_key"]
    (run_dir / "run.json").write_text(json.dumps(meta))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    runs, _, problems = collect([tmp_path], quiet=True)
    assert runs["cfg.rgr.enabled"].tolist() == [False]
    assert len(runs.iloc[0]["run_key"]) == 12  # config hash stands in for a missing run_key
    assert problems["status"].tolist() == ["invalid"] and problems.iloc[0]["path"].endswith("broken")


def test_cli_is_idempotent(tmp_path, capsys):
    runs_root = tmp_path / "runs"
    for seed in range(2):
        write_run(runs_root, f"g{seed}", seed=seed, algorithm="grpo", sweep="main")
        write_run(runs_root, f"c{seed}", seed=seed, algorithm="care", sweep="main")
    write_run(runs_root, "f", seed=5, sweep="main", status="failed")
    assert main([str(runs_root), "--out", str(tmp_path / "a")]) == 0
    assert main([str(runs_root), "--out", str(tmp_path / "b")]) == 0
    assert "5 runs" in capsys.readouterr().out
    first, second = read_collected(tmp_path / "a"), read_collected(tmp_path / "b")
    for one, two in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(one, two)
    for name in ("runs.parquet", "curves.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(first[0]) == 5 and len(first[1]) == 5 * 20


def test_committed_fixture_tree():
    runs, curves, problems = collect([FIXTURE_RUNS], quiet=True)
    main_runs = runs[runs["sweep"] == "main"]
    assert len(main_runs) == 6 and (main_runs["status"] == "finished").all()
    for algorithm, scores in FIXTURE_SCORES.items():
        got = main_runs[main_runs["cfg.algorithm.name"] == algorithm].sort_values("cfg.seed")["after.synthetic"]
        assert got.tolist() == list(scores)
    assert sorted(problems["status"]) == ["superseded-failed", "unfinished"]
    assert curves.groupby("run_key").size().loc[main_runs["run_key"]].eq(12).all()


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        collect([tmp_path / "nope"], quiet=True)
