"""Every imported package is declared, every declared package is used, and the install matches the lock."""

import ast
import functools
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("care", "analysis", "hydra_plugins", "tests", "scripts", "benchmarks", "experiments", "paper_figures")
# declared for what they do, not for an import: tools run from the shell, or needed beside vLLM
NOT_IMPORTED = {"ruff": "the linter, run as a command"}


def python_files() -> list[Path]:
    files = sorted(ROOT.glob("*.py"))
    for folder in SOURCE_DIRS:
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def local_modules() -> set[str]:
    """Our own top-level names: packages and scripts here, and the sibling modules tests import."""
    names = {p.stem for p in ROOT.glob("*.py")} | {d for d in SOURCE_DIRS if (ROOT / d).is_dir()}
    for folder in ("tests", "scripts", "benchmarks", "experiments"):
        names |= {p.stem for p in (ROOT / folder).glob("*.py")}
    return names


def imported_modules() -> dict[str, set[str]]:
    """Dotted module name -> the files importing it (absolute imports only; relative ones are ours)."""
    found: dict[str, set[str]] = {}
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


@functools.cache
def packages_distributions() -> dict[str, list[str]]:
    """Top-level module -> distributions (a scan of every installed package: done once)."""
    return metadata.packages_distributions()


def distribution_of(module: str) -> str:
    """The distribution that provides a module (installed ones by their metadata, else by name)."""
    if module.startswith("hydra_plugins.hydra_submitit_launcher"):
        return "hydra-submitit-launcher"
    top = module.split(".")[0]
    providers = packages_distributions().get(top, [])
    return canonicalize_name(providers[0] if providers else top)


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in requirements}


def locked(name: str = "requirements.lock") -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==(\S+)$", line.strip())
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def third_party_imports() -> dict[str, set[str]]:
    local, stdlib = local_modules(), set(sys.stdlib_module_names)
    out: dict[str, set[str]] = {}
    for module, files in imported_modules().items():
        top = module.split(".")[0]
        if top in stdlib or top in local and not module.startswith("hydra_plugins.hydra_submitit_launcher"):
            continue
        out.setdefault(distribution_of(module), set()).update(files)
    return out


def test_every_imported_package_is_declared_in_pyproject():
    missing = {dist: sorted(files)[:3] for dist, files in third_party_imports().items() if dist not in declared()}
    assert not missing, f"imported but not declared in pyproject.toml (distribution: importing files): {missing}"


def test_every_declared_package_is_imported_somewhere():
    used = set(third_party_imports())
    unused = sorted(set(declared()) - used - set(NOT_IMPORTED) - {"care"})
    assert not unused, f"declared in pyproject.toml but imported nowhere: {unused}"


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-gpu.lock"])
def test_the_locks_pin_every_declared_package_exactly(lock):
    pins = locked(lock)
    text = (ROOT / lock).read_text()
    assert "file:" not in text.replace("# ", "") and not re.search(r"^-e ", text, re.M), f"{lock} names a local path"
    assert not re.search(r"^torch==\S+\+", text, re.M), f"{lock} pins torch with a local label"
    wanted = {n for n, r in declared().items() if lock == "requirements-gpu.lock" or not r.marker}
    cpu_only = {"vllm"} if lock == "requirements.lock" else set()
    absent = sorted(wanted - set(pins) - cpu_only - {"care"})
    assert not absent, f"{lock} lacks {absent}: run bash scripts/lock.sh"
    for name, requirement in declared().items():
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), \
                f"{lock} pins {name}=={pins[name]}, outside pyproject's {requirement}: run bash scripts/lock.sh"


def test_the_cpu_lock_has_no_cuda_packages():
    cuda = sorted(n for n in locked() if n.startswith(("nvidia-", "cuda-", "triton")))
    assert not cuda, f"requirements.lock pulls CUDA packages {cuda}: torch must resolve to the CPU wheel"


def test_the_installed_versions_are_the_locked_ones():
    """What README command 1 installs is exactly the lock (torch's +cpu/+cuXXX label aside)."""
    wrong = {}
    for name, pin in locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (pin, None)
            continue
        if Version(installed).public != Version(pin).public:
            wrong[name] = (pin, installed)
    assert not wrong, f"installed versions differ from requirements.lock (locked, installed): {wrong}"
