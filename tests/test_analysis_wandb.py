"""The W&B path (collect --from-wandb, wandb_compare) on fakes of the public API's run objects."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import collect
from analysis.collect import main as collect_main
from analysis.fake_runs import write_run
from analysis.wandb_compare import main as compare_main
from analysis.wandb_compare import report_spec
from analysis.wandb_source import collect_from_wandb


class FakeSummary:
    """Like wandb's HTTPSummary: a mapping read through items(), nested values are sub-summaries."""

    def __init__(self, values: dict):
        self._values = values

    def items(self):
        return [(k, FakeSummary(v) if isinstance(v, dict) else v) for k, v in self._values.items()]


class FakeRun:
    """Just the attributes analysis.wandb_source reads; history() must never be called."""

    def __init__(self, run_id, group, state, config, summary, rows, heartbeat_at="2026-01-01T00:00:00Z"):
        self.id, self.group, self.state, self.config = run_id, group, state, config
        self.summary = FakeSummary(summary)
        self.created_at = self.heartbeat_at = heartbeat_at
        self._rows = rows
        self.scans = self.history_calls = 0

    def scan_history(self, keys=None, page_size=1000, min_step=0, max_step=None):
        self.scans += 1
        return iter([dict(row) for row in self._rows])

    def history(self, *args, **kwargs):
        self.history_calls += 1
        raise AssertionError("history() samples rows; analysis must use scan_history()")


class FakeApi:
    def __init__(self, runs):
        self._runs, self.calls = runs, []

    def runs(self, path, filters=None, **kwargs):
        self.calls.append((path, filters))
        return [r for r in self._runs if not filters or r.group == filters.get("group")]


def mirrored(run_dir: Path, run_id: str, state="finished", heartbeat_at="2026-01-01T00:00:00Z") -> FakeRun:
    """The W&B run the trainer's mirror would have made of a run dir (config, summary, history)."""
    meta = json.loads((run_dir / "run.json").read_text())
    config = {**meta["config"], "run_key": meta["run_key"], "sweep": meta["sweep"], "choices": meta["choices"]}
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.append({**row, "_step": row.pop("global_step"), "_runtime": 1.0, "_timestamp": 1.7e9})
    summary = {"_step": rows[-1]["_step"], **{k: v for k, v in rows[-1].items() if not k.startswith("_")}}
    if (run_dir / "final.json").exists():
        summary.update(json.loads((run_dir / "final.json").read_text()))
    return FakeRun(run_id, meta["sweep"], state, config, summary, rows, heartbeat_at)


@pytest.fixture
def run_dirs(tmp_path):
    dirs = []
    for seed in range(2):
        for algorithm, score in (("grpo", 40.0), ("care", 45.0)):
            dirs.append(write_run(tmp_path / "runs", f"{algorithm}-{seed}", seed=seed, algorithm=algorithm,
                                  sweep="main", steps=5, after={"synthetic": score + seed}))
    return dirs


def test_from_wandb_builds_the_run_dir_schema_with_scan_history(run_dirs, tmp_path):
    fakes = [mirrored(d, f"id{i}") for i, d in enumerate(run_dirs)]
    api = FakeApi(fakes + [mirrored(run_dirs[0], "other", heartbeat_at="2025-01-01T00:00:00Z")])
    api._runs[-1].group = "elsewhere"
    runs, curves, problems = collect_from_wandb("ent/proj", group="main", api=api, quiet=True)
    local_runs, local_curves, _ = collect([tmp_path / "runs"], quiet=True)

    assert api.calls == [("ent/proj", {"group": "main"})]
    assert all(f.scans == 1 and f.history_calls == 0 for f in fakes) and problems.empty
    assert runs["path"].str.startswith("wandb:ent/proj/id").all()
    pd.testing.assert_frame_equal(runs.drop(columns="path"), local_runs.drop(columns="path"))
    pd.testing.assert_frame_equal(curves, local_curves)


def test_from_wandb_dedupes_and_lists_crashed_runs(run_dirs):
    crashed_retry = mirrored(run_dirs[1], "old", state="crashed", heartbeat_at="2026-02-01T00:00:00Z")
    running = mirrored(run_dirs[2], "live", state="running")
    running.config["run_key"] = "cccccccccccc"
    api = FakeApi([mirrored(run_dirs[1], "new"), crashed_retry, running])
    runs, curves, problems = collect_from_wandb("ent/proj", api=api, quiet=True)

    assert api.calls == [("ent/proj", None)]
    assert sorted(runs["status"]) == ["finished", "unfinished"]
    assert crashed_retry.scans == 0  # superseded: its history is never read
    assert sorted(problems["status"]) == ["superseded-failed", "unfinished"]
    assert problems.loc[problems["status"] == "unfinished", "detail"].item() == "W&B state running"


def test_plain_trainer_config_and_final_summary_keys(tmp_path):
    """Today's mirror: config = asdict(cfg) only, after-RL scores as summary final/<bench>."""
    run_dir = write_run(tmp_path, "r", seed=3, sweep="main", steps=2)
    fake = mirrored(run_dir, "x")
    for key in ("run_key", "sweep", "choices"):
        del fake.config[key]
    fake.summary = FakeSummary({"final/synthetic": 61.5, "final/macro": 61.5, "_step": 2})
    runs, _, _ = collect_from_wandb("ent/proj", api=FakeApi([fake]), quiet=True)
    row = runs.iloc[0]
    assert row["sweep"] == "main" and len(row["run_key"]) == 12  # group stands in for the sweep
    assert row["after.synthetic"] == 61.5 and row["final.global_step"] == 2 and row["cfg.seed"] == 3


def test_collect_cli_from_wandb(run_dirs, tmp_path, monkeypatch):
    import wandb

    api = FakeApi([mirrored(d, f"id{i}") for i, d in enumerate(run_dirs)])
    monkeypatch.setattr(wandb, "Api", lambda *args, **kwargs: api)
    assert collect_main(["--from-wandb", "ent/proj", "--group", "main", "--out", str(tmp_path / "out")]) == 0
    assert len(pd.read_parquet(tmp_path / "out" / "runs.parquet")) == 4
    assert api.calls == [("ent/proj", {"group": "main"})]


def test_wandb_compare_prints_tables_without_the_workspaces_package(run_dirs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)  # import fails even if it were installed
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports", None)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", None)
    api = FakeApi([mirrored(d, f"id{i}") for i, d in enumerate(run_dirs)])
    assert compare_main(["ent/proj", "--group", "main"], api=api) == 0
    out = capsys.readouterr().out
    assert "| CARE | **45.50 ± 0.71 [39.1, 51.9] †** | **45.50 ± 0.71 [39.1, 51.9] †** |" in out
    assert "(table components skipped: no runs in sweep 'components')" in out
    assert "wandb_workspaces is not installed: no Report created" in out
    assert "Failure-signal share: signal/fss_neg, signal/fss_fail_derived" in out


def test_report_spec_lists_one_panel_per_figure(run_dirs):
    _, curves, _ = collect_from_wandb("ent/proj", api=FakeApi([mirrored(run_dirs[1], "a")]), quiet=True)
    spec = report_spec("ent/proj", "main", curves)
    assert (spec["entity"], spec["project"], spec["group"]) == ("ent", "proj", "main")
    panels = {p["title"]: p["y"] for p in spec["panels"]}
    assert panels["K' histogram (share of groups)"] == [f"care/k_prime_hist/{k}" for k in range(5)]
    assert panels["Think length"] == ["care/anchor_think_len", "train/correct_think_len"]
    assert panels["RGR repair rate"] == ["rgr/repair_rate"]
    assert all(p["x"] == "Step" for p in spec["panels"])
    grpo_only = report_spec("ent/proj", None, curves.drop(columns=[c for c in curves if c.startswith(("care/", "rgr/"))]))
    assert "RGR repair rate" not in {p["title"] for p in grpo_only["panels"]}


def test_wandb_compare_creates_a_report_with_one_panel_per_figure(run_dirs, monkeypatch, capsys):
    """With wandb-workspaces installed (a dev dependency): the real Report classes, the group
    filter in W&B's own filter syntax, and save() called once (the network call is replaced)."""
    wr = pytest.importorskip("wandb_workspaces.reports.v2")
    from wandb_workspaces import expr

    saved = []
    monkeypatch.setattr(wr.Report, "save", lambda self, *a, **k: saved.append(self) or self)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: f"https://wandb.ai/{self.entity}/{self.project}/reports/x"))
    api = FakeApi([mirrored(d, f"id{i}") for i, d in enumerate(run_dirs)])
    assert compare_main(["ent/proj", "--group", "main"], api=api) == 0
    assert "report: https://wandb.ai/ent/proj/reports/x" in capsys.readouterr().out

    [report] = saved
    _, curves, _ = collect_from_wandb("ent/proj", group="main", api=api, quiet=True)
    spec = report_spec("ent/proj", "main", curves)
    assert (report.entity, report.project, report.title) == ("ent", "proj", "CARE vs baselines: main")
    [grid] = [block for block in report.blocks if isinstance(block, wr.PanelGrid)]
    assert [(panel.title, list(panel.y)) for panel in grid.panels] == [(p["title"], p["y"]) for p in spec["panels"]]
    assert len(grid.panels) >= 5 and all(panel.x == "Step" for panel in grid.panels)
    [runset] = grid.runsets
    group_filter = expr.expr_to_filters(runset.filters)
    assert (group_filter.key.section, group_filter.key.name, group_filter.op, group_filter.value) == \
        ("run", "group", "=", "main")
