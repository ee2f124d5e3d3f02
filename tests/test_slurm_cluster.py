"""submitit against a real SLURM cluster: job arrays, results, accounting, requeue.

Needs a running cluster (CI: ``bash scripts/slurm_local.sh start`` before pytest). Without one
every test here is skipped; set CARE_SLURM_AUTOSTART=1 to let the module start the local cluster.

Every wait is bounded: without slurmdbd, submitit sees all job states as UNKNOWN and a plain
``job.result()`` on a job that died would hang forever.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
# jobs unpickle their functions as `slurm_helpers.*`, so it must be a top-level module here and there
sys.path.insert(0, str(TESTS_DIR))
import slurm_helpers  # noqa: E402

submitit = pytest.importorskip("submitit")

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm_cluster() -> dict:
    """Skips the module unless a SLURM node is up; reports whether accounting works."""
    problem = slurm_helpers.cluster_problem()
    if problem and os.environ.get("CARE_SLURM_AUTOSTART") == "1":
        slurm_helpers.autostart_cluster()
        problem = slurm_helpers.cluster_problem()
    if problem:
        pytest.skip(f"no SLURM cluster: {problem}")
    return {"accounting": slurm_helpers.accounting_works()}


@pytest.fixture
def executor(slurm_cluster, tmp_path, monkeypatch):
    """A Slurm executor whose jobs can import ``slurm_helpers`` (sbatch passes our environment on)."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    )
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    # timeout well above the test's own deadlines: a timeout signal would muddle the requeue test
    ex.update_parameters(timeout_min=10, cpus_per_task=1, slurm_array_parallelism=2, name="care-slurm-test")
    return ex


def wait_done(jobs, timeout_s: float) -> None:
    """Wait (bounded) for submitit jobs to finish; fail with their logs otherwise."""
    if not slurm_helpers.wait_until(lambda: all(job.done() for job in jobs), timeout_s, interval_s=1):
        pending = [job for job in jobs if not job.done()]
        logs = "\n".join(f"job {job.job_id}:\n{slurm_helpers.job_logs(job)}" for job in pending)
        for job in pending:
            job.cancel(check=False)
        pytest.fail(f"{len(pending)} job(s) not done after {timeout_s} s\n{logs}")


def test_job_array_returns_results(executor, slurm_cluster):
    jobs = executor.map_array(slurm_helpers.square, [3, 4])
    assert len(jobs) == 2
    wait_done(jobs, timeout_s=60)

    results = [job.result() for job in jobs]  # done: reads the result files, no waiting
    assert [r["value"] for r in results] == [9, 16]
    # both ran as tasks of one SLURM array
    assert sorted(r["array_task"] for r in results) == ["0", "1"]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1

    if not slurm_cluster["accounting"]:
        warnings.warn("SLURM accounting (sacct) not available: job states not checked", stacklevel=1)
        return
    # sacct may lag the end of a job by a moment
    want = {job.job_id: "COMPLETED" for job in jobs}
    seen: dict[str, str] = {}

    def recorded() -> bool:
        seen.update(slurm_helpers.sacct_states(jobs[0].job_id))
        return all(seen.get(jid) == state for jid, state in want.items())

    assert slurm_helpers.wait_until(recorded, timeout_s=20), f"sacct states {seen}, expected {want}"
    # and submitit itself (which polls sacct) agrees; force a fresh poll instead of its cache
    assert slurm_helpers.wait_until(
        lambda: all(job.watcher.get_state(job.job_id, mode="force") == "COMPLETED" for job in jobs),
        timeout_s=20,
    ), f"submitit states: {[job.state for job in jobs]}"


def test_requeued_job_resumes_from_its_progress_file(executor, slurm_cluster, tmp_path):
    n_steps = 12
    progress_file = tmp_path / "progress.json"

    def progress() -> dict:
        try:
            return json.loads(progress_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"steps": [], "runs": []}

    job = executor.submit(slurm_helpers.count_steps, str(progress_file), n_steps)
    try:
        started = slurm_helpers.wait_until(lambda: len(progress()["steps"]) >= 3, timeout_s=45)
        assert started, f"job {job.job_id} made no progress in 45 s\n{slurm_helpers.job_logs(job)}"

        # requeue sends SIGTERM (ignored by submitit), kills after KillWait, and runs the job again
        subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=30, capture_output=True)
        wait_done([job], timeout_s=90)
    finally:
        if not job.done():
            job.cancel(check=False)

    result = job.result()
    final = progress()
    assert final["steps"] == list(range(n_steps)), "every step recorded exactly once, in order"
    assert result["steps"] == final["steps"]
    runs = final["runs"]
    assert len(runs) >= 2, f"the job did not restart: {runs}"
    assert runs[0]["restart_count"] == 0
    assert runs[-1]["restart_count"] >= 1, f"SLURM_RESTART_COUNT not set in the restarted run: {runs}"
    assert runs[-1]["first_step"] >= 3, "the restarted run resumed from the progress file"
    assert {r["job_id"] for r in runs} == {job.job_id}, "a requeue keeps the job id"
    if slurm_cluster["accounting"]:
        assert slurm_helpers.wait_until(
            lambda: slurm_helpers.sacct_states(job.job_id).get(job.job_id) == "COMPLETED", timeout_s=20
        ), f"sacct: {slurm_helpers.sacct_states(job.job_id)}"


def _metrics_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["global_step"] for line in path.read_text().splitlines() if line.strip()]


def _running_job_id(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "run.json").read_text())["job"]["job_id"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def test_toy_sweep_through_cluster_slurm_survives_requeue_and_timeout(slurm_cluster, tmp_path):
    """The real sbatch path: `python run.py -m cluster=slurm scale=toy backbone=<two tiny ones>`.

    - per-backbone resources: the Qwen2.5-VL job runs as two tasks (torch.distributed over gloo),
      the Qwen3-VL job as one, from one command;
    - jobs run from the sweep's code snapshot;
    - mid-RL, job 0 is requeued (`scontrol requeue`: SIGTERM, restart from the top) and job 1 gets
      the time-limit warning (USR2: submitit checkpoints and requeues it, max_num_timeout=1);
      both resume from their newest checkpoint with every step logged exactly once.
    """
    from test_sweeps import ROOT

    sweep, steps = tmp_path / "sweep", 16
    cmd = [sys.executable, "run.py", "-m", "scale=toy", "cluster=slurm", "backbone=tiny_qwen2_5_vl,tiny_qwen3_vl",
           f"rl.steps={steps}", "rl.save_steps=1", "threads=1", f"cache_dir={tmp_path / 'cache'}",
           f"hydra.sweep.dir={sweep}", "hydra.launcher.timeout_min=10", "hydra.launcher.max_num_timeout=1",
           "hydra.launcher.per_backbone.tiny_qwen2_5_vl.tasks_per_node=2",
           "hydra.launcher.per_backbone.tiny_qwen2_5_vl.cpus_per_task=1",
           "hydra.launcher.per_backbone.tiny_qwen3_vl.cpus_per_task=1"]
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    interrupts = {0: ["scontrol", "requeue"], 1: ["scancel", "--signal=USR2"]}

    def mid_rl(run_dir: Path) -> bool:  # a checkpoint is on disk and RL is still going
        return 2 <= len(_metrics_steps(run_dir)) < steps - 4 and \
            any((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json"))

    def interrupt_ready_jobs() -> bool:
        finished = [job for job in interrupts if (sweep / str(job) / "final.json").exists()]
        assert not finished and driver.poll() is None, \
            f"job(s) {finished} ended before they could be interrupted (driver exit {driver.poll()}); " \
            f"raise rl.steps\n{(tmp_path / 'driver.log').read_text()[-3000:]}"
        for job in [job for job in interrupts if mid_rl(sweep / str(job))]:
            subprocess.run([*interrupts.pop(job), _running_job_id(sweep / str(job))], check=True, timeout=30,
                           capture_output=True)
        return not interrupts

    try:
        assert slurm_helpers.wait_until(interrupt_ready_jobs, timeout_s=300, interval_s=0.2), \
            f"jobs {sorted(interrupts)} never seen mid-RL\n{(tmp_path / 'driver.log').read_text()[-3000:]}"
        driver.wait(timeout=420)
    finally:
        if driver.poll() is None:
            driver.kill()
            subprocess.run(["scancel", "--name", "run"], check=False, capture_output=True)
    assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]

    for job, backbone, processes in ((0, "tiny_qwen2_5_vl", 2), (1, "tiny_qwen3_vl", 1)):
        run_dir = sweep / str(job)
        run = json.loads((run_dir / "run.json").read_text())
        final = json.loads((run_dir / "final.json").read_text())
        assert run["choices"]["backbone"] == backbone
        assert _metrics_steps(run_dir) == list(range(1, steps + 1)), "every step logged once, in order"
        assert final["global_step"] == steps
        assert final["processes"] == processes and run["world_size"] == processes
        assert run["job"]["tasks"] == str(processes) and run["job"]["cpus_per_task"] == "1"
        assert int(run["job"]["restart_count"] or 0) >= 1, f"job {job} did not restart: {run['job']}"
        assert Path(run["code"]["dir"]) == sweep / ".code"
        log_text = (run_dir / "run.log").read_text()
        assert "resuming RL from" in log_text, f"job {job} did not resume from a checkpoint"
    # job 1 went down the timeout path: checkpointed and requeued by submitit, one timeout left over
    job = json.loads((sweep / "1" / "run.json").read_text())["job"]  # an array of one is a plain job
    submitit_logs = "".join(p.read_text() for p in (sweep / ".submitit" / (job["array_job_id"] or job["job_id"]))
                            .glob("*_log.out"))
    assert "this job is timed-out" in submitit_logs and "remaining timeouts" in submitit_logs


def _sweep_jobs(sweep: Path) -> dict[str, list[str]]:
    """sacct's jobs of a sweep (its submitit folder names their ids), by job name -> states."""
    ids = {p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if p.name[0].isdigit()}
    out = subprocess.run(["sacct", "-X", "-n", "-P", "--format=JobID,JobName,State", "-j", ",".join(sorted(ids))],
                         capture_output=True, text=True, timeout=30).stdout
    jobs: dict[str, list[str]] = {}
    for line in filter(None, out.splitlines()):
        _, name, state = line.split("|")
        jobs.setdefault(name, []).append(state.split()[0])
    return jobs


def _toy_sweep(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "run.py", "-m", "scale=toy", "cluster=slurm", "seed=0,1", "threads=1",
            f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.launcher.timeout_min=10",
            "hydra.launcher.per_backbone.tiny_qwen2_5_vl.cpus_per_task=1", *extra]


def test_shared_phases_are_jobs_of_their_own(slurm_cluster, tmp_path):
    """A 2-seed toy sweep: one cold-start job and one before-RL job, the two runs queued behind them
    (afterok) and both starting from what they made; the same command again queues no phase."""
    from test_sweeps import ROOT

    if not slurm_cluster["accounting"]:
        pytest.skip("needs sacct to read the jobs' names and states")
    driver = subprocess.run(_toy_sweep(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert driver.returncode == 0, driver.stderr[-3000:]
    sweep = tmp_path / "sweep"
    assert slurm_helpers.wait_until(lambda: all(s == ["COMPLETED"] * len(s) for s in _sweep_jobs(sweep).values()),
                                    timeout_s=20)
    jobs = _sweep_jobs(sweep)
    assert jobs == {"care-cold_start": ["COMPLETED"], "care-before": ["COMPLETED"], "run": ["COMPLETED"] * 2}, jobs
    (cold_start,) = [p for p in (tmp_path / "cache" / "cold_start").iterdir() if not p.name.startswith(".")]
    (before,) = (tmp_path / "cache" / "eval").glob("before-*")
    for job in ("0", "1"):
        final = json.loads((sweep / job / "final.json").read_text())
        log_text = (sweep / job / "run.log").read_text()
        assert final["policy_source"] == str(cold_start)
        assert f"reusing {cold_start}" in log_text and f"reusing {before}" in log_text, log_text[-2000:]
        samples = sorted((sweep / job / "eval").glob("before-*.jsonl"))
        assert samples and all(p.read_bytes() == (before / p.name).read_bytes() for p in samples)
    log = driver.stdout + driver.stderr
    assert "shared phase cold_start (jobs [0, 1]): job" in log and "shared phase before (jobs [0, 1]): job" in log

    # the same command again, submitting and returning (hydra.launcher.wait=false): no phase is queued
    again = subprocess.run(_toy_sweep(tmp_path, f"hydra.sweep.dir={tmp_path / 'again'}", "hydra.launcher.wait=false"),
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert log.count("is in the cache already") == 2 and "shared phase cold_start (jobs" not in log
    assert "not waiting (hydra.launcher.wait=false)" in log
    assert slurm_helpers.wait_until(lambda: all((tmp_path / "again" / job / "final.json").exists() for job in "01"),
                                    timeout_s=240), log[-3000:]
    assert set(_sweep_jobs(tmp_path / "again")) == {"run"}


def test_a_failed_cold_start_cancels_the_runs_behind_it(slurm_cluster, tmp_path):
    """scancel the cold-start job: SLURM cancels the runs queued behind it (kill-on-invalid-dep), the
    driver fails naming the phase, and no run directory is started."""
    from test_sweeps import ROOT

    if not slurm_cluster["accounting"]:
        pytest.skip("needs sacct to read the jobs' states")
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(_toy_sweep(tmp_path), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    sweep = tmp_path / "sweep"
    try:
        def cold_start_queued() -> bool:
            return (sweep / ".submitit").is_dir() and "care-cold_start" in _sweep_jobs(sweep) \
                and "run" in _sweep_jobs(sweep)
        assert slurm_helpers.wait_until(cold_start_queued, timeout_s=120), (tmp_path / "driver.log").read_text()[-3000:]
        subprocess.run(["scancel", "--name", "care-cold_start"], check=True, timeout=30)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
        subprocess.run(["scancel", "--name", "run"], check=False, capture_output=True)
    output = (tmp_path / "driver.log").read_text()
    assert driver.returncode != 0 and "shared phase cold_start" in output and "failed" in output, output[-3000:]
    assert slurm_helpers.wait_until(lambda: set(_sweep_jobs(sweep)["run"]) == {"CANCELLED"}, timeout_s=30), \
        _sweep_jobs(sweep)
    assert not any((sweep / job / "final.json").exists() for job in ("0", "1"))
