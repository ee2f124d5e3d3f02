"""The console: phase headers, short step lines with ETA, progress as plain lines in a log, and the
before/after table."""

import logging

from care import console
from care.console import Progress, duration, score_table, step_line


def test_a_step_line_holds_the_few_metrics_that_matter_and_the_eta():
    logs = {"train/reward": 0.41234, "train/accuracy": 0.375, "train/kl": 0.0213, "signal/zero_signal_groups": 0.25,
            "train/loss": 0.1, "completions/mean_length": 40.0, "rgr/repair_rate": float("nan")}
    assert step_line(12, 60, logs, 3.1) == ("step 12/60 | reward 0.412 | acc 0.375 | kl 0.021 | zero-signal 0.25 | "
                                            "3.1 s/step | ETA 2m29s")
    assert step_line(1, 2, {}, None) == "step 1/2"


def test_durations_read_as_people_write_them():
    assert (duration(59.6), duration(61), duration(3725), duration(float("inf"))) == ("1m00s", "1m01s", "1h02m", "?")


def test_the_table_gives_each_benchmark_before_after_and_the_change():
    table = score_table({"mathvista": 40.0, "synthetic": 49.48, "macro": 44.74, "macro_std": 0.0, "n": {}},
                        {"mathvista": 42.5, "synthetic": 57.42, "macro": 49.96, "macro_std": 0.0, "n": 8, "seeds": 2})
    assert table.splitlines() == ["benchmark  before   after  change",
                                  "mathvista    40.0    42.5    +2.5",
                                  "synthetic    49.5    57.4    +7.9",
                                  "macro        44.7    50.0    +5.2"]


def test_progress_in_a_log_is_a_plain_line_now_and_then(caplog, monkeypatch):
    monkeypatch.setattr(console, "on_terminal", lambda: False)
    monkeypatch.setattr(console, "PLAIN_EVERY_S", 3600.0)
    with caplog.at_level(logging.INFO, logger="care.console"), Progress(3, "after-passes", unit="pass") as progress:
        for _ in range(3):
            progress.update()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["after-passes: 3/3 pass, ETA 0m00s"]  # not one per update: only the end within the hour


def test_a_header_names_the_phase_and_what_it_does(caplog):
    with caplog.at_level(logging.INFO, logger="care.console"):
        console.header(2, 5, "before RL", "reusing /cache/eval/before-abc")
    assert caplog.records[0].getMessage() == "──────── 2/5 before RL: reusing /cache/eval/before-abc ────────"
