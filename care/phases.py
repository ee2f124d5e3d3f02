"""A sweep as a small graph of phases: cold start -> before-RL evaluation -> RL runs (+ after-RL check).

A cold start is built once per backbone and cold-start content, and the policy it makes is scored
once before RL; every RL run that starts from it reuses both (their caches: care.cache.build_once).
The launchers (hydra_plugins/care_launcher) run these shared phases first: on SLURM each is a job of
its own and the runs are queued behind it (afterok), so no job holds GPUs waiting on another; with
submitit_local they are jobs run one after another, with cluster=local steps of the launching process.

Which jobs share a phase is decided from the config alone (`cold_start_identity`, `before_identity`):
no weights, data or GPU are needed, so `task=plan` groups a sweep the same way the launcher does. The
cache keys that decide whether a phase is already done (care.coldstart.cold_start_key,
care.evaluation.harness.before_key) also hash the content; two configs with one identity always
share one key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from care.config import Config
from care.hashing import config_hash

# the phases shared by a sweep's RL runs, in the order they run; BASE scores the backbone itself (eval.base)
COLD_START, BEFORE, BASE = "cold_start", "before", "base"


def builds_cold_start(cfg: Config) -> bool:
    """Whether this job's RL starts from a cold start that must be built (and can be shared)."""
    return cfg.task == "train" and cfg.cold_start.name in ("synthetic", "sft")


def cold_start_identity(cfg: Config) -> str:
    """What makes two jobs' cold starts the same build: backbone, cold-start settings (its own seed,
    never the RL seed), the data it is made from, and the cache it is kept in."""
    data = asdict(cfg.data) if cfg.cold_start.name == "synthetic" else None
    return config_hash("phase/cold_start/v1", asdict(cfg.backbone), asdict(cfg.cold_start), data,
                       cfg.rl.max_prompt_length if data else None, _cache(cfg))


def before_identity(cfg: Config) -> str:
    """What makes two jobs' before-RL scores the same: the cold start, the protocol and benchmarks, and the
    held-out slice of the training data (its data settings and prompt limit). Never the job's width."""
    ev = asdict(cfg.eval)
    return config_hash("phase/before/v1", cold_start_identity(cfg), cfg.cold_start.name, ev, asdict(cfg.data),
                       cfg.rl.max_prompt_length, cfg.rl.compute_dtype, asdict(cfg.backbone))


def base_identity(cfg: Config) -> str:
    """What makes two jobs' Base scores (the backbone before any cold start) the same: the backbone, the
    protocol under the Base answer rule, the benchmarks and the held-out slice."""
    return config_hash("phase/base/v1", asdict(cfg.backbone), asdict(cfg.eval), asdict(cfg.data),
                       cfg.rl.max_prompt_length, cfg.rl.compute_dtype, _cache(cfg))


def _cache(cfg: Config) -> str:
    return str(Path(cfg.cache_dir).expanduser().resolve())


@dataclass
class StartingPoint:
    """What every phase of a job starts from: its prepared data and the policy RL starts from."""

    data: object  # care.data.training.TrainingData
    policy_dir: str
    backbone_dir: str


def starting_point(cfg: Config, data=None, build: bool = True) -> StartingPoint:
    """The cold start RL starts from (with `build`: built, or reused from the cache) and the data it came
    from: `data` as the caller prepared it (care.data.training.TrainingData), or prepared here."""
    from care.coldstart import cold_start_policy
    from care.data.training import prepare
    from care.models import resolve_backbone

    data = data if data is not None else prepare(cfg)
    backbone_dir = resolve_backbone(cfg.backbone, Path(_cache(cfg)))
    policy_dir = cold_start_policy(cfg, data.train, backbone_dir, Path(_cache(cfg))) if build else backbone_dir
    return StartingPoint(data=data, policy_dir=policy_dir, backbone_dir=backbone_dir)


def cold_start_state(cfg: Config) -> str:
    """What the cold start phase will do, for the console: reuse a built one, build it, or start from what
    is given (care.console.header)."""
    from care.coldstart import cold_start_dir
    from care.models import resolve_backbone

    if cfg.cold_start.name == "none":
        return "none (RL starts from the backbone)"
    if cfg.cold_start.name == "checkpoint":
        return f"given: {cfg.cold_start.checkpoint}"
    built = cold_start_dir(cfg, resolve_backbone(cfg.backbone, Path(_cache(cfg))), Path(_cache(cfg)))
    state = "reusing" if (built / "config.json").is_file() else "building"
    return f"{state} {cfg.cold_start.name} ({built})"


def base_config(cfg: Config) -> Config:
    """The config the Base row is scored under: the same protocol with eval.base_extraction's answer rule."""
    return replace(cfg, eval=replace(cfg.eval, extraction=cfg.eval.base_extraction))


def base_scores(cfg: Config, backbone_dir: str, benchmarks: dict, macro_of: list[str], eval_dir=None) -> dict:
    """The backbone's own scores under the Base answer rule, scored once and cached beside the before-RL
    scores (care.evaluation.harness.before_rl); the run's eval/ gets `base-*` sample files."""
    from care.evaluation.harness import before_rl

    return before_rl(base_config(cfg), backbone_dir, benchmarks, macro_of, eval_dir, tag="base-")


def phase_done(phase: str, cfg: Config) -> bool:
    """Whether a shared phase's result is already in the cache (then no job is queued for it).

    Decided by the same content keys the jobs use, so it loads the data and reads the SFT files, but
    no weights; a before-RL phase is never done while its cold start is not built.
    """
    from care.coldstart import cold_start_dir, cold_start_policy
    from care.data.training import prepare
    from care.evaluation.harness import before_after_benchmarks, before_dir
    from care.models import resolve_backbone

    backbone_dir = resolve_backbone(cfg.backbone, Path(_cache(cfg)))
    if phase == BASE:
        policy_dir, scored_as, tag = backbone_dir, base_config(cfg), "base-"
    else:
        built = cold_start_dir(cfg, backbone_dir, Path(_cache(cfg)))
        if built is not None and not (built / "config.json").is_file():
            return False
        if phase == COLD_START:
            return True
        # built: its folder; cold_start=none or checkpoint: what RL starts from, nothing to build
        policy_dir = str(built) if built is not None else cold_start_policy(cfg, [], backbone_dir, Path(_cache(cfg)))
        scored_as, tag = cfg, "before-"
    benchmarks, macro_of = before_after_benchmarks(cfg, prepare(cfg).held_out)
    return (before_dir(scored_as, policy_dir, benchmarks, macro_of, tag) / "eval_metrics.json").is_file()


@dataclass
class Phase:
    """One shared phase of a sweep: built from `cfg` (the first job that needs it) for the jobs at
    `positions`, after the phases whose keys are in `needs`."""

    kind: str  # BASE, COLD_START or BEFORE
    key: str
    cfg: Config
    positions: list[int]
    needs: list[str]

    def describe(self) -> str:
        cs, ev = self.cfg.cold_start, self.cfg.eval
        if self.kind == BASE:
            return (f"{self.cfg.backbone.name} itself, eval={'+'.join(ev.benchmarks)} x {len(ev.seeds)} seed(s) "
                    f"under eval.base_extraction={ev.base_extraction}")
        what = f"{self.cfg.backbone.name}, cold_start={cs.name} (cold_start.seed={cs.seed})"
        if self.kind == BEFORE:
            what += f", eval={'+'.join(ev.benchmarks)} x {len(ev.seeds)} seed(s)"
        return what


def pending_phases(jobs: list[Config], skip_done: bool = True) -> list[Phase]:
    """The shared phases of a sweep's jobs (cold starts first, then before-RL evaluations), one per
    identity, leaving out (with `skip_done`) those already in the cache. Only training jobs share phases."""
    import logging

    phases: dict[str, Phase] = {}
    for position, cfg in enumerate(jobs):
        if cfg.task != "train":
            continue
        wanted = [(BASE, base_identity(cfg), [])] if cfg.eval.base else []
        cold_start = [cold_start_identity(cfg)] if builds_cold_start(cfg) else []
        wanted += [(COLD_START, key, []) for key in cold_start] + [(BEFORE, before_identity(cfg), cold_start)]
        for kind, key, needs in wanted:
            phases.setdefault(key, Phase(kind, key, cfg, [], needs)).positions.append(position)
    ordered = sorted(phases.values(), key=lambda phase: phase.kind == BEFORE)  # cold starts before their scores
    if not skip_done:
        return ordered
    pending = []
    for phase in ordered:
        try:
            done = phase_done(phase.kind, phase.cfg)
        except Exception as err:  # cannot tell (e.g. a hub backbone not cached here): let the job decide
            logging.getLogger(__name__).info("cannot tell whether %s is done (%s); queueing it", phase.kind, err)
            done = False
        if done:
            logging.getLogger(__name__).info("shared phase %s for jobs %s is in the cache already: %s",
                                             phase.kind, phase.positions, phase.describe())
        else:
            pending.append(phase)
    return pending


def run_phase(phase: str, config: dict, configure_logging: bool = False) -> dict:
    """Run one shared phase (in a launcher's process, or as a job of its own with `configure_logging`):
    every task of the job joins its process group, rank 0 writes into the cache. Returns where the
    result is."""
    import logging

    from care.config import config_from_dict
    from care.distributed import join_process_group, leave_process_group
    from care.seeding import seed_everything

    if configure_logging:  # a submitted job has no Hydra to set logging up
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
                            force=True)
    cfg = config_from_dict(config)
    join_process_group()
    seed_everything(cfg.cold_start.seed, cfg.threads)
    start = starting_point(cfg, build=phase != BASE)  # a phase's job is its own entry: it prepares the data
    result = {"phase": phase, "policy_dir": start.policy_dir}
    if phase in (BASE, BEFORE):
        from care.evaluation.harness import before_after_benchmarks, before_rl

        benchmarks, macro_of = before_after_benchmarks(cfg, start.data.held_out)
        scores = base_scores(cfg, start.backbone_dir, benchmarks, macro_of) if phase == BASE \
            else before_rl(cfg, start.policy_dir, benchmarks, macro_of, None)
        result["macro"] = scores["macro"]["mean"]
    logging.getLogger(__name__).info("%s phase done: %s", phase, result)
    leave_process_group()
    return result
