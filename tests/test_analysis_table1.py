"""analysis.tables.table1 on a real toy `sweep=table1` (through run.py): Base, Cold start and method rows
carry the numbers the runs' final.json hold, a missing run is an error, and analysis.paper writes it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import paper_numbers as paper
from analysis.cells import SeedCountError, format_score
from analysis.collect import collect
from analysis.fake_runs import write_run
from analysis.tables import ALL_TABLES, table1

ROOT = Path(__file__).resolve().parents[1]
# The toy cold start (96 demos, 1 epoch) leaves the tiny policy at 0 everywhere, which would let a table
# that read the wrong block pass; this one answers some (greedy eval), so Base, Cold start and RL differ.
LEARNS = ["cold_start.num_demos=512", "cold_start.epochs=4", "eval.do_sample=false"]


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory, cache_dir) -> Path:
    """Two of the toy cells x two seeds: 4 RL jobs behind one shared Base, cold start and before-RL check."""
    sweep_dir = tmp_path_factory.mktemp("table1") / "sweep"
    command = [sys.executable, "run.py", "sweep=table1", "scale=toy", "cell=tiny-grpo,tiny-care", "seed=0,1",
               *LEARNS, f"cache_dir={cache_dir}", f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-4000:]
    return sweep_dir


def run_files(sweep_dir: Path) -> list[tuple[dict, dict]]:
    """(run.json, final.json) of every job of the sweep."""
    return [(json.loads((d / "run.json").read_text()), json.loads((d / "final.json").read_text()))
            for d in sorted(sweep_dir.iterdir()) if (d / "run.json").exists()]


def row(table, method: str) -> tuple[dict, dict]:
    """(display text, style) of one row by its Method label."""
    found = table.cells.index[table.cells["Method"] == method]
    assert len(found) == 1, list(table.cells["Method"])
    return table.cells.loc[found[0]].to_dict(), table.style.loc[found[0]].to_dict()


def lead(text: str) -> str:
    """A score cell without its 95% CI and resolved mark (analysis.uncertainty)."""
    return text.split(" [")[0]


def test_toy_table1_rows_hold_the_runs_final_json_numbers(toy_sweep):
    jobs = run_files(toy_sweep)
    assert sorted((meta["choices"]["cell"], meta["config"]["seed"]) for meta, _ in jobs) == [
        ("tiny-care", 0), ("tiny-care", 1), ("tiny-grpo", 0), ("tiny-grpo", 1)]
    # one shared cold start and one Base evaluation: every run carries the same copy
    assert len({json.dumps(final["before"], sort_keys=True) for _, final in jobs}) == 1
    assert len({json.dumps(final["base"], sort_keys=True) for _, final in jobs}) == 1
    before, base = jobs[0][1]["before"], jobs[0][1]["base"]
    assert before["macro"] != base["macro"], "the toy policy learnt nothing: the rows cannot be told apart"

    runs, curves, _ = collect([toy_sweep], quiet=True)
    table = table1(runs, curves)
    base_label = f"Base (Instruct, {base['extraction']} answer rule)"
    assert base["extraction"] == "lenient"
    assert list(table.cells["Method"]) == [base_label, "Cold start", "GRPO", "CARE"]
    assert list(table.cells.columns) == ["Method", "Synthetic", "Macro", "Δ Macro vs GRPO", "P(> GRPO)"]

    # Base and Cold start: the shared scores, once (n = 1, no ±), not averaged as four seeds
    for method, scores in (("Base", base), ("Cold start", before)):
        for column in ("after.synthetic", "after.macro"):
            got = table.stats[(table.stats["method"] == method) & (table.stats["column"] == column)].iloc[0]
            assert (got["mean"], got["n"]) == (scores[column.split(".", 1)[1]], 1)
    assert lead(row(table, base_label)[0]["Macro"]) == f"{base['macro']:.2f}"
    assert lead(row(table, "Cold start")[0]["Synthetic"]) == f"{before['synthetic']:.2f}"
    # the harness's per-sample files were read: one shared row's CI covers its items, a method's seeds too
    by_row = table.stats[table.stats["column"] == "after.macro"].set_index("method")
    assert (by_row.at["Base", "basis"], by_row.at["Cold start", "basis"]) == ("items", "items")
    assert by_row.at["CARE", "basis"] == "seeds+items" and bool(by_row.at["CARE", "paired"])
    assert by_row.at["Cold start", "low"] <= by_row.at["Cold start", "mean"] <= by_row.at["Cold start", "high"]

    # methods: mean ± sample std over the two training seeds of their after-RL scores
    for cell, method in (("tiny-grpo", "GRPO"), ("tiny-care", "CARE")):
        after = [final["after"]["macro"] for meta, final in jobs if meta["choices"]["cell"] == cell]
        expected = format_score(np.mean(after), np.std(after, ddof=1), 2)
        assert lead(row(table, method)[0]["Macro"]) == expected
    assert "2 training seeds" in table.caption and "Backbone: tiny_qwen2_5_vl" in table.caption

    # bold: the best macro of the backbone's rows (ours; no paper rows for the tiny backbone)
    macros = table.stats[table.stats["column"] == "after.macro"].set_index("method")["mean"].round(2)
    best = {base_label if m == "Base" else m for m in macros.index[macros == macros.max()]}
    assert {m for m in table.cells["Method"] if row(table, m)[1]["Macro"] == "bold"} == best
    assert "| Cold start |" in table.markdown() and "\\textbf{" in table.latex()


def test_a_missing_or_unfinished_run_of_a_cell_raises(toy_sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(toy_sweep, copy, ignore=shutil.ignore_patterns("policy", "wandb"))
    jobs = {(json.loads((d / "run.json").read_text())["choices"]["cell"],
             json.loads((d / "run.json").read_text())["config"]["seed"]): d
            for d in copy.iterdir() if (d / "run.json").exists()}
    shutil.rmtree(jobs[("tiny-care", 1)])
    with pytest.raises(SeedCountError, match=r"method=CARE: seeds found \[0\] vs expected \[0, 1\].*seed 1: no run"):
        table1(*collect([copy], quiet=True)[:2])
    (jobs[("tiny-grpo", 0)] / "final.json").unlink()  # a job that died before its after-RL check
    with pytest.raises(SeedCountError, match=r"method=GRPO: .*seed 0: unfinished"):
        table1(*collect([copy], quiet=True)[:2])


def test_a_run_whose_config_is_not_its_cell_is_refused(toy_sweep):
    runs, curves, _ = collect([toy_sweep], quiet=True)
    care = runs.index[runs["choice.cell"] == "tiny-care"][0]
    runs.loc[care, "choice.cell"] = "tiny-care_no_rgr"  # as if rgr= on the command line had undone the cell
    with pytest.raises(ValueError, match="cell=tiny-care_no_rgr but it ran tiny_qwen2_5_vl / CARE"):
        table1(runs, curves)


def test_analysis_paper_writes_table1(toy_sweep, tmp_path):
    assert "table1" in ALL_TABLES
    out = tmp_path / "paper"
    result = subprocess.run([sys.executable, "-m", "analysis.paper", "--runs", str(toy_sweep), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["table1.md", "table1.tex"]
    assert "| Cold start |" in (out / "tables" / "table1.md").read_text()
    assert "\\label{tab:table1}" in (out / "tables" / "table1.tex").read_text()
    assert "skipped table main: no runs in sweep 'main'" in result.stdout


def test_paper_rows_partial_grids_and_one_seed(tmp_path):
    """Real backbones (as fake runs: no GPU here): the paper's method rows in italics, no paper row under
    Base or Cold start (the sources do not say which one "base 45.10" is), 3B with only some methods."""
    real = list(paper.BENCHMARKS)
    cells = {("qwen2_5_vl_7b", "grpo", True): 60.0, ("qwen2_5_vl_7b", "care", True): 70.0,
             ("qwen2_5_vl_7b", "care", False): 65.0, ("qwen2_5_vl_3b", "care", True): 50.0}
    for (backbone, algorithm, rgr), score in cells.items():
        write_run(tmp_path, f"{backbone}-{algorithm}-{rgr}", algorithm=algorithm, backbone=backbone, sweep="table1",
                  steps=2, overrides={"rgr.enabled": rgr}, after={b: score for b in real},
                  before={b: 40.0 for b in real}, base={b: 30.0 for b in real})
    table = table1(*collect([tmp_path], quiet=True)[:2])
    seven = table.cells[table.cells["Backbone"] == "Qwen2.5-VL-7B"]
    assert list(seven["Method"]) == ["Base (Instruct, lenient answer rule)", "Cold start", "GRPO", "GRPO (paper)",
                                     "CARE w/o RGR", "CARE w/o RGR (paper)", "CARE", "CARE (paper)"]
    three = table.cells[table.cells["Backbone"] == "Qwen2.5-VL-3B"]
    assert list(three["Method"]) == ["Base (Instruct, lenient answer rule)", "Cold start", "CARE", "CARE (paper)"]
    paper_row = seven.index[seven["Method"] == "CARE (paper)"][0]
    assert (table.cells.at[paper_row, "MathVista"], table.style.at[paper_row, "MathVista"]) == ("74.7", "italic")
    assert table.cells.at[paper_row, "Macro"] == "50.57"
    wo_rgr = seven.index[seven["Method"] == "CARE w/o RGR (paper)"][0]
    assert (table.cells.at[wo_rgr, "MathVista"], table.cells.at[wo_rgr, "Macro"]) == ("—", "49.85")
    ours = seven.index[seven["Method"] == "CARE"][0]
    assert (table.cells.at[ours, "Macro"], table.style.at[ours, "Macro"]) == ("70.00", "bold")  # one seed: no ±
    assert "one training seed: no ±" in table.caption
