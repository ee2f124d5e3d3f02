"""A run directory belongs to one run (care.run_dir), and a fault while writing it is named, never half-published.

Run dirs are made by run.py itself (the tiny default-shaped run, one RL step): a second job on a held
directory fails at once naming its holder; a finished directory rerun with the same config is reported
and left byte- and mtime-identical (.hydra/ and run.log included); another config is refused naming the
keys, and start_over=true moves the old run aside; a full disk or a read-only run dir or cache_dir fails
with one line naming the path and its key.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.tiny_run import tiny_run_command

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def overrides(run_dir: Path, cache_dir: Path, *extra: str) -> list[str]:
    """tests/tiny_run's run (so the session's cold start is reused) cut to one RL step, with `extra` on top."""
    values = dict(arg.split("=", 1) for arg in tiny_run_command(run_dir, cache_dir)[2:])
    values.update({"rl.steps": "1", "rl.save_steps": "1"})
    values.update(arg.split("=", 1) for arg in extra)
    return [f"{key}={value}" for key, value in values.items()]


def run_py(run_dir: Path, cache_dir: Path, *extra: str, prefix: tuple[str, ...] = (), timeout: int = 300):
    return subprocess.run([*prefix, sys.executable, "run.py", *overrides(run_dir, cache_dir, *extra)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=ENV)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path below `root` (and root itself): its mtime_ns and, for a file, its bytes."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in [root, *sorted(root.rglob("*"))]}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir):
    run_dir = tmp_path_factory.mktemp("finished") / "job"
    result = run_py(run_dir, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_a_finished_run_rerun_alike_is_reported_and_nothing_is_touched(finished, cache_dir):
    before = snapshot(finished)
    assert {".hydra", ".hydra/overrides.yaml", "run.log", "final.json", "run.json", ".lock"} <= set(before)
    again = run_py(finished, cache_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = again.stdout.strip().splitlines()
    assert lines[-1] == f"run_dir: {finished}"
    (printed,) = [line for line in lines if line.startswith("final.json: ")]
    assert json.loads(printed.removeprefix("final.json: ")) == json.loads((finished / "final.json").read_text())
    assert snapshot(finished) == before


def test_another_config_is_refused_naming_the_keys_and_start_over_moves_the_old_run_aside(finished, cache_dir,
                                                                                          tmp_path):
    before = snapshot(finished)
    refused = run_py(finished, cache_dir, "seed=1")
    assert refused.returncode == 2
    assert refused.stderr.startswith("config error: ") and len(refused.stderr.strip().splitlines()) == 1
    assert f"hydra.run.dir={finished} holds another run" in refused.stderr and "seed (0 -> 1)" in refused.stderr
    assert "start_over=true" in refused.stderr
    assert snapshot(finished) == before

    job = tmp_path / "job"
    shutil.copytree(finished, job, symlinks=True)  # the same run, in a directory this test may change
    old = snapshot(job)
    replaced = run_py(job, cache_dir, "seed=1", "start_over=true")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    (aside,) = tmp_path.glob(".job.replaced-*")
    assert f"to {aside}" in replaced.stdout and f"to {aside}" in (job / "run.log").read_text()
    kept = snapshot(aside)
    for name, (_, content) in old.items():  # every file the old run had, byte for byte (not its lock)
        if name not in (".", ".lock") and content is not None:
            assert kept[name][1] == content, name
    old_key, new = json.loads(old["run.json"][1])["run_key"], json.loads((job / "run.json").read_text())
    assert new["config"]["seed"] == 1 and new["run_key"] != old_key and (job / "final.json").exists()


def test_other_training_data_under_the_same_config_is_another_run(finished):
    """The run key alone cannot see data files that changed under the same config: data_digest does."""
    from care.config import config_from_dict
    from care.identity import run_key
    from care.run_dir import inspect

    record = json.loads((finished / "run.json").read_text())
    cfg = config_from_dict(record["config"])
    assert run_key(cfg) == record["run_key"] and len(record["data_digest"]) == 16
    assert inspect(finished, cfg, record["run_key"], record["data_digest"]).kind == "finished"
    state = inspect(finished, cfg, record["run_key"], "0" * 16)
    assert state.kind == "other" and state.differences == [
        f"training data content (data_digest {record['data_digest']} -> {'0' * 16})"]


def test_a_second_job_on_a_held_run_dir_fails_at_once_naming_the_holder(tmp_path, cache_dir):
    job = tmp_path / "job"
    holder = subprocess.Popen([sys.executable, "run.py", *overrides(job, cache_dir, "rl.steps=40")], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.time() + 240
        while True:  # the holder records itself in the lock once it has claimed the directory
            assert holder.poll() is None and time.time() < deadline, "the holder ended before it claimed its dir"
            try:
                if json.loads((job / ".lock").read_text())["pid"] == holder.pid:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        second = run_py(job, cache_dir, "rl.steps=40")
        assert holder.poll() is None, "the holder ended before the second job was refused"
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2 and second.stderr.startswith("config error: "), second.stderr[-3000:]
    assert f"hydra.run.dir={job} is in use by pid {holder.pid} on host " in second.stderr
    assert "wait for it or choose another hydra.run.dir" in second.stderr
    steps = [json.loads(line)["global_step"] for line in (job / "metrics.jsonl").read_text().splitlines()] \
        if (job / "metrics.jsonl").exists() else []
    assert steps == list(range(1, len(steps) + 1))  # the holder's alone, never interleaved


DISK_FULL = textwrap.dedent("""
    import errno, os, runpy, sys

    real_write, cut = os.write, set()

    def write(fd, data):  # the disk fills up while final.json is written: half goes out, then ENOSPC
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            name = ""
        if name.startswith(".final.json-"):
            if fd in cut:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            cut.add(fd)
            return real_write(fd, bytes(data)[: max(1, len(data) // 2)])
        return real_write(fd, data)

    os.write = write
    sys.argv = ["run.py", *sys.argv[1:]]
    runpy.run_path("run.py", run_name="__main__")
""")


def test_a_full_disk_while_writing_final_json_names_the_file_and_key_and_publishes_nothing(tmp_path, cache_dir):
    job = tmp_path / "job"
    result = subprocess.run([sys.executable, "-c", DISK_FULL, *overrides(job, cache_dir)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"cannot write {job / 'final.json'} (hydra.run.dir={job}): No space left on device" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (job / "final.json").exists() and not list(job.glob(".final.json-*"))
    assert (job / "rl_done.json").exists()  # what was written before it stays: a rerun only evaluates


def test_a_metrics_line_cut_short_by_a_full_disk_is_taken_back(tmp_path, monkeypatch):
    from care.atomic import WriteFault
    from care.tracking import RunFiles

    files = RunFiles(tmp_path)
    files.append_metrics(1, {"train/reward": 0.5})
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:7]))  # then the disk is full
    with pytest.raises(WriteFault) as fault:
        files.append_metrics(2, {"train/reward": 0.25})
    assert fault.value.errno == errno.ENOSPC and fault.value.filename == str(files.metrics_path)
    monkeypatch.undo()
    assert [json.loads(line)["global_step"] for line in files.metrics_path.read_text().splitlines()] == [1]


def _namespace_mounts() -> bool:
    """Whether this machine lets a process mount a tmpfs in a user and mount namespace of its own."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", 'd=$(mktemp -d) && mount -t tmpfs -o ro,size=64k none "$d"'],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


READ_ONLY = ("unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o ro,size=1m none "$0" && exec "$@"')


def test_a_full_tmpfs_fails_a_published_file_whole(tmp_path):
    """A real disk full (a 64 KiB tmpfs): the write fails naming the file, and no temp file or half file is left."""
    if not _namespace_mounts():
        pytest.skip("needs unshare and tmpfs mounts in a user namespace")
    target = tmp_path / "small"
    target.mkdir()
    script = ("from care.atomic import write_json_atomic, WriteFault\n"
              "import sys, os\n"
              "p = sys.argv[1] + '/final.json'\n"
              "try:\n    write_json_atomic(p, {'x': 'y' * 200_000})\n"
              "except WriteFault as err:\n    print(err.errno, err.filename, sorted(os.listdir(sys.argv[1])))\n")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=64k none "$0" && exec "$@"', str(target),
                          sys.executable, "-c", script, str(target)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip().split(maxsplit=2) == [str(errno.ENOSPC), str(target / "final.json"), "[]"], out.stderr


@pytest.mark.parametrize("how", ["read-only mount", "chmod 555"])
def test_a_read_only_run_dir_or_cache_dir_is_a_config_error_naming_its_key(tmp_path, cache_dir, how):
    locked = tmp_path / "locked"
    locked.mkdir()
    if how == "chmod 555":
        if os.geteuid() == 0:
            pytest.skip("root writes into a 0555 folder anyway; the read-only mount covers root")
        locked.chmod(0o555)
        prefix: tuple[str, ...] = ()
    else:
        if not _namespace_mounts():
            pytest.skip("needs unshare and tmpfs mounts in a user namespace")
        prefix = (*READ_ONLY, str(locked))
    reason = "read-only file system" if how == "read-only mount" else "not writable by this user"
    try:
        as_run_dir = run_py(locked, cache_dir, prefix=prefix)
        beneath = run_py(locked / "job", cache_dir, prefix=prefix)  # Hydra would make it: refused before
        as_cache = run_py(tmp_path / "job", locked / "cache", prefix=prefix)
    finally:
        locked.chmod(0o755)
    for result, key, path in ((as_run_dir, "hydra.run.dir", locked), (beneath, "hydra.run.dir", locked / "job"),
                              (as_cache, "cache_dir", locked / "cache")):
        assert result.returncode == 2, result.stderr[-3000:]
        assert result.stderr.startswith(f"config error: {key}={path} cannot be written"), result.stderr[-3000:]
        assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(locked.iterdir()) == []
    assert not (tmp_path / "job" / "run.json").exists()


def test_files_that_are_no_runs_are_refused_and_start_over_moves_them_aside(tmp_path):
    """A folder of someone else's files is not a run dir to write into; what a job leaves before its run.json
    (.hydra/, run.log, its lock) is."""
    from care.config import Config
    from care.run_dir import RunDirRefused, claim, release

    job = tmp_path / "job"
    job.mkdir()
    (job / "notes.txt").write_text("mine")  # another program's file, not one this product writes
    with pytest.raises(RunDirRefused, match=r"holds files but no run\.json \(notes\.txt\)"):
        claim(Config(), job, key="k", digest=None, writer=True, dir_key="hydra.run.dir")
    assert sorted(p.name for p in job.iterdir()) == ["notes.txt"]
    cfg = Config(start_over=True)
    claimed = claim(cfg, job, key="k", digest=None, writer=True, dir_key="hydra.run.dir")
    try:
        assert claimed.held and claimed.moved_to is not None and (claimed.moved_to / "notes.txt").read_text() == "mine"
        assert sorted(p.name for p in job.iterdir()) == [".lock"]
    finally:
        release(job)
    again = claim(Config(), job, key="k", digest=None, writer=True, dir_key="hydra.run.dir")  # only its lock: empty
    assert again.held and again.final is None
    release(job)
