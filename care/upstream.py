"""Every internal of Hydra, its submitit launcher, submitit and W&B the suite relies on, in one list.

TRL's are stated apart, with their batch keys (care.trainer.trl_surface). The rest are few, but none
is promised by its library: a private module, a launcher method this suite re-implements, the record
format of W&B's offline files. Each entry says where it is used and why; `surface_problems()` checks
the installed packages, and tests/test_upstream_surface.py fails naming what moved after an upgrade,
instead of a sweep failing on a cluster. `VERIFIED` is the version each list was checked against (the
lock's); `LAUNCH_SOURCE_SHA` pins the upstream `BaseSubmititLauncher.launch` that
hydra_plugins/care_launcher's `CareLaunching.launch` was rewritten from: when upstream's changes, its
changes may need carrying over, and the test says so.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Internal:
    """`module`:`attribute` (dotted inside the module) must exist; `used_by` says where and why."""

    package: str  # the distribution, as pip names it
    module: str
    attribute: str
    used_by: str


VERIFIED = {"hydra-core": "1.3.8", "hydra-submitit-launcher": "1.2.0", "submitit": "1.5.4", "wandb": "0.31.0"}

INTERNALS = (
    Internal("hydra-core", "hydra._internal.core_plugins.basic_launcher", "BasicLauncher",
             "hydra_plugins/care_launcher: cluster=local checks every job, then runs them as Hydra's basic launcher"),
    Internal("hydra-core", "hydra.core.singleton", "Singleton.get_state",
             "hydra_plugins/care_launcher: a submitted job carries Hydra's singletons, as the submitit launcher does"),
    Internal("hydra-core", "hydra.core.utils", "filter_overrides",
             "hydra_plugins/care_launcher: the overrides a refused job is named by"),
    Internal("hydra-core", "hydra.core.utils", "JobReturn", "hydra_plugins/care_launcher: what launch returns"),
    Internal("hydra-core", "hydra._internal.config_loader_impl", "ConfigLoaderImpl.load_sweep_config",
             "hydra_plugins/care_launcher: each job's config is composed (and validated) before any is queued"),
    Internal("hydra-core", "hydra._internal.config_loader_impl", "ConfigLoaderImpl.get_group_options",
             "hydra_plugins/care_launcher: per_backbone keys are checked against conf/backbone"),
    Internal("hydra-core", "hydra.core.override_parser.overrides_parser", "OverridesParser.parse_overrides",
             "run.py task=plan: the command line's sweeps are expanded into jobs without launching"),
    Internal("hydra-submitit-launcher", "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
             "BaseSubmititLauncher.launch", "hydra_plugins/care_launcher: CareLaunching.launch rewrites it "
             "(shared phases, per-backbone arrays, afterok dependencies); LAUNCH_SOURCE_SHA pins the original"),
    Internal("hydra-submitit-launcher", "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
             "BaseSubmititLauncher.__call__", "hydra_plugins/care_launcher: each submitted job runs it"),
    Internal("hydra-submitit-launcher", "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
             "BaseSubmititLauncher.checkpoint", "hydra_plugins/care_launcher: a preempted job is requeued"),
    Internal("hydra-submitit-launcher", "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
             "SlurmLauncher._EXECUTOR", "hydra_plugins/care_launcher: the executor name prefixes submitit's keys"),
    Internal("hydra-submitit-launcher", "hydra_plugins.hydra_submitit_launcher.config", "SlurmQueueConf",
             "hydra_plugins/care_launcher: CareSlurmQueueConf extends it (conf/cluster/slurm.yaml)"),
    Internal("hydra-submitit-launcher", "hydra_plugins.hydra_submitit_launcher.config", "LocalQueueConf",
             "hydra_plugins/care_launcher: CareLocalQueueConf extends it (conf/cluster/submitit_local.yaml)"),
    Internal("submitit", "submitit", "AutoExecutor.map_array",
             "hydra_plugins/care_launcher: one job array per distinct set of resources"),
    Internal("submitit", "submitit.helpers", "DelayedSubmission", "hydra_plugins/care_launcher: requeue on timeout"),
    Internal("submitit", "submitit", "JobEnvironment",
             "care/distributed.py: the task layout of a multi-task job (one task per GPU)"),
    Internal("submitit", "submitit.helpers", "TorchDistributedEnvironment.export",
             "care/distributed.py: RANK, WORLD_SIZE, MASTER_ADDR for torch.distributed from SLURM's environment"),
    Internal("wandb", "wandb.proto.wandb_internal_pb2", "Record",
             "analysis/wandb_offline.py: offline .wandb files are read record by record, with no W&B server"),
    Internal("wandb", "wandb.proto.wandb_internal_pb2", "HistoryRecord",
             "analysis/wandb_offline.py: each logged step of an offline run"),
)

# sha256 of inspect.getsource(BaseSubmititLauncher.launch) in hydra-submitit-launcher 1.2.0
LAUNCH_SOURCE_SHA = "546875669010f80d6ceede740e8bf2d18088cf5bcce2eb4794c735fa3dc2fc0e"


def launch_source_sha() -> str:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

    return hashlib.sha256(inspect.getsource(BaseSubmititLauncher.launch).encode()).hexdigest()


def surface_problems(internals=INTERNALS) -> list[str]:
    """One line per internal that is missing, and per package whose installed version is not VERIFIED."""
    problems = []
    for package, version in VERIFIED.items():
        installed = importlib.metadata.version(package)
        if installed != version:
            problems.append(f"{package} {installed} is installed; care/upstream.py was checked against {version}: "
                            "check every entry of INTERNALS for it, then update VERIFIED")
    for internal in internals:
        try:
            target = importlib.import_module(internal.module)
        except ImportError as err:
            problems.append(f"{internal.module} cannot be imported ({err}); used by {internal.used_by}")
            continue
        for part in internal.attribute.split("."):
            if not hasattr(target, part):
                problems.append(f"{internal.module}.{internal.attribute} is gone (no {part!r}); used by "
                                f"{internal.used_by}")
                break
            target = getattr(target, part)
    return problems
