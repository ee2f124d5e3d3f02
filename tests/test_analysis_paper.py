"""python -m analysis.paper end to end: what exists is written, what is absent is skipped, gaps fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from analysis.fake_runs import write_run
from analysis.paper import main

REPO = Path(__file__).resolve().parents[1]
FIXTURE_RUNS = Path(__file__).parent / "fixtures" / "runs"


def write_tree(root: Path) -> None:
    """Sweeps main (GRPO/CARE × 2 seeds) and components (the same CARE runs plus CARE w/o RGR)."""
    for seed in range(2):
        for algorithm, score in (("grpo", 40.0), ("care", 45.0)):
            write_run(root / "main", f"{algorithm}-{seed}", seed=seed, algorithm=algorithm, sweep="main", steps=6,
                      after={"synthetic": score + seed})
            write_run(root / "components", f"{algorithm}-{seed}", seed=seed, algorithm=algorithm,
                      sweep="components", steps=6, after={"synthetic": score + seed})
        write_run(root / "components", f"norgr-{seed}", seed=seed, sweep="components", steps=6,
                  overrides={"rgr.enabled": False}, after={"synthetic": 43.0 + seed})


def test_cli_writes_tables_and_figures_and_skips_absent_sweeps(tmp_path, capsys):
    write_tree(tmp_path / "runs")
    out = tmp_path / "paper"
    assert main(["--runs", str(tmp_path / "runs"), "--out", str(out), "--seeds", "2"]) == 0
    printed = capsys.readouterr().out

    tables = sorted(p.name for p in (out / "tables").iterdir())
    assert tables == ["components.md", "components.tex", "main.md", "main.tex"]
    assert "| CARE | **45.50 ± 0.71 [39.1, 51.9] †** | **45.50 ± 0.71 [39.1, 51.9] †** |" in (out / "tables" / "main.md").read_text()
    assert "+2.00" in (out / "tables" / "components.md").read_text()  # CARE w/o RGR 43.5 -> CARE 45.5
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == sorted(f"{name}.{ext}" for name in
                             ("failure_signal_share", "zero_signal_groups", "accuracy_curves", "k_prime_histogram")
                             for ext in ("png", "pdf"))
    for skipped in ("table negatives", "table rgr", "table k_eq", "table anchor", "table neg_scale",
                    "table token_credit", "figure rgr_repair_rate", "figure think_length_by_anchor"):
        assert f"skipped {skipped}: no " in printed


def test_cli_fails_loudly_when_a_sweep_misses_a_seed_but_writes_the_rest(tmp_path, capsys):
    write_tree(tmp_path / "runs")
    shutil.rmtree(tmp_path / "runs" / "components" / "norgr-1")
    out = tmp_path / "paper"
    assert main(["--runs", str(tmp_path / "runs"), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "FAILED table components" in captured.err and "method=CARE w/o RGR: seeds found [0]" in captured.err
    assert (out / "tables" / "main.md").exists() and not (out / "tables" / "components.md").exists()


def test_module_entry_point_on_the_committed_fixture(tmp_path):
    """The real command line, on tests/fixtures/runs, from collected parquet as well as from dirs."""
    collected = tmp_path / "collected"
    run = [sys.executable, "-m", "analysis.collect", str(FIXTURE_RUNS), "--out", str(collected)]
    result = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "[superseded-failed] (not used)" in result.stderr and "[unfinished]" in result.stderr
    result = subprocess.run([sys.executable, "-m", "analysis.paper", "--collected", str(collected), "--out",
                             str(tmp_path / "paper")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    main_md = (tmp_path / "paper" / "tables" / "main.md").read_text()
    assert "| CARE | **46.40 ± 0.79 [44.4, 48.4] †** | **46.40 ± 0.79 [44.4, 48.4] †** |" in main_md  # 46.1, 47.3, 45.8
    assert "| GRPO | 42.20 ± 0.80 [40.2, 44.2] | 42.20 ± 0.80 [40.2, 44.2] | — | — |" in main_md
