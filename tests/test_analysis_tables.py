"""analysis.tables: exact numbers on run dirs with known scores, and loud failures on missing seeds."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from analysis import paper_numbers as paper
from analysis.cells import NoRunsError, SeedCountError
from analysis.collect import collect
from analysis.fake_runs import synthetic_curves, write_run
from analysis.tables import (
    anchor_table,
    components_table,
    k_eq_table,
    main_table,
    neg_scale_table,
    negatives_table,
    rgr_table,
    token_credit_table,
)

REAL = list(paper.BENCHMARKS)


def stat(table, column, **cell) -> pd.Series:
    """The one stats row for a cell and column."""
    rows = table.stats[table.stats["column"] == column]
    for key, value in cell.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def cell_text(table, column, **cell) -> tuple[str, str]:
    rows = table.cells
    for key, value in cell.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, rows
    return rows.iloc[0][column], table.style.loc[rows.index[0], column]


def lead(text: str) -> str:
    """A score cell without its 95% CI and resolved mark: `mean ± std` (the CIs: test_analysis_uncertainty)."""
    return text.split(" [")[0]


def lead_text(table, column, **cell) -> tuple[str, str]:
    text, style = cell_text(table, column, **cell)
    return lead(text), style


def two_methods(root, scores, sweep="main", backbone="tiny_qwen2_5_vl", benches=("synthetic",)):
    """GRPO and CARE × seeds; scores[algorithm][seed] is the after-RL accuracy on every benchmark."""
    for algorithm, per_seed in scores.items():
        for seed, score in enumerate(per_seed):
            write_run(root, f"{backbone}-{algorithm}-{seed}", seed=seed, algorithm=algorithm, backbone=backbone,
                      sweep=sweep, steps=3, after={b: score for b in benches},
                      before={b: 30.0 + seed for b in benches})


def collected(root):
    runs, curves, _ = collect([root], quiet=True)
    return runs, curves


def test_main_table_mean_std_bold_and_base(tmp_path):
    two_methods(tmp_path, {"grpo": [40.0, 42.0, 44.0], "care": [50.0, 53.0, 56.0]})
    runs, curves = collected(tmp_path)
    table = main_table(runs, curves)

    care = stat(table, "after.macro", method="CARE")
    assert (care["mean"], care["std"], care["n"]) == (53.0, 3.0, 3)
    grpo = stat(table, "after.synthetic", method="GRPO")
    assert (grpo["mean"], grpo["std"]) == (42.0, 2.0)
    base = stat(table, "after.macro", method="Base")
    assert (base["mean"], base["std"]) == (31.0, 1.0)  # before-RL scores 30, 31, 32
    # 95% CI: 53 ± t(0.975, 2) · 3/√3; CARE − GRPO per seed 10, 11, 12 (one cold start): resolved, †
    assert cell_text(table, "Macro", Method="CARE") == ("53.00 ± 3.00 [45.5, 60.5] †", "bold")
    assert cell_text(table, "Macro", Method="GRPO") == ("42.00 ± 2.00 [37.0, 47.0]", "")
    assert list(table.cells["Method"]) == ["Base", "GRPO", "CARE"]  # paper order; one backbone, no column
    markdown = table.markdown()
    assert "| **53.00 ± 3.00 [45.5, 60.5] †** | +11.00 [+8.5, +13.5] | 1.00 |" in markdown and "Backbone: tiny_qwen2_5_vl" in markdown
    latex = table.latex()
    assert "\\textbf{53.00 $\\pm$ 3.00 [45.5, 60.5] \\dag{}}" in latex and "\\toprule" in latex and "tiny\\_qwen2\\_5\\_vl" in latex


def test_main_table_puts_paper_rows_under_real_backbones(tmp_path):
    two_methods(tmp_path, {"grpo": [60.0, 61.0], "care": [70.0, 72.0]}, backbone="qwen2_5_vl_7b", benches=REAL)
    runs, curves = collected(tmp_path)
    table = main_table(runs, curves)
    assert list(table.cells["Method"]) == ["Base", "Base (paper)", "GRPO", "GRPO (paper)", "CARE", "CARE (paper)"]
    assert cell_text(table, "MathVista", Method="CARE (paper)") == ("74.7", "italic")
    assert cell_text(table, "Macro", Method="CARE (paper)") == ("50.57", "italic")
    assert cell_text(table, "Macro", Method="Base (paper)") == ("45.1", "italic")
    assert lead_text(table, "MMMU-Pro vis", Method="CARE") == ("71.00 ± 1.41", "bold")
    assert stat(table, "after.mathvista", method="CARE")["paper"] == 74.7
    assert list(table.cells.columns[1:]) == ["MathVista", "MathVerse", "MATH-Vision", "MMMU", "MMMU-Pro std",
                                             "MMMU-Pro vis", "Macro", "Δ Macro vs GRPO", "P(> GRPO)"]
    assert cell_text(table, "P(> GRPO)", Method="CARE (paper)") == ("—", "")  # paper rows: no comparison


def test_paper_macros_match_the_published_ones():
    macros = {method: paper.MAIN[("qwen2_5_vl_7b", method)]["macro"] for method in ("GRPO", "DAPO", "GSPO", "CARE")}
    assert macros == {"GRPO": 45.95, "DAPO": 48.30, "GSPO": 49.87, "CARE": 50.57}


def test_a_missing_seed_fails_loudly_naming_the_cell(tmp_path):
    two_methods(tmp_path, {"grpo": [40.0, 42.0, 44.0], "care": [50.0, 53.0, 56.0]})
    shutil.rmtree(tmp_path / "tiny_qwen2_5_vl-care-2")
    runs, curves = collected(tmp_path)
    with pytest.raises(SeedCountError, match=r"method=CARE: seeds found \[0, 1\] vs expected \[0, 1, 2\].*seed 2: no run"):
        main_table(runs, curves)
    with pytest.raises(SeedCountError, match="expected 3 seeds"):
        main_table(runs[runs["cfg.algorithm.name"] == "care"], curves, seeds=3)


def test_a_failed_or_duplicated_seed_fails_loudly(tmp_path):
    two_methods(tmp_path, {"grpo": [40.0, 42.0], "care": [50.0, 53.0]})
    write_run(tmp_path, "care-1-failed-rerun", seed=1, algorithm="care", sweep="main", status="failed",
              overrides={"rl.learning_rate": 5e-4})  # other config: another run_key, same cell and seed
    runs, curves = collected(tmp_path)
    with pytest.raises(SeedCountError, match=r"seed 1: failed \(.*care-1-failed-rerun\)"):
        main_table(runs, curves)
    write_run(tmp_path, "care-1-failed-rerun", seed=1, algorithm="care", sweep="main", after={"synthetic": 99.0},
              overrides={"rl.learning_rate": 5e-4})
    (tmp_path / "care-1-failed-rerun" / "FAILED").unlink()
    runs, curves = collected(tmp_path)
    with pytest.raises(SeedCountError, match="seed 1: 2 finished runs"):
        main_table(runs, curves)


def test_missing_sweep_is_no_runs(tmp_path):
    two_methods(tmp_path, {"grpo": [40.0], "care": [50.0]})
    runs, curves = collected(tmp_path)
    with pytest.raises(NoRunsError, match="components"):
        components_table(runs, curves)


def test_components_deltas(tmp_path):
    variants = {"grpo": ("grpo", {}), "norgr": ("care", {"rgr.enabled": False}), "care": ("care", {})}
    scores = {"grpo": [40.0, 41.0], "norgr": [44.0, 45.0], "care": [45.0, 47.0]}
    for name, (algorithm, overrides) in variants.items():
        for seed, score in enumerate(scores[name]):
            write_run(tmp_path, f"{name}-{seed}", seed=seed, algorithm=algorithm, sweep="components", steps=3,
                      overrides=overrides, after={"synthetic": score})
    runs, curves = collected(tmp_path)
    table = components_table(runs, curves)
    assert list(table.cells["Method"]) == ["GRPO", "CARE w/o RGR", "CARE"]
    assert [d.split(" [")[0] for d in table.cells["Δ macro"]] == ["—", "+4.00", "+1.50"]
    assert stat(table, "after.macro", method="CARE w/o RGR")["mean"] == 44.5


def test_components_paper_deltas_for_the_3b_backbone(tmp_path):
    for name, algorithm, overrides in (("g", "grpo", {}), ("n", "care", {"rgr.enabled": False}), ("c", "care", {})):
        write_run(tmp_path, name, seed=0, algorithm=algorithm, backbone="qwen2_5_vl_3b", sweep="components",
                  overrides=overrides, steps=2, after={b: 40.0 for b in REAL})
    table = components_table(*collected(tmp_path))
    assert list(table.cells["Paper macro"]) == ["38.83", "40.15", "40.95"]
    assert list(table.cells["Paper Δ"]) == ["—", "+1.32", "+0.80"]


def factor_runs(root, sweep, dotted, levels, scores, **extra):
    """One run per level × seed; scores[level] lists after-RL accuracy per seed."""
    for level in levels:
        for seed, score in enumerate(scores[level]):
            write_run(root, f"{sweep}-{level}-{seed}", seed=seed, sweep=sweep, steps=3, overrides={dotted: level},
                      after={"synthetic": score}, **extra)


def test_negatives_table_with_paper_macro(tmp_path):
    factor_runs(tmp_path, "negatives", "care.selector", ["random", "cosine", "nearest"],
                {"cosine": [50.0, 52.0], "nearest": [48.0, 48.0], "random": [40.0, 44.0]})
    table = negatives_table(*collected(tmp_path))
    assert list(table.cells["Selector"]) == ["cosine", "nearest", "random"]
    assert list(table.cells["Paper macro"]) == ["50.6", "—", "43.1"]
    assert lead_text(table, "Macro", Selector="cosine") == ("51.00 ± 1.41", "bold")
    assert stat(table, "after.macro", Selector="random")["mean"] == 42.0


def test_rgr_table_repair_rates_from_the_logged_attempts(tmp_path):
    for seed, successes in enumerate([7, 8]):
        curves = synthetic_curves(2, seed=seed, rgr=True)
        curves["rgr/attempts"], curves["rgr/successes"] = [4, 6], [successes - 3, 3]  # 70% and 80%
        write_run(tmp_path, f"cue-{seed}", seed=seed, sweep="rgr", curves=curves,
                  overrides={"rgr.variant": "cue"}, after={"synthetic": 50.0})
    for seed in range(2):
        curves = synthetic_curves(2, seed=seed, rgr=True)
        curves["rgr/attempts"], curves["rgr/successes"] = [10, 10], [1, 3 + seed]  # 20% and 25%
        write_run(tmp_path, f"nocue-{seed}", seed=seed, sweep="rgr", curves=curves,
                  overrides={"rgr.variant": "no_cue"}, after={"synthetic": 45.0})
        write_run(tmp_path, f"off-{seed}", seed=seed, sweep="rgr", steps=2, overrides={"rgr.enabled": False},
                  after={"synthetic": 44.0})
    table = rgr_table(*collected(tmp_path))
    assert list(table.cells["RGR variant"]) == ["cue", "no_cue", "off"]
    cue = stat(table, "repair_rate", **{"RGR variant": "cue"})
    assert cue["mean"] == pytest.approx(75.0) and cue["std"] == pytest.approx(7.0710678)
    assert stat(table, "repair_rate", **{"RGR variant": "no_cue"})["mean"] == pytest.approx(22.5)
    assert cell_text(table, "Repair rate (%)", **{"RGR variant": "off"}) == ("—", "")
    assert list(table.cells["Paper repair rate"]) == ["76.6", "19.3", "—"]


def test_k_eq_table_pivot_and_full_grid(tmp_path):
    for k in (1, 4):
        for equalize in (True, False):
            for seed in range(2):
                write_run(tmp_path, f"k{k}-{equalize}-{seed}", seed=seed, sweep="k_eq", steps=2,
                          overrides={"care.k": k, "care.equalize": equalize},
                          after={"synthetic": 40.0 + k + (2 if equalize else 0) + seed})
    table = k_eq_table(*collected(tmp_path))
    assert list(table.cells.columns) == ["K", "Equalize on", "Equalize off", "Δ on − off", "P(on > off)"]
    assert list(table.cells["Equalize on"].map(lead)) == ["43.50 ± 0.71", "46.50 ± 0.71"]
    assert list(table.cells["Equalize off"].map(lead)) == ["41.50 ± 0.71", "44.50 ± 0.71"]
    assert table.style.loc[1, "Equalize on"] == "bold"
    for seed in range(2):
        shutil.rmtree(tmp_path / f"k4-False-{seed}")
    with pytest.raises(SeedCountError, match="no runs at all for cell.*K=4, equalize=off"):
        k_eq_table(*collected(tmp_path))


def test_anchor_table_think_length_from_curves(tmp_path):
    for anchor, lengths in (("shortest_think", (30.0, 34.0)), ("random", (50.0, 52.0))):
        for seed in range(2):
            curves = synthetic_curves(2, seed=seed)
            curves["care/anchor_think_len"] = [lengths[seed] - 1, lengths[seed] + 1]
            write_run(tmp_path, f"{anchor}-{seed}", seed=seed, sweep="anchor", curves=curves,
                      overrides={"care.anchor": anchor}, after={"synthetic": 50.0})
    table = anchor_table(*collected(tmp_path))
    assert list(table.cells["Anchor"]) == ["shortest_think", "random"]
    assert list(table.cells["Anchor think (tokens)"].map(lead)) == ["32.00 ± 2.83", "51.00 ± 1.41"]
    assert list(table.cells["Think vs random"]) == ["-19.0", "+0.0"]
    assert list(table.cells["Paper think vs random"]) == ["-15 to -20", "—"]


def test_neg_scale_and_token_credit_tables(tmp_path):
    # Separate roots: care.s=0.5 and token_credit=region are both the default config (one run_key).
    factor_runs(tmp_path / "a", "neg_scale", "care.s", [0.25, 0.5, 1.0], {0.25: [40.0, 41.0], 0.5: [45.0, 46.0],
                                                                        1.0: [42.0, 42.0]})
    factor_runs(tmp_path / "b", "token_credit", "care.token_credit", ["uniform", "region"],
                {"region": [47.0, 49.0], "uniform": [44.0, 44.0]})
    runs, curves = collected(tmp_path / "a")
    scale = neg_scale_table(runs, curves)
    runs, curves = collected(tmp_path / "b")
    assert list(scale.cells["s"]) == ["0.25", "0.5", "1.0"]
    assert list(scale.cells["Macro"].map(lead)) == ["40.50 ± 0.71", "45.50 ± 0.71", "42.00 ± 0.00"]
    credit = token_credit_table(runs, curves)
    assert list(credit.cells["Token credit"]) == ["region", "uniform"]
    assert lead_text(credit, "Synthetic", **{"Token credit": "region"}) == ("48.00 ± 1.41", "bold")


def test_two_backbones_keep_a_backbone_column_and_bold_within_each(tmp_path):
    two_methods(tmp_path, {"grpo": [40.0], "care": [50.0]}, benches=REAL, backbone="qwen2_5_vl_3b")
    two_methods(tmp_path, {"grpo": [60.0], "care": [55.0]}, benches=REAL, backbone="qwen2_5_vl_7b")
    table = main_table(*collected(tmp_path))
    assert table.cells.columns[0] == "Backbone"
    assert cell_text(table, "Macro", Backbone="Qwen2.5-VL-3B", Method="CARE") == ("50.00", "bold")
    assert cell_text(table, "Macro", Backbone="Qwen2.5-VL-7B", Method="GRPO") == ("60.00", "bold")
    assert cell_text(table, "Macro", Backbone="Qwen2.5-VL-3B", Method="GRPO (paper)") == ("38.83", "italic")


def test_score_columns_skip_the_bookkeeping_fields_final_json_carries():
    """final.json's `after` block also has macro_std, n and the eval seed list: none is a benchmark."""
    import pandas as pd

    from analysis.cells import score_columns

    frame = pd.DataFrame({"after.synthetic": [50.0], "after.macro": [50.0], "after.macro_std": [1.2],
                          "after.n": [256], "after.seeds": ["[0, 1, 2]"]})
    assert score_columns(frame) == ["after.synthetic", "after.macro"]
