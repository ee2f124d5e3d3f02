"""Hostile inputs and the worker pool: nothing executes, every call is bounded, the pool heals itself."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from care.verifiers import VerifierPool, get_pool, verify, verify_batch

DEADLINE_S = 5.0
SLACK_S = 2.0  # process start-up and scheduling on two shared cores


def formatted(answer: str) -> str:
    return f"<think>hmm</think><answer>{answer}</answer>"


def timed_verify(*args, timeout_s: float = DEADLINE_S, **kwargs):
    started = time.monotonic()
    result = verify(*args, timeout_s=timeout_s, **kwargs)
    return result, time.monotonic() - started


def injection_payloads(marker: Path) -> list[str]:
    command = f"touch {marker}"
    return [
        f"__import__('os').system('{command}')",
        f"eval(\"__import__('os').system('{command}')\")",
        f"exec(\"import os; os.system('{command}')\")",
        f"$__import__('os').system('{command}')$",
        f"\\boxed{{__import__('os').system('{command}')}}",
        f"1 + __import__('os').system('{command}')",
        f"lambda: __import__('os').system('{command}')",
        f"\\text{{{command}}}; __import__('subprocess').run(['touch', '{marker}'])",
    ]


@pytest.mark.parametrize("answer_type", ["math", "choice", "text"])
def test_code_injection_is_never_executed(tmp_path: Path, answer_type: str) -> None:
    marker = tmp_path / "pwned"
    for payload in injection_payloads(marker):
        for response in (formatted(payload), payload):
            result, elapsed = timed_verify(
                response, {"choice": "A", "math": "7"}.get(answer_type, "1"), answer_type
            )
            assert not result.correct
            assert elapsed < DEADLINE_S + SLACK_S
        # golds are trusted data, but a poisoned one must not execute either
        if answer_type != "choice":
            verify(formatted("1"), payload, answer_type)
    time.sleep(0.2)  # a spawned shell would have had time to create the marker
    assert not marker.exists()


def test_one_megabyte_response_returns_fast() -> None:
    filler = "Let me reconsider the problem once more. " * 26_000  # about 1 MB
    cases = [
        (f"<think>{filler}</think><answer>\\frac{{1}}{{2}}</answer>", "0.5", True),
        (f"<think>x</think><answer>{filler} 7</answer>", "7", True),  # prose: math-verify's own extraction
        (filler + "\\boxed{" + filler, "7", False),
        ("<answer>" + "9" * 1_000_000 + "</answer>", "9", False),
        (filler, "7", False),
    ]
    for response, gold, expected in cases:
        assert len(response) >= 1_000_000
        result, elapsed = timed_verify(response, gold, "math")
        assert result.correct is expected
        assert result.parsed is None or len(result.parsed) <= 2000
        assert elapsed < 2.0
    _, elapsed = timed_verify(filler + "the answer is B", "B", "choice")
    assert elapsed < 1.0


@pytest.mark.parametrize(
    "answer",
    [
        "\\frac{1}{" * 500 + "2" + "}" * 500,
        "{" * 500 + "1" + "}" * 500,
        "(" * 500 + "1" + ")" * 500,
        "\\sqrt{" * 300 + "2" + "}" * 300,
        "\\frac{1}{" * 500,
    ],
    ids=["frac500", "braces500", "parens500", "sqrt300", "unclosed"],
)
def test_deep_nesting_returns_within_deadline(answer: str) -> None:
    result, elapsed = timed_verify(formatted(answer), "1", "math")
    assert not result.correct
    assert elapsed < DEADLINE_S + SLACK_S


@pytest.mark.parametrize("answer", ["9^9^9^9", "9^{9^{9^{9}}}", "10^{10^{10^{10}}} - 10^{10^{10^{10}}}"])
def test_pathological_exponents_return_within_deadline(answer: str) -> None:
    deadline = 2.0
    result, elapsed = timed_verify(formatted(answer), "1", "math", timeout_s=deadline)
    assert not result.correct
    assert elapsed < deadline + SLACK_S


def test_timeout_kills_the_stuck_worker_and_the_pool_keeps_working() -> None:
    pool = get_pool()
    pids_before = set(pool.worker_pids())
    result, elapsed = timed_verify(formatted("9^{9^{9^{9}}}"), "1", "math", timeout_s=0.5)
    assert result.timed_out and not result.correct and result.parsed == "9^{9^{9^{9}}}"
    assert elapsed < 0.5 + SLACK_S
    assert pool.size == len(pool.worker_pids())
    assert set(pool.worker_pids()) != pids_before  # one worker was replaced
    for pid in pids_before - set(pool.worker_pids()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the stuck worker is gone, not left spinning
    # math-verify still answers through the pool (these are not fast-path cases)
    assert verify(formatted("\\frac{\\sqrt{2}}{2}"), "\\sqrt{2}/2", "math").correct
    batch = verify_batch(
        [formatted("9^{9^{9^{9}}}"), formatted("(x+1)^2")], ["1", "x^2+2x+1"], "math", timeout_s=2.0
    )
    assert [r.timed_out for r in batch] == [True, False]
    assert [r.correct for r in batch] == [False, True]


def test_workers_that_died_while_idle_are_replaced_without_losing_answers() -> None:
    pool = VerifierPool(workers=2)
    try:
        assert pool.run([("\\frac{1}{2}", "0.5")])[0].correct  # workers are up
        for pid in pool.worker_pids():
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        outcomes = pool.run([("\\frac{1}{2}", "0.5"), ("\\frac{1}{3}", "1/3"), ("\\frac{1}{3}", "1/4")])
        assert [outcome.correct for outcome in outcomes] == [True, True, False]
    finally:
        pool.close()


def _wait_until_gone(pids, limit_s: float = 5.0) -> None:
    """SIGKILL is asynchronous: wait until the processes are reaped."""
    deadline = time.monotonic() + limit_s
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)


def test_workers_killed_while_booting_are_replaced_not_reported_as_setup_errors() -> None:
    pool = VerifierPool(workers=2)
    try:
        pids = pool.worker_pids()
        for pid in pids:  # before either has said it is ready
            os.kill(pid, signal.SIGKILL)
        _wait_until_gone(pids)
        outcomes = pool.run([("\\frac{1}{2}", "0.5"), ("\\frac{1}{3}", "1/4")])
        assert [outcome.correct for outcome in outcomes] == [True, False]
    finally:
        pool.close()


def test_a_worker_crashing_mid_job_costs_that_answer_only() -> None:
    pool = VerifierPool(workers=1)
    try:
        (pid,) = pool.worker_pids()
        assert pool.run([("\\frac{1}{2}", "0.5")])[0].correct
        outcomes: list = []
        runner = threading.Thread(
            target=lambda: outcomes.extend(pool.run([("9^{9^{9^{9}}}", "1")], timeout_s=30))
        )
        started = time.monotonic()
        runner.start()
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        runner.join(timeout=10)
        assert time.monotonic() - started < 10
        assert [(o.correct, o.timed_out) for o in outcomes] == [(False, False)]
        assert pool.run([("\\frac{1}{2}", "0.5")])[0].correct
        assert pool.worker_pids() != [pid]
    finally:
        pool.close()


def test_a_worker_that_cannot_start_is_an_error_not_a_wrong_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from care.verifiers import pool as pool_module

    pool = VerifierPool(workers=1)
    try:
        # as if the worker never booted: the parent waits for a readiness message it will never get
        # (a zero boot timeout raced with fast worker starts and sometimes saw the real message)
        monkeypatch.setattr(pool_module, "_READY", "a readiness message no worker sends")
        with pytest.raises(pool_module.WorkerStartError, match="__main__"):
            pool.run([("\\frac{1}{2}", "0.5")])
        monkeypatch.undo()
        assert pool.run([("\\frac{1}{2}", "0.5")])[0].correct  # the pool did not shrink or hang
    finally:
        pool.close()


def test_pool_is_safe_to_share_between_threads() -> None:
    jobs = [(formatted(f"\\frac{{{n}}}{{{2 * n}}}"), "0.5") for n in range(1, 9)]
    results: list[bool] = []
    lock = threading.Lock()

    def score(response: str, gold: str) -> None:
        correct = verify(response, gold, "math").correct
        with lock:
            results.append(correct)

    threads = [threading.Thread(target=score, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [True] * len(jobs)


def test_importing_the_package_does_not_import_math_verify() -> None:
    import subprocess
    import sys

    code = "import sys, care.verifiers; print(sorted(m for m in ('math_verify', 'sympy', 'torch') if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
