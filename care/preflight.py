"""The checks every job passes before any work is queued (run.py for task=train|eval, the sweep launcher
for each job it would submit); task=plan reads no weights or data and never runs them.

Every problem found is reported in one message, so a paper-scale job is fixed in one round rather than
one key per retry: the engines, a real backbone on the synthetic task, the weights, the checkpoint, the
cold start, the training data (a record of each local copy) and each benchmark. The expensive check —
loading, deduplicating and filtering the whole training set (care.data.training.prepare) — runs last
and only when all the cheap ones passed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from care.config import Config

PROBLEMS = (ValueError, FileNotFoundError)  # what a check raises for a bad key or an unreachable file


def problems_message(problems: list[str]) -> str:
    """One line: a single problem as it is; several as `N problems: (1) ...; (2) ...`."""
    if len(problems) == 1:
        return problems[0]
    flat = (" ".join(problem.split()) for problem in problems)  # run.py prints `config error: ...` on one line
    return f"{len(problems)} problems: " + "; ".join(f"({n}) {problem}" for n, problem in enumerate(flat, 1))


def preflight(cfg: Config):
    """Raise naming every problem that would stop this job (see the module docstring). Returns the training
    data it prepared (care.data.training.TrainingData; None for task=eval), for the job to use as it is.

    One problem is raised as the check raised it; several as one ValueError (`problems_message`).
    """
    if cfg.task == "plan":
        return None
    errors: list[Exception] = []

    def check(step: Callable[..., object], *args) -> None:
        try:
            step(*args)
        except PROBLEMS as err:
            errors.append(err)

    errors += [ValueError(problem) for problem in engine_problems(cfg) + synthetic_problems(cfg)]
    if cfg.backbone.tiny is None and not cfg.checkpoint:
        from care.models import resolve_backbone

        check(resolve_backbone, cfg.backbone, cfg.cache_dir)
    if cfg.checkpoint and not (Path(cfg.checkpoint) / "config.json").is_file():
        errors.append(ValueError(f"checkpoint={cfg.checkpoint!r} holds no model (no config.json there); "
                                 "point it at a saved policy, e.g. <run_dir>/policy"))
    if cfg.task == "train":
        from care.coldstart import check_cold_start

        check(check_cold_start, cfg)
        errors += [ValueError(problem) for problem in training_data_problems(cfg)]
    from care.evaluation.harness import check_benchmarks_reachable

    benchmarks: list[str] = []
    check_benchmarks_reachable(cfg, benchmarks)
    errors += [FileNotFoundError(problem) for problem in benchmarks]
    data = None
    if not errors and cfg.task == "train":  # load, dedupe, filter and split the training data: bad data fails
        from care.data.training import prepare  # before any job starts (the job uses what this prepared)

        data = prepare(cfg)
        sft_set_check(cfg)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ValueError(problems_message([str(err) for err in errors]))
    return data


def engine_problems(cfg: Config) -> list[str]:
    """vLLM engines this machine cannot run (no vllm installed, no CUDA GPU), one problem per engine key."""
    import importlib.util

    engines = [("eval.engine", cfg.eval.engine, "eval.engine=hf")]
    if cfg.task == "train":  # task=eval never rolls out
        engines.insert(0, ("rollout.engine", cfg.rollout.engine, "rollout=hf"))
    wanted = [(key, fallback) for key, engine, fallback in engines if engine == "vllm"]
    if not wanted:
        return []
    import torch

    has_vllm, has_gpu = importlib.util.find_spec("vllm") is not None, torch.cuda.is_available()
    problems = []
    for key, fallback in wanted:
        if not has_vllm and not has_gpu:
            problems.append(f"{key}='vllm' needs vLLM and a CUDA GPU, and this machine has neither: run it on a GPU "
                            f"machine with pip install -r requirements-gpu.lock; or use {fallback}")
        elif not has_vllm:
            problems.append(f"{key}='vllm' needs vLLM (GPU machines): pip install -r requirements-gpu.lock; "
                            f"or use {fallback}")
        elif not has_gpu:
            problems.append(f"{key}='vllm' needs a CUDA GPU; on CPU use {fallback}")
    return problems


def synthetic_problems(cfg: Config) -> list[str]:
    """A real backbone trained on the synthetic boards: a paper-scale job that would measure nothing.

    cold_start=synthetic with a real data set is check_cold_start's to refuse (it names both keys).
    """
    if cfg.task != "train" or cfg.backbone.tiny is not None or cfg.data.name != "synthetic":
        return []
    keys = "data=synthetic" + (", cold_start=synthetic" if cfg.cold_start.name == "synthetic" else "")
    fix = "set data=care_mix with data.path or data_root=DIR"
    if cfg.cold_start.name == "synthetic":
        fix += ", and cold_start=sft with cold_start.path or data_root=DIR (or cold_start=checkpoint|none)"
    return [f"backbone={cfg.backbone.name} would train on the synthetic boards ({keys}): {fix}"]


def training_data_problems(cfg: Config) -> list[str]:
    """Read one record of the training data's local copy (care_mix: of each component's), or of its hub
    copy under HF_HUB_OFFLINE=1 (the cache answers at once). An online hub load is left to `prepare`:
    downloading a data set is no cheap check.
    """
    from care.hub import hub_offline

    if cfg.data.name == "synthetic" or not (cfg.data.path or hub_offline()):
        return []
    from care.data.adapters import get_spec
    from care.data.loading import load_records
    from care.data.training import selections

    data, problems = cfg.data, []
    root = Path(data.path).expanduser() if data.path else None
    components = get_spec(data.name).components
    if components and root is not None and not root.is_dir():
        parts = [(data.name, root)]  # load_records names the folder and what it must hold, reading nothing
    else:
        parts = [(name, root / name if root else None) for name in components] or [(data.name, root)]
    for name, path in parts:
        try:
            load_records(name, path=path, limit=1, selections=selections(data))  # finds every split asked for
        except (ValueError, OSError) as err:  # DatasetUnavailable, MalformedRow, an image that does not open
            problems.append(f"data={data.name}: {err}")
    return problems


def sft_set_check(cfg: Config) -> None:
    """Read and check every record and image of the cold start's SFT set (care.sft_files), so a bad line
    fails the sweep before it is queued, not when its cold-start job starts hours later. Skipped when that
    cold start is already built: its cache key covers the set's content, which was checked when it was."""
    if cfg.cold_start.name != "sft":
        return
    from care.coldstart import cold_start_dir
    from care.models import resolve_backbone
    from care.sft_files import check_sft_set

    cache_dir = Path(cfg.cache_dir).expanduser()
    built = cold_start_dir(cfg, resolve_backbone(cfg.backbone, cache_dir), cache_dir)
    if built is None or not (built / "config.json").is_file():
        check_sft_set(cfg.cold_start.path)
