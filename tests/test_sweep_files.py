"""conf/sweep/: every paper sweep composes, expands to the jobs it promises, and feeds its table.

Composition only, no training: Hydra's compose API gives the sweep's config, BasicSweeper's
own parser and `split_arguments` expand `hydra.sweeper.params` (plus the command line) into
jobs exactly as `python run.py sweep=<name>` would, and each job is validated by
`run.to_config` (the typed schema). Run dirs shaped like those jobs' run.json (fake scores)
then go through analysis.collect into the sweep's table, so a column the table groups by
that the runs would not record fails here. A sweep file without an entry in SWEEPS fails
the meta-test.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from analysis.cells import method_label
from analysis.collect import collect
from analysis.fake_runs import write_run
from analysis.figures import ALL_FIGURES, run_table
from analysis.tables import ALL_TABLES
from care.config import Config
from care.identity import run_key
from run import to_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY = "tiny_qwen2_5_vl"
PAPER_SEEDS = [0, 1, 2, 3, 4]  # the paper's 5 seeds (docs/method.md §9)
TOY_SEEDS = [0, 1, 2]
ABLATION_BACKBONES = ("qwen2_5_vl_7b",)  # the paper's ablations are on Qwen2.5-VL-7B


def rgr_level(cfg: Config) -> str:
    return cfg.rgr.variant if cfg.rgr.enabled else "off"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What one sweep file must produce: its compared levels, backbones at full scale, table column."""

    level: Callable[[Config], object]  # a job's level of the compared factor, from its typed config
    levels: frozenset
    backbones: tuple[str, ...] = ABLATION_BACKBONES
    column: str | None = None  # the table's column holding the level (None: checked by `stats`)
    full_seeds: tuple[int, ...] = tuple(PAPER_SEEDS)  # training seeds at full scale
    full_cells: int | None = None  # cells at full scale when they are not a product (table1's 9); None: levels x backbones

    def seeds(self, scale: str) -> list[int]:
        return list(self.full_seeds) if scale == "full" else TOY_SEEDS

    def jobs(self, scale: str) -> int:
        if scale == "full" and self.full_cells is not None:
            return self.full_cells * len(self.full_seeds)
        backbones = len(self.backbones) if scale == "full" else 1
        return len(self.levels) * backbones * len(self.seeds(scale))


# Every file in conf/sweep/ needs an entry here (test_every_sweep_file_is_tested).
SWEEPS = {
    "main": Sweep(lambda c: method_label(c.algorithm.name, c.rgr.enabled),
                  frozenset({"GRPO", "DAPO", "GSPO", "CARE"}),
                  backbones=("qwen2_5_vl_7b", "qwen2_5_vl_3b", "qwen3_vl_8b"), column="method"),
    "components": Sweep(lambda c: method_label(c.algorithm.name, c.rgr.enabled),
                        frozenset({"GRPO", "CARE w/o RGR", "CARE"}),
                        backbones=("qwen2_5_vl_7b", "qwen2_5_vl_3b"), column="method", full_cells=6),
    "negatives": Sweep(lambda c: c.care.selector, frozenset({"cosine", "nearest", "farthest", "mixed", "random"}),
                       column="Selector"),
    "rgr": Sweep(rgr_level, frozenset({"cue", "no_cue", "random", "off"}), column="RGR variant"),
    "k_eq": Sweep(lambda c: (c.care.k, c.care.equalize),
                  frozenset((k, eq) for k in (1, 2, 4, 6) for eq in (True, False))),
    "anchor": Sweep(lambda c: c.care.anchor, frozenset({"shortest_think", "random", "longest_think", "max_logprob"}),
                    column="Anchor"),
    "neg_scale": Sweep(lambda c: c.care.s, frozenset({0.25, 0.5, 0.75, 1.0}), column="s"),
    "token_credit": Sweep(lambda c: c.care.token_credit, frozenset({"region", "uniform"}), column="Token credit"),
    # the paper's Table 1 cells (conf/cell): 7B x 5 methods, 3B x 3, 8B x 1; one training seed by default
    "table1": Sweep(lambda c: method_label(c.algorithm.name, c.rgr.enabled),
                    frozenset({"GRPO", "DAPO", "GSPO", "CARE w/o RGR", "CARE"}),
                    backbones=("qwen2_5_vl_7b", "qwen2_5_vl_3b", "qwen3_vl_8b"), column="method",
                    full_seeds=(0,), full_cells=9),
}
SCALES = ("full", "toy")
CASES = [pytest.param(name, scale, id=f"{name}-{scale}") for name in SWEEPS for scale in SCALES]


# ---------------------------------------------------------------- composing and expanding

def compose_config(overrides: list[str], hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def expand(overrides: list[str]) -> list[list[str]]:
    """The jobs `python run.py <overrides>` launches: BasicSweeper.sweep's own expansion."""
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    cfg = compose_config(fixed, hydra=True)  # as Hydra composes a multirun's config: sweeps left out
    params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()]
    parsed = parser.parse_overrides(params + overrides)
    (jobs,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for job in jobs]


def without_seed(job: list[str]) -> tuple[str, ...]:
    return tuple(o for o in job if not o.startswith("seed="))


def seed_of(job: list[str]) -> int:
    (seed,) = [int(o.split("=", 1)[1]) for o in job if o.startswith("seed=")]
    return seed


@functools.cache
def sweep_jobs(name: str, scale: str) -> tuple[list[list[str]], dict[tuple[str, ...], Config]]:
    """(every job's overrides, one validated Config per cell: the jobs that differ only by seed)."""
    overrides = [f"sweep={name}"] + (["scale=toy"] if scale == "toy" else [])
    jobs = expand(overrides)
    cells = {}
    for job in jobs:
        if without_seed(job) not in cells:
            cells[without_seed(job)] = to_config(compose_config(job))
    return jobs, cells


# ---------------------------------------------------------------- the sweep files

def test_every_sweep_file_is_tested():
    files = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
    assert files == sorted(SWEEPS), "add each conf/sweep/<name>.yaml to SWEEPS (and only those)"
    read_by_analysis = {sweep for sweep, _ in ALL_TABLES.values()} | {sweep for sweep, _ in ALL_FIGURES.values()}
    assert read_by_analysis <= set(files), "every sweep a table or figure reads needs a sweep file"


@pytest.mark.parametrize("name, scale", CASES)
def test_sweep_expands_to_valid_jobs(name, scale):
    expected = SWEEPS[name]
    jobs, cells = sweep_jobs(name, scale)
    assert len(jobs) == expected.jobs(scale)
    seeds = expected.seeds(scale)
    for cell in cells:  # each cell runs every seed, once
        assert sorted(seed_of(job) for job in jobs if without_seed(job) == cell) == seeds, cell

    configs = list(cells.values())
    assert all(cfg.sweep == name for cfg in configs)  # recorded in run.json: the tables select on it
    assert {expected.level(cfg) for cfg in configs} == expected.levels
    assert len({run_key(cfg) for cfg in configs}) == len(configs), "two cells would be the same run"
    backbones = {cfg.backbone.name for cfg in configs}
    if scale == "toy":
        assert backbones == {TINY} and all(cfg.backbone.tiny is not None for cfg in configs)
        assert {tuple(cfg.eval.benchmarks) for cfg in configs} == {("synthetic",)}
        assert all(cfg.rl.steps <= 5 and cfg.data.name == "synthetic" for cfg in configs)
    else:
        assert backbones == set(expected.backbones)
        assert {tuple(cfg.eval.benchmarks) for cfg in configs} == {
            ("mathvista", "mathverse", "mathvision", "mmmu", "mmmu_pro_standard", "mmmu_pro_vision")}
    if name not in ("main", "components", "table1"):
        assert {cfg.algorithm.name for cfg in configs} == {"care"}


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_file_mechanics(name):
    """The sweep key equals the file name, the file is a multirun, outputs go to multirun/<scale>/<name>."""
    for scale in SCALES:
        cfg = compose_config([f"sweep={name}", f"scale={scale}"], hydra=True)
        assert cfg.sweep == name
        assert cfg.hydra.mode.name == "MULTIRUN"
        assert cfg.hydra.runtime.choices["sweep_scale"] == scale
        assert str(cfg.hydra.sweep.dir).startswith(f"multirun/{scale}/{name}/")


def test_non_care_methods_do_not_multiply_by_care_knobs():
    """GRPO, DAPO, GSPO appear once per backbone and seed: no RGR or CARE axis crosses them."""
    jobs, cells = sweep_jobs("main", "full")
    per_method = {}
    for cfg in cells.values():
        per_method.setdefault(cfg.algorithm.name, []).append(cfg)
    assert {m: len(c) for m, c in per_method.items()} == {"grpo": 3, "dapo": 3, "gspo": 3, "care": 3}
    assert not any(cfg.rgr.enabled for m in ("grpo", "dapo", "gspo") for cfg in per_method[m])


def test_command_line_narrows_a_sweep():
    """Command-line values win over the file's params: `sweep=main backbone=qwen2_5_vl_7b seed=0`."""
    jobs = expand(["sweep=main", "backbone=qwen2_5_vl_7b", "seed=0"])
    assert len(jobs) == 4
    assert all("backbone=qwen2_5_vl_7b" in job and "seed=0" in job for job in jobs)


def test_plain_toy_multirun_is_not_reshaped():
    """Only sweep files include conf/sweep_scale: `-m scale=toy algorithm=grpo,care` stays 2 jobs."""
    assert len(expand(["scale=toy", "algorithm=grpo,care"])) == 2
    cfg = compose_config(["scale=toy"], hydra=True)
    assert "sweep_scale" not in cfg.hydra.runtime.choices and cfg.sweep is None


# ---------------------------------------------------------------- bad input

BAD_OVERRIDES = [
    (["care.k=0"], ["care.k", ">= 1"]),
    (["care.s=0"], ["care.s", "(0, 1]"]),
    (["care.s=1.5"], ["care.s", "(0, 1]"]),
    (["care.anchor=bogus"], ["care.anchor", "shortest_think, random, longest_think, max_logprob"]),
    (["rl.num_generations=1"], ["rl.num_generations", "[2, inf]"]),
    (["rgr.variant=bogus"], ["rgr.variant", "cue, no_cue, random"]),
    (["algorithm=bogus"], ["algorithm/bogus", "care", "dapo", "grpo", "gspo"]),
    (["sweep=bogus"], ["sweep/bogus", "main", "components", "negatives", "k_eq", "token_credit"]),
    # rollout=hf eval.engine=hf: the paper recipe's vLLM would fail first here (no vllm on CPU), naming the engine
    (["backbone=qwen2_5_vl_7b", "rollout=hf", "eval.engine=hf", "backbone.path=/does/not/exist"],
     ["backbone.path", "/does/not/exist", "directory of saved weights"]),
    (["backbone=qwen2_5_vl_7b", "cluster.gpus=3"], ["rl.micro_batch_size=4", "cluster.gpus=3"]),
]


@pytest.mark.parametrize("overrides, expected", BAD_OVERRIDES, ids=[" ".join(o) for o, _ in BAD_OVERRIDES])
def test_bad_overrides_fail_naming_key_and_accepted_values(overrides, expected):
    """What run.py does before any work: compose, validate (to_config), preflight."""
    from care.preflight import preflight

    with pytest.raises((HydraException, ValueError, FileNotFoundError)) as raised:
        preflight(to_config(compose_config(overrides)))
    message = str(raised.value)
    for text in expected:
        assert text in message, message


# ---------------------------------------------------------------- the analysis reads these runs

def write_sweep_runs(root: Path, name: str, scale: str) -> int:
    """A run dir per job with that job's real config (as run.json records it) and made-up scores."""
    jobs, cells = sweep_jobs(name, scale)
    count = 0
    for cell, cfg in cells.items():
        for seed in sorted(seed_of(job) for job in jobs if without_seed(job) == cell):
            job_cfg = dataclasses.replace(cfg, seed=seed)
            scores = {bench: 40.0 + seed + count % 7 for bench in job_cfg.eval.benchmarks}
            base = {b: 20.0 for b in scores} if job_cfg.eval.base else None  # table1's Base row
            write_run(root, f"{count}", seed=seed, config=job_cfg, run_key=run_key(job_cfg),
                      sweep=job_cfg.sweep, after=scores, before={b: 30.0 for b in scores}, steps=3, base=base)
            count += 1
    return count


@pytest.mark.parametrize("name, scale", CASES)
def test_table_reads_the_sweep_runs(tmp_path, name, scale):
    expected = SWEEPS[name]
    assert write_sweep_runs(tmp_path, name, scale) == expected.jobs(scale)
    runs, curves, problems = collect([tmp_path], quiet=True)
    assert problems.empty and len(runs) == expected.jobs(scale)

    table_sweep, make_table = ALL_TABLES[name]
    assert table_sweep == name
    table = make_table(runs, curves)
    seeds = len(expected.seeds(scale))
    scored = table.stats[table.stats["column"].str.startswith("after.")]
    if name == "table1":  # Base and Cold start rows: one shared score per backbone, not per seed
        shared = ~scored["method"].isin(expected.levels)
        assert set(scored[shared]["method"]) == {"Base", "Cold start"}
        assert (scored[shared]["n"] == 1).all()
        scored = scored[~shared]
    assert (scored["n"] == seeds).all()
    backbones = set(expected.backbones) if scale == "full" else {TINY}
    assert set(scored["backbone"]) == backbones
    if expected.column == "method":
        keys = ["method"]
        assert set(scored["method"]) == (expected.levels | {"Base"} if name == "main" else expected.levels)
    elif expected.column:
        keys = [expected.column]
        assert set(scored[expected.column]) == expected.levels
    else:  # k_eq: K x equalize
        keys = ["K", "equalize"]
        assert {(k, on == "on") for k, on in zip(scored["K"], scored["equalize"], strict=True)} == expected.levels
    cells = len(expected.levels) + (1 if name == "main" else 0)  # main adds a Base row per backbone
    if name == "table1":  # not a product: the paper's nine cells (toy: the 7B row's five)
        assert len(scored.drop_duplicates(["backbone", *keys])) == (9 if scale == "full" else 5)
        return
    assert len(scored.drop_duplicates(["backbone", *keys])) == cells * len(backbones)

    hue = {"main": "method", "rgr": "variant", "anchor": "anchor"}
    for figure, (figure_sweep, _) in ALL_FIGURES.items():
        if figure_sweep == name:
            data = run_table(runs, name)
            assert len(data) == expected.jobs(scale), figure
            assert set(data[hue[name]]) == set(expected.levels), figure


def test_a_non_care_run_is_labelled_by_its_algorithm_whatever_rgr_it_composed():
    """`python run.py algorithm=grpo rgr.enabled=true` records rgr.enabled true in run.json (the
    preset switches RGR off, a key on the command line wins); RGR only runs for CARE, so the
    tables must still call it GRPO, not 'GRPO + RGR'."""
    cfg = to_config(compose_config(["algorithm=grpo", "rgr.enabled=true"]))
    assert cfg.rgr.enabled and method_label(cfg.algorithm.name, cfg.rgr.enabled) == "GRPO"


def test_default_care_is_one_run_shared_by_every_sweep():
    """CARE with default options on Qwen2.5-VL-7B is a cell of every sweep, under one run_key:
    collect keeps one of them and every sweep's table may use it (the `sweeps` column)."""
    default = Config().care
    keys = {}
    for name in set(SWEEPS) - {"table1"}:  # table1 runs on the paper's data with the Base row: runs of its own
        _, cells = sweep_jobs(name, "full")
        keys[name] = {run_key(cfg) for cfg in cells.values()
                      if cfg.backbone.name == "qwen2_5_vl_7b" and cfg.algorithm.name == "care"
                      and rgr_level(cfg) == "cue" and cfg.care == default}
    assert all(len(found) == 1 for found in keys.values()), keys
    assert len(set.union(*keys.values())) == 1


def test_experiments_entry_for_every_sweep():
    """experiments/<name>.md pairs the sweep's commands (full, toy) with the analysis call."""
    index = (ROOT / "experiments" / "README.md").read_text()
    for name in SWEEPS:
        entry = (ROOT / "experiments" / f"{name}.md").read_text()
        assert f"python run.py sweep={name} " in entry and f"python run.py sweep={name} scale=toy" in entry
        assert f"python -m analysis.paper --runs multirun/full/{name} " in entry
        assert f"python -m analysis.paper --runs multirun/toy/{name} " in entry
        assert f"({name}.md)" in index
        for figure, (sweep, _) in ALL_FIGURES.items():
            assert (f"`{figure}`" in entry) == (sweep == name), (name, figure)


def test_paper_command_renders_every_toy_sweep(tmp_path):
    """`python -m analysis.paper --runs multirun/toy --seeds 3` on runs shaped like all toy sweeps."""
    from analysis.paper import main

    for name in SWEEPS:
        write_sweep_runs(tmp_path / "runs" / name, name, "toy")
    out = tmp_path / "paper"
    assert main(["--runs", str(tmp_path / "runs"), "--out", str(out), "--seeds", "3"]) == 0
    assert sorted(p.stem for p in (out / "tables").glob("*.md")) == sorted(ALL_TABLES)
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == sorted(ALL_FIGURES)


def test_table1_is_the_papers_cells_on_its_data_with_a_base_row():
    """sweep=table1: exactly the cells the paper reports, on care_mix with the SFT cold start and the six
    benchmarks, the Base row on; `seed=0,1,2` adds training seeds."""
    _, cells = sweep_jobs("table1", "full")
    got = sorted((cfg.backbone.name, method_label(cfg.algorithm.name, cfg.rgr.enabled)) for cfg in cells.values())
    assert got == sorted([("qwen2_5_vl_7b", m) for m in ("GRPO", "DAPO", "GSPO", "CARE w/o RGR", "CARE")]
                         + [("qwen2_5_vl_3b", m) for m in ("GRPO", "CARE w/o RGR", "CARE")]
                         + [("qwen3_vl_8b", "CARE")])
    assert all(cfg.data.name == "care_mix" and cfg.cold_start.name == "sft" and cfg.eval.base
               and cfg.eval.seeds == PAPER_SEEDS for cfg in cells.values())
    assert len(expand(["sweep=table1", "seed=0,1,2"])) == 27


@pytest.mark.parametrize("overrides", [
    ["sweep=main"], ["sweep=table1", "scale=toy"], ["sweep=k_eq", "seed=0"], ["sweep=main", "backbone=qwen2_5_vl_7b"],
    ["scale=toy", "algorithm=grpo,care", "seed=range(0,3)", "care.k=2,4", "algorithm=dapo,care"],
])
def test_task_plan_expands_a_sweep_as_hydras_basic_sweeper_does(overrides):
    """run.py's task=plan expands with Hydra's public override parser; the jobs are BasicSweeper's, in order."""
    from run import expand_sweep

    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    cfg = compose_config(fixed, hydra=True)
    params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()]
    assert expand_sweep(parser.parse_overrides(params + overrides)) == expand(overrides)


def test_what_changes_scores_changes_the_run_key_as_it_changes_the_eval_cache():
    """eval.batch_size keys the before-RL cache (scores move with batching), so it is part of a run's identity;
    where the files go (cache_dir) is not."""
    from dataclasses import replace

    from care.config import Config

    cfg = Config()
    assert run_key(replace(cfg, eval=replace(cfg.eval, batch_size=cfg.eval.batch_size * 2))) != run_key(cfg)
    assert run_key(replace(cfg, cache_dir="/elsewhere")) == run_key(cfg)
