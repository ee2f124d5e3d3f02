"""The Hydra, submitit-launcher, submitit and W&B internals the suite relies on (care/upstream.py) hold
for the installed versions, and each check can fail."""

import dataclasses
import re
from pathlib import Path

from care import upstream
from care.upstream import INTERNALS, LAUNCH_SOURCE_SHA, Internal, launch_source_sha, surface_problems

ROOT = Path(__file__).resolve().parents[1]


def test_every_stated_internal_exists_in_the_installed_packages():
    assert surface_problems() == []


def test_the_launch_our_launcher_rewrites_is_the_one_it_was_rewritten_from():
    assert launch_source_sha() == LAUNCH_SOURCE_SHA, (
        "hydra-submitit-launcher's BaseSubmititLauncher.launch changed: compare it with "
        "hydra_plugins/care_launcher CareLaunching.launch, carry its changes over, then update LAUNCH_SOURCE_SHA")


def test_a_moved_internal_and_a_new_version_are_named(monkeypatch):
    moved = Internal("hydra-core", "hydra.core.utils", "no_such_helper", "nowhere")
    gone = Internal("wandb", "wandb.proto.no_such_module", "Record", "nowhere")
    problems = surface_problems((moved, gone))
    assert problems[0] == "hydra.core.utils.no_such_helper is gone (no 'no_such_helper'); used by nowhere"
    assert problems[1].startswith("wandb.proto.no_such_module cannot be imported")
    monkeypatch.setattr(upstream, "VERIFIED", {**upstream.VERIFIED, "submitit": "0.0.1"})
    (problem,) = surface_problems(())
    assert problem.startswith("submitit 1.5.4 is installed; care/upstream.py was checked against 0.0.1")


def test_verified_versions_are_the_lock_s():
    lock = (ROOT / "requirements.lock").read_text()
    for package, version in upstream.VERIFIED.items():
        assert f"{package}=={version}" in lock


def test_every_private_import_in_the_code_is_listed():
    """A `_internal` module or a `_name` attribute of Hydra, submitit or W&B imported anywhere is in INTERNALS."""
    listed = {f"{i.module}.{i.attribute.split('.')[0]}" for i in INTERNALS}
    found = set()
    for file in [ROOT / "run.py", *ROOT.glob("care/**/*.py"), *ROOT.glob("analysis/*.py"), *ROOT.glob("hydra_plugins/**/*.py")]:
        for module, names in re.findall(r"^\s*from ((?:hydra|submitit|wandb)[\w.]*) import ([\w, ]+)", file.read_text(),
                                        re.MULTILINE):
            if "_internal" in module or "proto" in module:
                found.update(f"{module}.{name.strip()}" for name in names.split(","))
    unlisted = sorted(f for f in found if not any(entry == f or entry.startswith(f + ".") for entry in listed))
    assert not unlisted, f"private imports not stated in care/upstream.py: {unlisted}"
    assert all(dataclasses.is_dataclass(i) and i.used_by for i in INTERNALS)
