"""Launchers for CARE sweeps: every job checked before any is queued, resources per backbone, and
jobs that run from a code snapshot.

Hydra hands each job's config to the task function only when the job runs, so a bad value in
one job of a sweep (`care.k=0,2`) would surface hours later on the cluster, or after the jobs
before it had run. These launchers compose and validate every job first (the typed Config and
run.py's preflight) and queue nothing when one fails.

Hydra's submitit launcher resolves its settings once per sweep, so a sweep over backbones would
ask for the 7B model's GPUs for every job. These launchers compose each job's config, look up
`per_backbone[<backbone choice>]`, and submit one job array per distinct set of resources.

With `snapshot: true` the tracked files of the repository (edits included) are copied into
`<sweep dir>/.code` before submitting, and the jobs run there: code edited after
`python run.py -m ...` returns cannot change a queued or requeued job. The copy is made in
Python (`CodeSnapshot`): submitit's RsyncSnapshot needs an rsync binary a fresh machine lacks.
Relative paths in a job's config (`cache_dir`, weights, data) still mean the directory the
sweep was launched from: the launcher passes it to the jobs as `CARE_LAUNCH_DIR` (see run.py).

A sweep is a small graph of phases (care.phases): each distinct cold start is built once, its policy
is scored once before RL, and the RL runs start from both. These launchers run the shared phases
first: `cluster=local` in sequence in the launching process (where its runs run too); `submitit_local` as
jobs of their own, one after another, as wide as the runs; `cluster=slurm` as jobs of their own (resources: `phases.cold_start` / `phases.eval` over the backbone's), with the RL
jobs queued behind them (`--dependency=afterok`, `--kill-on-invalid-dep=yes`: a failed cold start
cancels what needed it), so no job holds GPUs waiting for another. The whole graph is submitted at
once; `wait: false` returns after submitting. Phases already in the cache are not queued again.

Hydra only loads launchers from the `hydra_plugins` namespace, hence this package's location.
"""

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)

# No `from __future__ import annotations` in this module: Hydra executes it outside sys.modules,
# where dataclasses cannot resolve string annotations.


@dataclass
class BackboneResources:
    """What one job of this backbone asks for; None keeps the launcher's own value, and
    gpus_per_node: 0 asks for no GPU at all."""

    gpus_per_node: int | None = None
    tasks_per_node: int | None = None  # one task per GPU: torch.distributed reads the task layout
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    timeout_min: int | None = None


@dataclass
class PhaseResources:
    """What a shared phase's job asks for, on top of its backbone's RL resources (per_backbone)."""

    cold_start: BackboneResources = field(default_factory=BackboneResources)
    eval: BackboneResources = field(default_factory=BackboneResources)


GPU_REQUESTS = ("gres", "constraint", "none")


@dataclass
class CareQueueConf:
    snapshot: bool = False
    per_backbone: dict[str, BackboneResources] = field(default_factory=dict)
    phases: PhaseResources = field(default_factory=PhaseResources)
    wait: bool = True  # false: submit the whole graph, print the job ids and return
    # how cluster.gpu reaches SLURM: gres (--gpus-per-node=<type>:<n>), constraint (--constraint=<type>) or none;
    # gpu_types maps cluster.gpu to the site's name for it (default: the same word)
    gpu_request: str = "gres"
    gpu_types: dict[str, str] = field(default_factory=dict)


@dataclass
class CareSlurmQueueConf(SlurmQueueConf, CareQueueConf):
    _target_: str = "hydra_plugins.care_launcher.care_launcher.CareSlurmLauncher"
    snapshot: bool = True  # a queued SLURM job may start hours later


@dataclass
class CareLocalQueueConf(LocalQueueConf, CareQueueConf):
    _target_: str = "hydra_plugins.care_launcher.care_launcher.CareLocalLauncher"


@dataclass
class CareBasicLauncherConf:
    _target_: str = "hydra_plugins.care_launcher.care_launcher.CareBasicLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="care_slurm", node=CareSlurmQueueConf, provider="care")
ConfigStore.instance().store(group="hydra/launcher", name="care_local", node=CareLocalQueueConf, provider="care")
ConfigStore.instance().store(group="hydra/launcher", name="care_basic", node=CareBasicLauncherConf, provider="care")


LAUNCH_DIR_ENV = "CARE_LAUNCH_DIR"  # read by run.py: relative config paths resolve against it


def plain(value: Any) -> Any:
    """A launcher setting as plain Python (Hydra hands them over as DictConfig)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def config_error(message: str) -> SystemExit:
    """Report a bad sweep the way run.py reports a bad run: one line on stderr, exit status 2."""
    print(f"config error: {message}; nothing was queued", file=sys.stderr)
    return SystemExit(2)


class JobChecks:
    """Compose and validate every job of a sweep before the first one starts or is queued."""

    def checked_job_configs(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        """Each job's composed config, after its typed config passed every check; the typed ones are
        kept in `self.typed` for the phase graph."""
        from care.config import config_from_dict, make_paths_absolute
        from care.data_root import apply_data_root
        from care.preflight import preflight, problems_message

        configs, preflighted = [], set()
        self.typed = []
        for position, overrides in enumerate(job_overrides):
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            job = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
            try:
                # paths as the jobs will read them: relative ones mean the directory the sweep was launched from
                job = make_paths_absolute(config_from_dict(job), lambda path: str(Path(path).expanduser().absolute()))
                problems = apply_data_root(job, check=job.task != "plan")  # data_root fills the unset data keys
                if problems:
                    raise ValueError(problems_message(problems))
                # what preflight looks at; a 60-job sweep over 3 backbones checks 3 backbones
                self.check_resources(job)
                key = repr((job.task, job.backbone, job.checkpoint, job.rollout, job.eval, job.cold_start, job.data))
                if key not in preflighted:
                    preflight(job)
                    preflighted.add(key)
            except (ValueError, FileNotFoundError) as err:
                raise config_error(f"sweep job #{initial_job_idx + position} "
                                   f"({' '.join(filter_overrides(list(overrides)))}): {err}") from err
            configs.append(config)
            self.typed.append(job)
        return configs

    def shared_phases(self) -> list:
        """The phases the checked jobs share and the cache does not hold yet (care.phases), in order."""
        from care.phases import pending_phases

        phases = pending_phases(self.typed)
        for phase in phases:
            log.info(f"shared phase {phase.kind} for jobs {phase.positions}: {phase.describe()}")
        return phases

    def run_phases_here(self) -> None:
        """Run the shared phases in sequence in this process, before any job (cluster=local, whose jobs run
        in this process too)."""
        from dataclasses import asdict

        from care.phases import run_phase

        for phase in self.shared_phases():
            run_phase(phase.kind, asdict(phase.cfg))

    def check_resources(self, job) -> None:
        """Refuse a job that cannot fit the GPUs it would get; only a launcher that gives GPUs knows."""


class CareBasicLauncher(JobChecks, BasicLauncher):
    """Hydra's sequential launcher (`cluster=local`), after every job passed its checks."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        self.checked_job_configs(job_overrides, initial_job_idx)
        self.run_phases_here()
        return super().launch(job_overrides, initial_job_idx)


class CareLaunching(JobChecks):
    """The launch step shared by the local and SLURM launchers (mixed in before Hydra's class)."""

    def __init__(self, snapshot: bool = False, per_backbone: Any = None, phases: Any = None, wait: bool = True,
                 gpu_request: str = "gres", gpu_types: Any = None, **params: Any) -> None:
        super().__init__(**params)
        self.snapshot, self.wait = snapshot, wait
        if gpu_request not in GPU_REQUESTS:
            raise config_error(f"hydra.launcher.gpu_request={gpu_request!r} is not accepted; "
                               f"choose one of {', '.join(GPU_REQUESTS)}")
        self.gpu_request, self.gpu_types = gpu_request, dict(plain(gpu_types) or {})
        self.per_backbone = {name: {k: v for k, v in dict(res).items() if v is not None}
                             for name, res in (plain(per_backbone) or {}).items()}
        self.phase_resources = {name: {k: v for k, v in dict(res or {}).items() if v is not None}
                                for name, res in (plain(phases) or {}).items()}

    def job_resources(self, config, typed, phase: str | None = None) -> tuple:
        """A job's launcher settings that differ by backbone (and, for a shared phase's job, by phase),
        with the GPU type cluster.gpu asks for, as a hashable key."""
        backbone = config.hydra.runtime.choices.get("backbone") if config is not None else typed.backbone.name
        resources = {**self.per_backbone.get(backbone, {}), **(self.phase_resources.get(phase, {}) if phase else {})}
        gpus = resources.get("gpus_per_node", self.params.get("gpus_per_node"))
        gpu_type = self.gpu_types.get(typed.cluster.gpu, typed.cluster.gpu)
        if not gpus or self._EXECUTOR != "slurm":
            pass
        elif self.gpu_request == "gres":
            resources["gpus_per_node"] = f"{gpu_type}:{gpus}"
        elif self.gpu_request == "constraint":
            own = self.params.get("constraint")
            resources["constraint"] = f"{own}&{gpu_type}" if own else gpu_type
        return tuple(sorted(resources.items()))

    def check_per_backbone(self) -> None:
        known = set(self.hydra_context.config_loader.get_group_options("backbone"))
        unknown = sorted(set(self.per_backbone) - known)
        if unknown:
            raise config_error(f"hydra.launcher.per_backbone names unknown backbone(s) {unknown}; "
                               f"accepted: {sorted(known)}")

    def executor_params(self, resources: dict) -> dict:
        """submitit's parameter names for the launcher's settings with this group's resources on top."""
        init_keys = {"submitit_folder", "max_num_timeout"}
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        merged = {**{k: v for k, v in self.params.items() if k not in init_keys}, **resources}
        if merged.get("gpus_per_node") == 0:
            merged["gpus_per_node"] = None
        return {k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in merged.items()}

    def after(self, job_ids: list[str]) -> dict:
        """submitit parameters that queue a job behind `job_ids` (none: no dependency) and cancel it if one
        of them fails; every submission sets them, since the executor keeps what the one before set."""
        if self._EXECUTOR != "slurm":
            return {}
        own = dict(self.params.get("additional_parameters") or {})
        if not job_ids:
            return {"slurm_dependency": None, "slurm_additional_parameters": own}
        return {"slurm_dependency": "afterok:" + ":".join(job_ids),
                "slurm_additional_parameters": {**own, "kill_on_invalid_dep": "yes"}}

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        self.check_per_backbone()
        configs = self.checked_job_configs(job_overrides, initial_job_idx)
        # absolute paths first: jobs running from the snapshot must still write beside the sweep
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        with open_dict(self.config):
            self.config.hydra.sweep.dir = str(sweep_dir)
        self.params["submitit_folder"] = str(Path(self.params["submitit_folder"]).absolute())
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))

        phases = self.shared_phases()
        in_order = self._EXECUTOR != "slurm"  # submitit's local executor has no dependencies: wait for each phase

        with self.code_snapshot(sweep_dir):
            executor = submitit.AutoExecutor(
                cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]}
                if "max_num_timeout" in self.params else {})
            phase_jobs = self.submit_phases(executor, phases, in_order)
            needs = {position: [phase_jobs[phase.key].job_id for phase in phases if position in phase.positions]
                     for position in range(len(configs))}
            groups = {}
            for position, config in enumerate(configs):
                key = (self.job_resources(config, self.typed[position]), tuple(needs[position]))
                groups.setdefault(key, []).append(position)
            jobs = {}
            for (resources, after), positions in groups.items():
                executor.update_parameters(**{**self.executor_params(dict(resources)), **self.after(list(after))})
                job_params = []
                for position in positions:
                    idx = initial_job_idx + position
                    overrides = list(job_overrides[position])
                    log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}"
                             + (f"  [{', '.join(f'{k}={v}' for k, v in resources)}]" if resources else "")
                             + (f"  after {', '.join(after)}" if after else ""))
                    job_params.append((overrides, "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                                       Singleton.get_state()))
                for position, job in zip(positions, executor.map_array(self, *zip(*job_params, strict=True)), strict=True):
                    jobs[position] = job
        if not self.wait:
            log.info(f"submitted {len(phase_jobs)} shared phase job(s) and {len(jobs)} run(s); not waiting "
                     "(hydra.launcher.wait=false)")
            return [JobReturn(overrides=list(job_overrides[position]), status=JobStatus.COMPLETED,
                              _return_value=jobs[position].job_id) for position in range(len(job_overrides))]
        self.wait_for_phases(phases, phase_jobs, list(jobs.values()))
        return [jobs[position].results()[0] for position in range(len(job_overrides))]

    def submit_phases(self, executor, phases: list, in_order: bool = False) -> dict:
        """Queue one job per shared phase, each behind the phases it needs (`in_order`: wait for each before
        the next, where the executor has no dependencies); returns them by phase key. A phase job has the
        width of its backbone's runs, so a sharded cold start is sharded as the runs would be."""
        from dataclasses import asdict

        submitted = {}
        for phase in phases:
            resources = self.job_resources(None, phase.cfg, phase="eval" if phase.kind in ("before", "base") else phase.kind)
            after = [submitted[key].job_id for key in phase.needs if key in submitted]
            executor.update_parameters(**{**self.executor_params(dict(resources)), **self.after(after),
                                          "name": f"care-{phase.kind}"})
            submitted[phase.key] = executor.submit(PhaseJob(), phase.kind, asdict(phase.cfg))
            log.info(f"\tshared phase {phase.kind} (jobs {phase.positions}): job {submitted[phase.key].job_id}"
                     + (f" after {', '.join(after)}" if after else ""))
            if in_order:
                self.wait_for_phases([phase], submitted, runs=[])
        return submitted

    def wait_for_phases(self, phases: list, phase_jobs: dict, runs: list) -> None:
        """Wait for each shared phase; if one failed, cancel every run (SLURM cancels those behind it too)
        and fail naming the phase and its log."""
        for phase in phases:
            job = phase_jobs[phase.key]
            try:
                job.results()  # every task's: a multi-task phase fails if any of its tasks does
            except Exception as err:
                for run in runs:
                    run.cancel(check=False)
                raise RuntimeError(f"shared phase {phase.kind} (job {job.job_id}, log {job.paths.stderr}) failed, "
                                   f"so its runs were cancelled: {err}") from err

    def code_snapshot(self, sweep_dir: Path):
        """A context in which submitted jobs start from a copy of the repository's tracked files."""
        import contextlib

        if not self.snapshot:
            return contextlib.nullcontext()
        root = Path(__file__).resolve().parents[2]
        if not (root / ".git").exists():
            raise config_error(f"hydra.launcher.snapshot=true copies a git checkout, and {root} is not one; "
                               "set hydra.launcher.snapshot=false")
        if shutil.which("git") is None:
            raise config_error("hydra.launcher.snapshot=true needs git on PATH to list the tracked files; "
                               "install git or set hydra.launcher.snapshot=false")
        log.info(f"code snapshot: {sweep_dir / '.code'}")
        return CodeSnapshot(snapshot_dir=sweep_dir / ".code", root_dir=root)


class CodeSnapshot:
    """Copy the repository's tracked files, as they are in the working tree, into `snapshot_dir`, and
    submit from there (the working directory, so jobs import the copy).

    The copy is a shallow `git clone` of the committed state (so a job can still report its commit)
    with the working tree's tracked files copied over it (so uncommitted edits run too, and the job
    reports itself dirty). Untracked files are not copied: `git add` a new file first. Needs git, not
    rsync. Launched from the directory the user ran `python run.py -m` in, jobs get it as
    `CARE_LAUNCH_DIR`, so relative paths in their config do not resolve inside the snapshot.
    """

    def __init__(self, snapshot_dir: Path, root_dir: Path) -> None:
        self.snapshot_dir = Path(snapshot_dir).absolute()
        self.root_dir = Path(root_dir)
        self.saved: tuple[str, str | None] | None = None

    def tracked_files(self) -> list[str]:
        listing = subprocess.run(["git", "ls-files", "-z", "--cached"], cwd=self.root_dir,
                                 capture_output=True, check=True).stdout
        return [name for name in listing.decode().split("\0") if name]

    def copy(self) -> int:
        if not self.snapshot_dir.exists():
            self.snapshot_dir.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "clone", "--quiet", "--depth=1", f"file://{self.root_dir}",
                            str(self.snapshot_dir)], check=True, capture_output=True)
        copied = 0
        for name in self.tracked_files():
            source, target = self.root_dir / name, self.snapshot_dir / name
            if source.is_dir() and not source.is_symlink():  # a submodule: not part of the snapshot
                continue
            if not source.exists() and not source.is_symlink():  # deleted in the working tree
                target.unlink(missing_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or (target.exists() and source.is_symlink()):
                target.unlink()
            shutil.copy2(source, target, follow_symlinks=False)
            copied += 1
        return copied

    def __enter__(self) -> "CodeSnapshot":
        self.copy()
        self.saved = (os.getcwd(), os.environ.get(LAUNCH_DIR_ENV))
        os.environ[LAUNCH_DIR_ENV] = self.saved[1] or self.saved[0]
        os.chdir(self.snapshot_dir)
        return self

    def __exit__(self, *exc: object) -> None:
        cwd, launch_dir = self.saved
        os.chdir(cwd)
        if launch_dir is None:
            os.environ.pop(LAUNCH_DIR_ENV, None)
        else:
            os.environ[LAUNCH_DIR_ENV] = launch_dir


class CareSlurmLauncher(CareLaunching, SlurmLauncher):
    def check_resources(self, job) -> None:
        """The plan (care.plan) against what each of this job's SLURM jobs gets, before anything is queued:
        memory against the GPU type's, wall hours against timeout_min x (max_num_timeout + 1), for the run
        and for the shared phases it needs. Nobody should learn from an OOM or a last timeout after a day in
        the queue (cluster.require_fit=false overrides)."""
        from care.phases import builds_cold_start
        from care.plan import check_fits, launcher_gpus, launcher_time_limit

        launcher = {**self.params, "per_backbone": self.per_backbone, "phases": self.phase_resources}
        phases = [(None, None)]
        if job.task == "train":
            phases += [("cold_start", "cold_start")] if builds_cold_start(job) else []
            phases += [("eval", "eval")]
        for resources, phase in phases:
            gpus = launcher_gpus(launcher, job.backbone.name, resources)
            if gpus:
                check_fits(job, gpus, launcher_time_limit(launcher, job.backbone.name, resources), phase=phase)


class CareLocalLauncher(CareLaunching, LocalLauncher):
    pass


class PhaseJob:
    """A shared phase as a SLURM job: runs care.phases.run_phase; on the time-limit signal submitit asks
    it for a checkpoint and requeues it as it is (the cold start resumes from its own checkpoints)."""

    def __call__(self, kind: str, config: dict) -> dict:
        from care.phases import run_phase

        return run_phase(kind, config, configure_logging=True)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
