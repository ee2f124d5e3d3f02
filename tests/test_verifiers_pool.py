"""Batched submission in the verifier pool: chunks keep a gold's jobs together, every job keeps its own
deadline inside a chunk, and identical comparisons are verified once."""

from __future__ import annotations

import time

from care.verifiers import VerifierPool, get_pool, verify_batch
from care.verifiers.pool import CHUNKS_PER_WORKER, _chunks

SLACK_S = 3.0  # process start-up and scheduling on two shared cores
HOSTILE = ("9^{9^{9^{9}}}", "1")  # math-verify cannot finish this; only the deadline ends it


def formatted(answer: str) -> str:
    return f"<think>hmm</think><answer>{answer}</answer>"


def test_chunks_cover_every_job_once_and_keep_a_gold_together() -> None:
    golds = ["a", "b", "c", "a", "b", "a", "c", "a"] * 5
    jobs = [(f"p{index}", gold) for index, gold in enumerate(golds)]
    chunks = _chunks(jobs, workers=1)
    assert sorted(index for chunk in chunks for index in chunk) == list(range(len(jobs)))
    assert len(chunks) <= CHUNKS_PER_WORKER
    # sorted by gold: each chunk holds at most two golds (one boundary), each gold spans adjacent chunks
    order = [jobs[index][1] for chunk in chunks for index in chunk]
    assert order == sorted(golds)
    assert all(len({jobs[index][1] for index in chunk}) <= 2 for chunk in chunks)


def test_chunks_split_one_big_gold_over_the_workers() -> None:
    jobs = [(f"p{index}", "same gold") for index in range(100)]
    chunks = _chunks(jobs, workers=2)
    assert 2 < len(chunks) <= 2 * CHUNKS_PER_WORKER  # one gold must not serialise the batch
    assert [index for chunk in chunks for index in chunk] == list(range(100))  # stable: input order


def test_a_hostile_job_inside_a_chunk_times_out_alone_and_the_rest_of_its_chunk_is_answered() -> None:
    pool = VerifierPool(workers=1)
    try:
        # one worker and 24 jobs with the same gold: chunks of 3 in input order, the hostile job second
        jobs = [(f"\\frac{{{n}}}{{{n}}}", "1") for n in range(1, 25)]
        jobs[1] = HOSTILE
        assert len(_chunks(jobs, pool.size)[0]) == 3
        pid_before = pool.worker_pids()
        started = time.monotonic()
        outcomes = pool.run(jobs, timeout_s=1.0)
        elapsed = time.monotonic() - started
        assert [outcome.timed_out for outcome in outcomes] == [index == 1 for index in range(24)]
        assert [outcome.correct for outcome in outcomes] == [index != 1 for index in range(24)]
        assert elapsed < 1.0 + SLACK_S  # one deadline, not one per job of the chunk
        assert pool.worker_pids() != pid_before  # the stuck worker was replaced
        assert len(pool.worker_pids()) == pool.size
    finally:
        pool.close()


def test_two_hostile_jobs_in_one_chunk_each_get_their_own_deadline() -> None:
    pool = VerifierPool(workers=1)
    try:
        jobs = [HOSTILE, HOSTILE] + [(f"\\frac{{{n}}}{{{n}}}", "1") for n in range(1, 23)]
        assert _chunks(jobs, pool.size)[0] == [0, 1, 2]
        started = time.monotonic()
        outcomes = pool.run(jobs, timeout_s=0.5)
        elapsed = time.monotonic() - started
        assert [(outcome.correct, outcome.timed_out) for outcome in outcomes[:3]] == [
            (False, True),
            (False, True),
            (True, False),
        ]
        assert all(outcome.correct for outcome in outcomes[3:])
        assert elapsed < 2 * 0.5 + SLACK_S
    finally:
        pool.close()


def test_identical_comparisons_are_sent_to_the_pool_once(monkeypatch) -> None:
    pool = get_pool()
    sent: list[list[tuple[str, str]]] = []
    original_run = pool.run

    def recording_run(jobs, timeout_s):
        sent.append(list(jobs))
        return original_run(jobs, timeout_s=timeout_s)

    monkeypatch.setattr(pool, "run", recording_run)
    responses = [formatted("\\frac{2}{4}"), formatted("(x+1)^2"), formatted("\\frac{2}{4}"), formatted("2/4")]
    results = verify_batch(responses, ["0.5", "x^2+2x+1", "0.5", "0.5"], "math")
    assert [result.correct for result in results] == [True, True, True, True]
    assert len(sent) == 1
    assert sorted(sent[0]) == sorted({("\\frac{2}{4}", "0.5"), ("(x+1)^2", "x^2+2x+1"), ("2/4", "0.5")})
