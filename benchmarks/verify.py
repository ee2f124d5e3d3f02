"""Verifier throughput: in-process (no pool, no deadline) vs the worker pool, on 2,000 mixed responses.

The response set is deterministic (seeded): math / choice / text answers, correct and wrong, about
one in eight malformed (no tags, boxed only, unclosed tag, trailing chatter). Both runs score the same
set and must agree. Start-up (math-verify import, pool and forkserver start) is excluded from timings.

    python benchmarks/verify.py [--n 2000] [--workers N]

The last line printed is a JSON object: n, single_rps, pool_rps, pool_over_single (the wall-clock
ratio), pool_workers, math_verify_jobs, ... On a shared machine the wall-clock ratio says more about the
neighbours than the pool, so CPU seconds are reported too (Linux): single_cpu_s for the in-process run,
pool_parent_cpu_s and pool_worker_cpu_s (each worker) for the pooled one, and work_ratio =
single_cpu_s / (pool_parent_cpu_s + max(pool_worker_cpu_s)), what the wall-clock ratio would be on idle
cores if the parent's work never overlapped the workers'.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

from care.verifiers import configure_pool, get_pool, verify_batch
from care.verifiers.core import _prepare

ANIMALS = ["cat", "dog", "bird", "fish", "horse"]

# (gold, correct variants, wrong variants)
MATH_ITEMS = [
    ("{n}", ["{n}", "{n}.0", "\\boxed{{{n}}}", "{n} cm", "x = {n}", "${n}$"], ["{m}", "{n}0", "{n}.5"]),
    (
        "\\frac{{{n}}}{{{d}}}",
        ["\\frac{{{n}}}{{{d}}}", "{n}/{d}", "\\dfrac{{{n}}}{{{d}}}"],
        ["\\frac{{{d}}}{{{n}}}", "{n}.{d}"],
    ),
    ("{half}", ["\\frac{{{n}}}{{2}}", "{half}", "{pct}\\%"], ["{n}", "\\frac{{{n}}}{{3}}"]),
    ("{pct}\\%", ["{pct}\\%", "{pct}", "{half}"], ["{m}\\%", "{n}"]),
    ("[{a}, {b})", ["[{a},{b})", "[{a}, {b})"], ["({a}, {b})", "[{a}, {b}]"]),
    ("\\{{{a}, {b}\\}}", ["\\{{{b}, {a}\\}}", "{a}, {b}"], ["\\{{{a}\\}}", "\\{{{a}, {m}\\}}"]),
    ("(x+{a})^2", ["x^2+{twice_a}x+{a_squared}", "(x+{a})^{{2}}"], ["x^2+{a_squared}", "(x-{a})^2"]),
    ("{a}\\sqrt{{2}}", ["\\sqrt{{{two_a_squared}}}", "{a}\\sqrt{{2}}"], ["{a}\\sqrt{{3}}", "{a_squared}"]),
]
CHOICE_FORMS = [
    "{L}",
    "({L})",
    "{L}.",
    "The answer is {L}",
    "\\boxed{{{L}}}",
    "Option {L}",
    "{text}",
    "I think {W} is wrong, the answer is {L}",
]
TEXT_ITEMS = [
    ("Paris", ["paris", "Paris.", "The Paris"], ["London", "Paris, France"]),
    ("yes", ["Yes", "yes."], ["no", "yes, because"]),
    ("blue whale", ["Blue Whale", "the blue whale"], ["whale", "blue"]),
]


def wrap(answer: str, rng: random.Random) -> str:
    style = rng.random()
    if style < 0.88:
        return f"<think>Let me work through this step by step. {'Consider the figure. ' * rng.randint(1, 20)}</think>\n<answer>{answer}</answer>"
    if style < 0.92:
        return f"Reasoning... so the final answer is \\boxed{{{answer}}}."
    if style < 0.96:
        return f"<think>reasoning</think><answer>{answer}"  # unclosed: falls back to the last line
    return f"<think>ok</think><answer>{answer}</answer>\nLet me know if you need more help!"


def math_example(rng: random.Random) -> tuple[str, str, str, None]:
    gold_template, right, wrong = rng.choice(MATH_ITEMS)
    n, a = rng.randint(1, 99), rng.randint(1, 9)
    values = {
        "n": n,
        "m": n + rng.randint(1, 9),
        "d": rng.randint(2, 9),
        "half": n / 2,
        "pct": n * 50,
        "a": a,
        "b": a + rng.randint(1, 9),
        "twice_a": 2 * a,
        "a_squared": a * a,
        "two_a_squared": 2 * a * a,
    }
    values["half"] = f"{n / 2:g}"
    values["pct"] = f"{n * 50:g}"
    answer = rng.choice(right if rng.random() < 0.6 else wrong)
    return wrap(answer.format(**values), rng), gold_template.format(**values), "math", None


def choice_example(rng: random.Random) -> tuple[str, str, str, list[str]]:
    choices = rng.sample(ANIMALS, 4)
    gold_index = rng.randrange(4)
    index = gold_index if rng.random() < 0.6 else (gold_index + 1) % 4
    letter, other = "ABCD"[index], "ABCD"[(index + 2) % 4]
    answer = rng.choice(CHOICE_FORMS).format(L=letter, W=other, text=choices[index])
    gold = "ABCD"[gold_index] if rng.random() < 0.8 else choices[gold_index]
    return wrap(answer, rng), gold, "choice", choices


def text_example(rng: random.Random) -> tuple[str, str, str, None]:
    gold, right, wrong = rng.choice(TEXT_ITEMS)
    return wrap(rng.choice(right if rng.random() < 0.6 else wrong), rng), gold, "text", None


def build_examples(n: int, seed: int = 0) -> list[tuple[str, str, str, list[str] | None]]:
    rng = random.Random(seed)
    makers = [math_example] * 5 + [choice_example] * 3 + [text_example] * 2
    return [rng.choice(makers)(rng) for _ in range(n)]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux /proc), None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=None, help="pool size (default: CPU count, at most 8)")
    args = parser.parse_args()

    examples = build_examples(args.n)
    responses, golds, types, choices = (list(column) for column in zip(*examples, strict=True))
    math_verify_jobs = sum(_prepare(*example, "lenient")[1] is not None for example in examples)

    verify_batch(responses[:50], golds[:50], types[:50], choices[:50], in_process=True)  # import math-verify
    started, started_cpu = time.perf_counter(), time.process_time()
    single = verify_batch(responses, golds, types, choices, in_process=True)
    single_s, single_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu

    configure_pool(workers=args.workers)
    pool = get_pool()
    verify_batch(responses[:50], golds[:50], types[:50], choices[:50])  # start the workers
    worker_pids = [pid for pid in pool.worker_pids() if pid is not None]
    workers_before = [cpu_seconds(pid) for pid in worker_pids]
    started, started_cpu = time.perf_counter(), time.process_time()
    pooled = verify_batch(responses, golds, types, choices)
    pool_s, parent_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    workers_after = [cpu_seconds(pid) for pid in worker_pids]
    worker_cpu_s = [
        round(after - before, 2)
        for before, after in zip(workers_before, workers_after, strict=True)
        if before is not None and after is not None
    ]
    work_ratio = (
        round(single_cpu_s / (parent_cpu_s + max(worker_cpu_s)), 2)
        if len(worker_cpu_s) == len(worker_pids) and worker_cpu_s
        else None  # a worker was replaced (timeout) or /proc is missing
    )

    agree = [r.correct for r in single] == [r.correct for r in pooled]
    summary = {
        "n": args.n,
        "single_rps": round(args.n / single_s, 1),
        "pool_rps": round(args.n / pool_s, 1),
        "pool_over_single": round(single_s / pool_s, 2),
        "pool_workers": pool.size,
        "single_cpu_s": round(single_cpu_s, 2),
        "pool_parent_cpu_s": round(parent_cpu_s, 2),
        "pool_worker_cpu_s": worker_cpu_s,
        "work_ratio": work_ratio,
        "load_1min": round(os.getloadavg()[0], 1),
        "math_verify_jobs": math_verify_jobs,
        "accuracy": round(sum(r.correct for r in pooled) / args.n, 3),
        "formatted": round(sum(r.formatted for r in pooled) / args.n, 3),
        "timeouts": sum(r.timed_out for r in pooled),
        "single_pool_agree": agree,
    }
    print(f"single process: {single_s:.2f} s; pool of {pool.size}: {pool_s:.2f} s")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
