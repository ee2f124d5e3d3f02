"""analysis.figures: every figure renders a non-blank PNG (and a PDF) at paper column width."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from analysis.cells import NoRunsError
from analysis.collect import collect
from analysis.figures import ALL_FIGURES, COLUMN_WIDTH_IN, PAPER_RC


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    from analysis.fake_runs import write_run

    root = tmp_path_factory.mktemp("figure-runs")
    for seed in range(2):
        for algorithm in ("grpo", "care"):
            write_run(root, f"main-{algorithm}-{seed}", seed=seed, algorithm=algorithm, sweep="main", steps=15)
        for variant in ("cue", "no_cue"):
            write_run(root, f"rgr-{variant}-{seed}", seed=seed, sweep="rgr", steps=15,
                      overrides={"rgr.variant": variant, "data.seed": 1})
        for anchor in ("shortest_think", "random"):
            write_run(root, f"anchor-{anchor}-{seed}", seed=seed, sweep="anchor", steps=15,
                      overrides={"care.anchor": anchor, "data.seed": 2})
    write_run(root, "main-care-dead", seed=3, sweep="main", status="failed")  # finished runs only are drawn
    runs, curves, _ = collect([root], quiet=True)
    return runs, curves


@pytest.mark.parametrize("name", list(ALL_FIGURES))
def test_figure_renders_non_blank_png_and_pdf(collected, tmp_path, name):
    sweep, draw = ALL_FIGURES[name]
    paths = draw(*collected, tmp_path, sweep=sweep, smooth=3)
    assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf"]
    png, pdf = paths
    assert png.stat().st_size > 5_000 and pdf.stat().st_size > 2_000
    image = matplotlib.image.imread(png)
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 1  # not one flat colour
    width_in = image.shape[1] / PAPER_RC["savefig.dpi"]
    assert 2.5 < width_in < COLUMN_WIDTH_IN + 0.6  # about one column (tight bbox trims or adds a little)


def test_figure_without_its_sweep_is_skipped_with_a_reason(collected, tmp_path):
    runs, curves = collected
    _, draw = ALL_FIGURES["rgr_repair_rate"]
    with pytest.raises(NoRunsError, match="no runs in sweep 'missing'"):
        draw(runs, curves, tmp_path, sweep="missing")
    with pytest.raises(NoRunsError, match="no logged"):
        draw(runs, curves.drop(columns=["rgr/repair_rate"]), tmp_path, sweep="rgr")


def test_one_file_per_backbone_when_a_sweep_has_several(tmp_path):
    from analysis.fake_runs import write_run

    for backbone in ("qwen2_5_vl_3b", "qwen2_5_vl_7b"):
        write_run(tmp_path / "runs", backbone, backbone=backbone, sweep="main", steps=4)
    runs, curves, _ = collect([tmp_path / "runs"], quiet=True)
    _, draw = ALL_FIGURES["accuracy_curves"]
    names = sorted(p.name for p in draw(runs, curves, tmp_path / "out"))
    assert names == ["accuracy_curves-qwen2_5_vl_3b.pdf", "accuracy_curves-qwen2_5_vl_3b.png",
                     "accuracy_curves-qwen2_5_vl_7b.pdf", "accuracy_curves-qwen2_5_vl_7b.png"]
