"""The sweep's code snapshot: tracked files as they are in the working tree, made without rsync."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hydra_plugins.care_launcher.care_launcher import LAUNCH_DIR_ENV, CodeSnapshot


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "code.py").write_text("VALUE = 1\n")
    (repo / "gone.py").write_text("old\n")
    (repo / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (repo / "run.sh").chmod(0o755)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    (repo / "pkg" / "code.py").write_text("VALUE = 2  # edited, not committed\n")
    (repo / "gone.py").unlink()
    (repo / "scratch.py").write_text("untracked\n")
    return repo


@pytest.fixture
def path_without_rsync(tmp_path, monkeypatch):
    """PATH holding git alone, as on a fresh machine that has no rsync."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PATH", str(bin_dir))
    assert shutil.which("rsync") is None
    return bin_dir


def test_snapshot_copies_the_working_tree_of_tracked_files_without_rsync(repo, tmp_path, path_without_rsync,
                                                                        monkeypatch):
    launched_from = tmp_path / "launch"
    launched_from.mkdir()
    monkeypatch.chdir(launched_from)
    monkeypatch.delenv(LAUNCH_DIR_ENV, raising=False)
    snapshot = tmp_path / "sweep" / ".code"
    with CodeSnapshot(snapshot_dir=snapshot, root_dir=repo):
        assert Path.cwd() == snapshot  # jobs are submitted from (and import) the copy
        assert os.environ[LAUNCH_DIR_ENV] == str(launched_from)
    assert Path.cwd() == launched_from and LAUNCH_DIR_ENV not in os.environ
    assert (snapshot / "pkg" / "code.py").read_text() == "VALUE = 2  # edited, not committed\n"
    assert not (snapshot / "gone.py").exists()
    assert not (snapshot / "scratch.py").exists()
    assert os.access(snapshot / "run.sh", os.X_OK)
    # the commit the snapshot came from, and that it carries uncommitted edits
    assert git(snapshot, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    assert "pkg/code.py" in git(snapshot, "status", "--porcelain")


def test_a_second_submission_into_the_same_sweep_refreshes_the_copy(repo, tmp_path, path_without_rsync):
    snapshot = tmp_path / ".code"
    with CodeSnapshot(snapshot_dir=snapshot, root_dir=repo):
        pass
    (repo / "pkg" / "code.py").write_text("VALUE = 3\n")
    with CodeSnapshot(snapshot_dir=snapshot, root_dir=repo):
        pass
    assert (snapshot / "pkg" / "code.py").read_text() == "VALUE = 3\n"


def test_snapshot_without_git_fails_before_queueing_naming_the_key(tmp_path):
    """Through run.py, as a user would hit it: PATH with python but without git."""
    import sys

    root = Path(__file__).resolve().parents[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "run.py", "-m", "scale=toy", "cluster=submitit_local",
                             "hydra.launcher.snapshot=true", f"hydra.sweep.dir={sweep}",
                             f"cache_dir={tmp_path / 'cache'}"],
                            cwd=root, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PATH": str(bin_dir)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "hydra.launcher.snapshot=false" in result.stderr and "git" in result.stderr
    assert not (sweep / ".code").exists() and not (sweep / ".submitit").exists() and not (sweep / "0").exists()
