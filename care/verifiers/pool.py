"""A small process pool for math-verify calls, with a per-call deadline and kill-and-replace.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot kill one stuck task, only abandon it while
the worker keeps burning a core; math-verify's own timeout uses SIGALRM, which only works on the main
thread. Here each worker owns a pipe; a call that overruns its deadline gets its worker killed (SIGKILL)
and replaced, and the other workers carry on.

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
    """Worker loop: receive (prediction, gold), reply with math_equal's verdict; None ends the loop."""
    from care.verifiers.math_answers import math_equal

    _limit_memory(memory_limit_mb)
    connection.send(_READY)
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            verdict = math_equal(*job)
        except Exception:  # MemoryError, RecursionError, parser bugs: one wrong answer, not a dead worker
            verdict = False
        connection.send(bool(verdict))


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

    def send(self, job: tuple[str, str]) -> bool:
        """Hand over a job; False when the worker has died (booted or not)."""
        # an idle worker has nothing to say: anything readable is the end-of-file of one that died
        # (the pipe shows the death before the process handle does)
        if not self.wait_ready() or not self.process.is_alive() or self.connection.poll(0):
            return False
        try:
            self.connection.send(job)
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
        """Verdicts for (prediction, gold) jobs, in order; each job gets `timeout_s` once a worker has it."""
        outcomes: list[MathOutcome | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        in_flight: dict[Connection, tuple[_Worker, int, float]] = {}
        try:
            while pending or in_flight:
                while pending:
                    worker = self._borrow(block=not in_flight)
                    if worker is None:
                        break
                    index = pending.popleft()
                    try:
                        sent = worker.send(jobs[index])
                    except WorkerStartError:
                        self._give_back(self._new_worker())  # keep the pool at full size for the next call
                        raise
                    if sent:
                        in_flight[worker.connection] = (worker, index, time.monotonic() + timeout_s)
                    else:  # it died while idle, not because of this job: retry on its replacement
                        pending.appendleft(index)
                        self._replace(worker)
                if not in_flight:
                    continue
                next_deadline = min(deadline for _, _, deadline in in_flight.values())
                for connection in wait(list(in_flight), timeout=max(0.0, next_deadline - time.monotonic())):
                    worker, index, _ = in_flight.pop(connection)  # type: ignore[arg-type]
                    try:
                        outcomes[index] = MathOutcome(correct=bool(connection.recv()))  # type: ignore[union-attr]
                        self._give_back(worker)
                    except (EOFError, OSError):
                        outcomes[index] = MathOutcome(correct=False)
                        self._replace(worker)
                now = time.monotonic()
                for connection, (worker, index, deadline) in list(in_flight.items()):
                    if deadline <= now:
                        del in_flight[connection]
                        outcomes[index] = MathOutcome(correct=False, timed_out=True)
                        self._replace(worker)
        finally:
            for worker, _, _ in in_flight.values():  # interrupted: their late replies must not leak
                self._replace(worker)
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
