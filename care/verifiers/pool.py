"""A small process pool for math-verify calls: batched submission, a per-call deadline, kill-and-replace.

Batched: `run` sorts its jobs by gold and cuts them into a few chunks per worker; a worker gets a whole
chunk and streams back one verdict per job. Sorting keeps a gold's jobs, and so the repeats within a
GRPO group, on one worker, whose parse cache (`math_answers._parse`) then serves them; handing out one
job at a time spread the repeats over the workers, each parsing them afresh (docs/benchmarks.md has the
CPU seconds). The parent also wakes per chunk, not per job.

Per-call deadline: each job gets `timeout_s` from the moment its worker starts it (the chunk's send, or
the previous job's verdict). A job that overruns it scores 0 (`timed_out`), its worker is killed
(SIGKILL) and replaced, and the rest of its chunk goes back to the queue; the other workers carry on.

Why hand-written: math-verify's own timeout uses SIGALRM, which only works on the main thread and cannot
interrupt long C-level work (a huge integer power), so a stuck call must be killed from outside.
`concurrent.futures.ProcessPoolExecutor` cannot kill one task. pebble's `ProcessPool` can, but its
timeout covers a whole task: with chunked tasks one hung job loses every verdict of its chunk (pebble
issue #132) after a chunk-sized deadline, and with one task per job there is no batching at all.

Start method: 'forkserver' (where available, else 'spawn'). Not 'fork': the caller is typically a
trainer with torch/CUDA threads, and forking a threaded process can deadlock the child. The forkserver
is a clean single-threaded process; it preloads math-verify once (`care.verifiers._warm`), so a
replacement worker is a cheap fork of a warm process instead of a ~1 s cold import as with 'spawn'.

Workers also cap their address space (`memory_limit_mb` beyond their start-up size) so a pathological
expression fails with MemoryError inside the worker instead of starving the trainer.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_LIMIT_MB = 2048
_BOOT_TIMEOUT_S = 60.0
_READY = "ready"
_WARM_MODULE = "care.verifiers._warm"
CHUNKS_PER_WORKER = 8


class WorkerStartError(RuntimeError):
    """A worker never came up: a setup problem (see the message), never scored as a wrong answer."""


@dataclass(frozen=True)
class MathOutcome:
    correct: bool
    timed_out: bool = False


def default_worker_count() -> int:
    """`CARE_VERIFIER_WORKERS` if set, else the CPU count capped at 8 (verification is bursty, not steady)."""
    configured = os.environ.get("CARE_VERIFIER_WORKERS")
    if configured:
        return max(1, int(configured))
    return max(1, min(8, os.cpu_count() or 1))


def _limit_memory(extra_mb: int | None) -> None:
    """Cap the address space at what the worker already maps plus `extra_mb`.

    Relative, not absolute: a worker forked from a server that imported torch can already map gigabytes
    of shared libraries, and an absolute cap below that would fail every job.
    """
    if not extra_mb:
        return
    try:
        import resource

        with open("/proc/self/statm") as statm:
            mapped = int(statm.read().split()[0]) * resource.getpagesize()
        limit = mapped + extra_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):
        pass  # not Linux: run without the cap


def worker_main(connection: Connection, memory_limit_mb: int | None) -> None:
    """Worker loop: receive a chunk of (prediction, gold) jobs, send math_equal's verdict for each as it
    is decided (the parent times every job from the previous verdict); None ends the loop."""
    from care.verifiers.math_answers import math_equal

    _limit_memory(memory_limit_mb)
    connection.send(_READY)
    while True:
        try:
            chunk = connection.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for job in chunk:
            try:
                verdict = math_equal(*job)
            except Exception:  # MemoryError, RecursionError, parser bugs: one wrong answer, not a dead worker
                verdict = False
            connection.send(bool(verdict))


def _chunks(jobs: Sequence[tuple[str, str]], workers: int) -> list[list[int]]:
    """Job indices sorted by gold and cut into about `CHUNKS_PER_WORKER` chunks per worker.

    Sorting keeps a gold's jobs together, so mostly one worker parses (and caches) each gold; several
    chunks per worker let an idle worker take the next one when the chunks' costs differ.
    """
    by_gold = sorted(range(len(jobs)), key=lambda index: jobs[index][1])
    size = max(1, -(-len(jobs) // (workers * CHUNKS_PER_WORKER)))
    return [by_gold[start : start + size] for start in range(0, len(by_gold), size)]


class _Worker:
    def __init__(self, context: multiprocessing.context.BaseContext, memory_limit_mb: int | None) -> None:
        self.connection, child_connection = context.Pipe(duplex=True)
        self.process = context.Process(
            target=worker_main, args=(child_connection, memory_limit_mb), name="care-verifier", daemon=True
        )
        self.process.start()
        child_connection.close()
        self.ready = False

    def wait_ready(self) -> bool:
        """Block until the worker has booted; False when it was killed while booting.

        A worker killed by a signal before it said ready (e.g. by an OOM killer or a test) died like
        any idle worker and is replaced; one that exits on its own cannot boot here, a setup error.
        """
        if self.ready:
            return True
        try:
            booted = self.connection.poll(_BOOT_TIMEOUT_S) and self.connection.recv() == _READY
        except (EOFError, OSError):
            booted = False
        if not booted:
            self.process.join(timeout=5.0)
            killed = self.process.exitcode is not None and self.process.exitcode < 0
            self.stop(kill=True)
            if killed:
                return False
            raise WorkerStartError(
                "a verifier worker failed to start. With the 'forkserver'/'spawn' start methods the main "
                "script is re-imported in workers, so it must guard its entry point with "
                "`if __name__ == '__main__':`; see the worker's traceback above."
            )
        self.ready = True
        return True

    def send(self, chunk: list[tuple[str, str]]) -> bool:
        """Hand over a chunk of jobs; False when the worker has died (booted or not)."""
        # an idle worker has nothing to say: anything readable is the end-of-file of one that died
        # (the pipe shows the death before the process handle does)
        if not self.wait_ready() or not self.process.is_alive() or self.connection.poll(0):
            return False
        try:
            self.connection.send(chunk)
            return True
        except (EOFError, OSError, BrokenPipeError):
            return False

    def stop(self, kill: bool) -> None:
        try:
            if kill:
                self.process.kill()
            else:
                self.connection.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.connection.close()


@dataclass
class _Assignment:
    """A chunk a worker is running: verdicts come back in chunk order, `done` of them so far."""

    worker: _Worker
    chunk: list[int]  # job indices
    deadline: float  # for the job now running, chunk[done]
    done: int = 0

    @property
    def running(self) -> int:
        return self.chunk[self.done]

    @property
    def not_started(self) -> list[int]:
        return self.chunk[self.done + 1 :]


def _context(start_method: str | None) -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        from multiprocessing import forkserver

        # Add to (not replace) the preload list: its default, '__main__', spares each worker a re-import
        # of the main script. Takes effect only if the forkserver has not started yet.
        preload = list(getattr(forkserver._forkserver, "_preload_modules", None) or ["__main__"])
        if _WARM_MODULE not in preload:
            context.set_forkserver_preload([*preload, _WARM_MODULE])
    return context


class VerifierPool:
    """Fixed-size worker pool; `run` is thread-safe (each call borrows idle workers)."""

    def __init__(
        self,
        workers: int | None = None,
        start_method: str | None = None,
        memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB,
    ) -> None:
        self.size = workers or default_worker_count()
        self._context = _context(start_method)
        self._memory_limit_mb = memory_limit_mb
        self._owner_pid = os.getpid()
        self._condition = threading.Condition()
        self._idle: list[_Worker] = [self._new_worker() for _ in range(self.size)]
        self._closed = False

    def _new_worker(self) -> _Worker:
        return _Worker(self._context, self._memory_limit_mb)

    @property
    def owned_by_this_process(self) -> bool:
        return os.getpid() == self._owner_pid

    def worker_pids(self) -> list[int | None]:
        with self._condition:
            return [worker.process.pid for worker in self._idle]

    def _borrow(self, block: bool) -> _Worker | None:
        with self._condition:
            while not self._idle:
                if self._closed:
                    raise RuntimeError("the verifier pool is closed")
                if not block:
                    return None
                self._condition.wait()
            return self._idle.pop()

    def _give_back(self, worker: _Worker) -> None:
        with self._condition:
            if self._closed:
                worker.stop(kill=False)
                return
            self._idle.append(worker)
            self._condition.notify()

    def _replace(self, worker: _Worker) -> None:
        worker.stop(kill=True)
        self._give_back(self._new_worker())

    def run(self, jobs: Sequence[tuple[str, str]], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[MathOutcome]:
        """Verdicts for (prediction, gold) jobs, in order; each job gets `timeout_s` once a worker starts it."""
        outcomes: list[MathOutcome | None] = [None] * len(jobs)
        pending = deque(_chunks(jobs, self.size))
        in_flight: dict[Connection, _Assignment] = {}

        def stop_running(assignment: _Assignment, outcome: MathOutcome) -> None:
            """Score the running job, replace its worker, and queue the chunk's unstarted jobs again."""
            del in_flight[assignment.worker.connection]
            outcomes[assignment.running] = outcome
            if assignment.not_started:
                pending.appendleft(assignment.not_started)
            self._replace(assignment.worker)

        try:
            while pending or in_flight:
                while pending:
                    worker = self._borrow(block=not in_flight)
                    if worker is None:
                        break
                    chunk = pending.popleft()
                    try:
                        sent = worker.send([jobs[index] for index in chunk])
                    except WorkerStartError:
                        self._give_back(self._new_worker())  # keep the pool at full size for the next call
                        raise
                    if sent:
                        deadline = time.monotonic() + timeout_s
                        in_flight[worker.connection] = _Assignment(worker, chunk, deadline)
                    else:  # it died while idle, not because of this chunk: retry on its replacement
                        pending.appendleft(chunk)
                        self._replace(worker)
                if not in_flight:
                    continue
                next_deadline = min(assignment.deadline for assignment in in_flight.values())
                for connection in wait(list(in_flight), timeout=max(0.0, next_deadline - time.monotonic())):
                    assignment = in_flight[connection]  # type: ignore[index]
                    try:
                        while True:  # drain every verdict already sent
                            outcomes[assignment.running] = MathOutcome(correct=bool(connection.recv()))  # type: ignore[union-attr]
                            assignment.done += 1
                            assignment.deadline = time.monotonic() + timeout_s
                            if assignment.done == len(assignment.chunk):
                                del in_flight[connection]  # type: ignore[arg-type]
                                self._give_back(assignment.worker)
                                break
                            if not connection.poll(0):  # type: ignore[union-attr]
                                break
                    except (EOFError, OSError):  # the worker died mid-job: that job scores 0, not timed out
                        stop_running(assignment, MathOutcome(correct=False))
                now = time.monotonic()
                for assignment in list(in_flight.values()):
                    if assignment.deadline <= now:
                        stop_running(assignment, MathOutcome(correct=False, timed_out=True))
        finally:
            for assignment in in_flight.values():  # interrupted: their late replies must not leak
                self._replace(assignment.worker)
        return [outcome or MathOutcome(correct=False) for outcome in outcomes]

    def close(self) -> None:
        with self._condition:
            self._closed = True
            idle, self._idle = self._idle, []
            self._condition.notify_all()
        if self.owned_by_this_process:
            for worker in idle:
                worker.stop(kill=False)


_shared_pool: VerifierPool | None = None
_shared_lock = threading.Lock()
_shared_settings: dict[str, object] = {}


def get_pool() -> VerifierPool:
    """The process-wide pool, created on first use (and afresh in a forked child, which must not share pipes)."""
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None or not _shared_pool.owned_by_this_process:
            _shared_pool = VerifierPool(**_shared_settings)  # type: ignore[arg-type]
        return _shared_pool


def configure_pool(
    workers: int | None = None,
    start_method: str | None = None,
    memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB,
) -> None:
    """Set the shared pool's size and start method; takes effect on the next call (the old pool closes)."""
    shutdown_pool()
    _shared_settings.update(workers=workers, start_method=start_method, memory_limit_mb=memory_limit_mb)


def shutdown_pool() -> None:
    """Stop the shared pool's workers (also registered at exit)."""
    global _shared_pool
    with _shared_lock:
        pool, _shared_pool = _shared_pool, None
    if pool is not None:
        pool.close()


atexit.register(shutdown_pool)
