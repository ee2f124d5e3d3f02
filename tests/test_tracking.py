"""The W&B mirror: which run it opens (group, job type, tags, id, dir), when it is offline, that it
always finishes, and that only rank 0 opens one (wandb itself replaced by a recorder); resuming a
run's metrics.jsonl after a kill."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import pytest

from care.config import Config
from care.tracking import RunFiles, WandbMirror, wandb_mode


class Recorder:
    def __init__(self):
        self.inits, self.logged, self.summaries, self.finished = [], [], [], []

    def module(self):
        recorder = self

        class Run:
            summary = types.SimpleNamespace(update=lambda values: recorder.summaries.append(values))

            def log(self, metrics, step):
                recorder.logged.append((step, metrics))

            def finish(self, exit_code=0):
                recorder.finished.append(exit_code)

        module = types.ModuleType("wandb")
        module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # accelerate probes it
        module.init = lambda **kwargs: recorder.inits.append(kwargs) or Run()
        return module


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "wandb", rec.module())
    monkeypatch.setenv("WANDB_MODE", "offline")
    return rec


def test_the_run_is_named_grouped_and_tagged_from_the_sweep_and_choices(recorder, tmp_path):
    cfg = Config(sweep="components")
    cfg.wandb.tags = ["mine"]
    mirror = WandbMirror(cfg, tmp_path, run_id="abc123", choices={"algorithm": "care", "backbone": "tiny_qwen2_5_vl"})
    mirror.log(3, {"train/reward": 0.5, "note": "text is not a metric"})
    mirror.finish()
    mirror.finish()  # finishing twice is harmless
    [init] = recorder.inits
    assert (init["group"], init["job_type"], init["id"], init["resume"]) == ("components", "train", "abc123", "allow")
    assert init["dir"] == str(tmp_path) and init["mode"] == "offline"
    assert init["tags"] == ["mine", "algorithm=care", "backbone=tiny_qwen2_5_vl"]
    assert init["config"]["choices"] == {"algorithm": "care", "backbone": "tiny_qwen2_5_vl"}
    assert init["config"]["run_key"] == "abc123" and init["config"]["care"]["k"] == cfg.care.k
    assert recorder.logged == [(3, {"train/reward": 0.5})]
    assert recorder.finished == [0]


def test_only_rank_0_opens_a_run_and_writes_files(recorder, tmp_path):
    mirror = WandbMirror(Config(), tmp_path, run_id="abc", enabled=False)
    mirror.log(1, {"x": 1.0})
    mirror.finish()
    assert recorder.inits == [] and recorder.logged == [] and recorder.finished == []
    files = RunFiles(tmp_path / "run", writer=False)
    files.write_run_json(Config(), run_key="abc", sweep=None, label=None, choices={}, world_size=2, code={}, job={}, data=None,
                         data_digest=None)
    files.append_metrics(1, {"x": 1.0})
    files.write_final({"after": {}})
    files.mark_failed(RuntimeError("boom"))
    assert list((tmp_path / "run").iterdir()) == []


def test_a_failed_run_still_finishes_its_wandb_run_and_leaves_its_traceback(recorder, tmp_path, monkeypatch):
    import care.pipeline as pipeline

    def crash(cfg, data, files, mirror):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pipeline, "_train", crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        pipeline.train(Config(), tmp_path / "run")
    assert recorder.finished == [1]
    assert "out of memory" in (tmp_path / "run" / "FAILED").read_text()


def test_wandb_is_offline_without_credentials_and_the_environment_wins(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_mode("auto") == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password key\n")
    assert wandb_mode("auto") == "online"
    assert wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("online") == "disabled"


def test_resume_keeps_rows_up_to_the_checkpoint_and_drops_a_torn_last_line(tmp_path, caplog):
    """What a SIGKILL mid-write leaves: half a JSON line at the end. The requeued job must not die on it."""
    from care.tracking import RunFiles

    files = RunFiles(tmp_path)
    for step in (1, 2, 3):
        files.append_metrics(step, {"train/reward": step / 10})
    with open(files.metrics_path, "a") as f:
        f.write('{"global_step": 4, "train/rew')  # torn: no closing brace, no newline
    files.truncate_metrics(2)
    rows = [json.loads(line) for line in files.metrics_path.read_text().splitlines()]
    assert [r["global_step"] for r in rows] == [1, 2] and rows[1]["train/reward"] == 0.2
    assert "line(s) [4]" in caplog.text
    files.append_metrics(3, {"train/reward": 0.3})  # the resumed run's next row lands on a line of its own
    assert [json.loads(line)["global_step"] for line in files.metrics_path.read_text().splitlines()] == [1, 2, 3]


def test_a_run_killed_before_its_first_checkpoint_starts_its_log_over(tmp_path):
    from care.tracking import RunFiles

    files = RunFiles(tmp_path)
    files.append_metrics(1, {"train/reward": 0.1})
    files.truncate_metrics(0)
    assert files.metrics_path.read_text() == ""
