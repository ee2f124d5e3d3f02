"""Reflection-Guided Resampling: repair contexts, the splice, the objective's verdict, no gold leak."""

from dataclasses import asdict

import pytest
import torch

from care.config import RGRConfig
from care.objective import CareConfig, score_subgroups
from care.repair import CUE_TEMPLATES, cue_text, repair_context
from care.trainer.trl_surface import LOSS_MASK
from tests.trainer_helpers import build_tiny_trainer, tiny_config

CUE = " <cue> "


# ---------------------------------------------------------------- repair contexts (text)
@pytest.mark.parametrize("response, expected", [
    ("<think>a b</think><answer>x</answer>", f"<think>a b{CUE}</think><answer>"),
    ("<think>a b</think>\n<answer>x</answer>", f"<think>a b{CUE}</think>\n<answer>"),
    # no </think>: the think ends where <answer> starts
    ("<think>a b<answer>x</answer>", f"<think>a b{CUE}</think><answer>"),
    # no </think>, no <answer>: everything is reasoning
    ("<think>a b", f"<think>a b{CUE}</think><answer>"),
    # no <answer> after the think: one is appended, stray text dropped
    ("<think>a</think> x", f"<think>a{CUE}</think><answer>"),
    # no think tags at all: the text before <answer> is the reasoning
    ("a b <answer>x</answer>", f"<think>a b {CUE}</think><answer>"),
    ("", f"<think>{CUE}</think><answer>"),
    # only the first </think> counts; the cut is right after the first <answer> that follows it
    ("<think>a</think><answer>x</answer><answer>y</answer>", f"<think>a{CUE}</think><answer>"),
])
def test_repair_context_inserts_the_cue_before_think_close_and_cuts_after_answer(response, expected):
    assert repair_context(response, CUE) == expected


def test_no_cue_variant_is_the_same_cut_without_the_cue():
    response = "<think>1 red 2 blue. marked: 2 blue. color: red</think><answer>red</answer>"
    assert repair_context(response, "") == "<think>1 red 2 blue. marked: 2 blue. color: red</think><answer>"


def test_cue_templates_and_custom_text():
    assert "Corrected final answer:" in cue_text("structured")
    assert "previous reasoning had an error" in cue_text("paper")
    assert cue_text("custom", "Check again.") == "Check again."
    with pytest.raises(ValueError, match="cue_text"):
        cue_text("custom", None)
    with pytest.raises(ValueError, match="structured, paper, custom"):
        cue_text("nope")


@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "maybe"}, "rgr.variant='maybe' is not accepted; choose one of cue, no_cue, random"),
    ({"train_context": "both"}, "rgr.train_context='both'"),
    ({"cue": "custom"}, "needs rgr.cue_text"),
    ({"cue_text": "x"}, "rgr.cue=custom"),
    ({"max_cue_tokens": 0}, "rgr.max_cue_tokens=0"),
    ({"top_p": 1.5}, "rgr.top_p=1.5"),
])
def test_bad_rgr_settings_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        RGRConfig(**kwargs)


# ---------------------------------------------------------------- the trainer side
class _Recorder:
    """Wraps a trainer's sampling, RGR step and generate calls to keep what they saw."""

    def __init__(self, trainer):
        self.steps, self.repair_prompts, self.outputs, self.rounds, self.in_repair = [], [], [], [], False
        resampler = trainer.care_step.resampler
        repair, generate, step = resampler.repair, trainer._generate_single_turn, trainer._generate_and_score_completions
        sample = trainer.sample

        def recording_repair(batch, prompts, inputs, selection, group_size):
            before = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
            self.in_repair = True
            try:
                repairs = repair(batch, prompts, inputs, selection, group_size)
            finally:
                self.in_repair = False
            after = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
            self.steps.append({"before": before, "after": after, "selection": selection, "repairs": repairs})
            return repairs

        def recording_generate(prompt_ids, *args, **kwargs):
            if self.in_repair:
                self.repair_prompts.append([list(ids) for ids in prompt_ids])
            return generate(prompt_ids, *args, **kwargs)

        def recording_step(inputs):
            self.outputs.append(step(inputs))
            return self.outputs[-1]

        def recording_sample(inputs, read_features):
            self.rounds.append(sample(inputs, read_features))
            return self.rounds[-1]
        resampler.repair, trainer._generate_single_turn = recording_repair, recording_generate
        trainer._generate_and_score_completions, trainer.sample = recording_step, recording_sample


def _train(cache_dir, tmp_path, steps=1, **rgr):
    cfg = tiny_config(cache_dir, "care", steps=steps, rgr=RGRConfig(max_new_tokens=12, **rgr))
    trainer = build_tiny_trainer(cfg, tmp_path)
    recorder = _Recorder(trainer)
    trainer.train()
    return trainer, recorder


def _repaired_rows(step, group_size):
    selection, outcome = step["selection"], step["repairs"].outcome
    return [g * group_size + int(selection.repair_candidate[g]) for g in range(outcome.numel()) if outcome[g] >= 0]


@pytest.mark.parametrize("variant", ["cue", "no_cue", "random"])
def test_a_short_run_logs_attempts_and_a_finite_repair_rate(variant, cache_dir, tmp_path):
    trainer, recorder = _train(cache_dir, tmp_path, steps=2, variant=variant)
    logged = [entry for entry in trainer.state.log_history if "rgr/attempts" in entry]
    assert len(logged) == 2
    assert sum(entry["rgr/attempts"] for entry in logged) > 0
    for entry in logged:
        assert 0.0 <= entry["rgr/repair_rate"] <= 1.0
        assert entry["rgr/successes"] <= entry["rgr/attempts"]
    # one repair at most per group, and only where there is an anchor and a hard negative
    for step in recorder.steps:
        selection, outcome = step["selection"], step["repairs"].outcome
        eligible = (selection.anchor_index >= 0) & ~selection.rescued & (selection.k_prime > 0)
        assert torch.equal(outcome >= 0, eligible)
        nearest = selection.repair_candidate[eligible]
        assert all(int(c) in selection.negative_index[g].tolist()
                   for g, c in zip(eligible.nonzero().flatten().tolist(), nearest.tolist(), strict=True))


def test_splice_keeps_batch_shape_and_only_changes_repaired_rows(cache_dir, tmp_path):
    trainer, recorder = _train(cache_dir, tmp_path)
    step = recorder.steps[-1]
    before, after = step["before"], step["after"]
    rows = _repaired_rows(step, trainer.num_generations)
    assert rows, "no repair happened in this batch"
    assert after["completion_ids"].size(0) == before["completion_ids"].size(0)
    assert torch.equal(after["prompt_ids"], before["prompt_ids"])
    width = before["completion_ids"].size(1)
    untouched = [r for r in range(before["completion_ids"].size(0)) if r not in rows]
    assert torch.equal(after["completion_ids"][untouched, :width], before["completion_ids"][untouched])
    assert (after["completion_mask"][untouched, width:] == 0).all()
    assert not any(torch.equal(after["completion_ids"][r, :width], before["completion_ids"][r]) for r in rows)
    # prompt_only: the whole spliced completion is trained
    assert torch.equal(after[LOSS_MASK][rows], after["completion_mask"][rows])


def test_spliced_rows_get_the_objectives_advantage_for_their_repair_outcome(cache_dir, tmp_path):
    trainer, recorder = _train(cache_dir, tmp_path)
    step, result = recorder.steps[-1], trainer.care_step.last_objective
    rewards = trainer.care_step.verdicts(recorder.rounds[-1].rewards_per_func)[0].view_as(result.advantages)
    cfg = trainer.care_step.care_config
    expected = score_subgroups(step["selection"], rewards, CareConfig(**asdict(cfg)),
                               step["repairs"].outcome, step["repairs"].reward)
    assert torch.equal(expected.advantages, result.advantages)
    for row in _repaired_rows(step, trainer.num_generations):
        group, column = divmod(row, trainer.num_generations)
        value = result.advantages[group, column].item()
        if step["repairs"].outcome[group] == 1:
            assert result.is_positive[group, column]
        else:  # a failed repair stays a negative, scaled by s_refl instead of s
            anchor = int(result.anchor_index[group])
            plain = score_subgroups(step["selection"], rewards, CareConfig(**asdict(cfg)))
            eq = result.eq_factor[group].item()
            assert value <= 0
            assert value == pytest.approx(plain.advantages[group, column].item() * cfg.s_refl / cfg.s, abs=1e-6)
            assert result.advantages[group, anchor] > 0 or eq == 0
    # the handed-back per-token advantages of every row sum to its sequence advantage
    trained = recorder.outputs[-1]
    assert torch.allclose(trained["advantages"].sum(dim=1), result.advantages.reshape(-1).float(), atol=1e-5)


def test_with_prefix_trains_only_the_continuation_and_rescores_reference_logps(cache_dir, tmp_path):
    trainer, recorder = _train(cache_dir, tmp_path, train_context="with_prefix")
    step = recorder.steps[-1]
    after, rows = step["after"], _repaired_rows(step, trainer.num_generations)
    assert rows
    for row in rows:
        length = int(after["completion_mask"][row].sum())
        trained = after[LOSS_MASK][row, :length]
        assert trained[0] == 0 and trained[-1] == 1  # context first, then the decoded continuation
        assert trained.diff().ge(0).all()  # one switch from context to continuation
    # reference log-probs of spliced rows are recomputed on exactly the spliced tokens
    from care.trainer.batch_rows import take_rows
    from care.trainer.trl_surface import forward_kwargs
    subset = take_rows([after], [(0, row) for row in rows], trainer.processing_class.tokenizer.pad_token_id)
    ids = torch.cat([subset["prompt_ids"], subset["completion_ids"]], dim=1)
    mask = torch.cat([subset["prompt_mask"], subset["completion_mask"]], dim=1)
    with torch.no_grad():
        ref, _, _ = trainer._get_per_token_logps_and_entropies(trainer.ref_model, ids, mask, subset["completion_ids"].size(1),
                                                               **forward_kwargs(subset))
    valid = subset["completion_mask"].bool()
    assert torch.allclose(after["ref_per_token_logps"][rows][valid], ref[valid], atol=1e-5)


def test_engine_importance_ratio_and_old_logps_are_set_for_spliced_rows(cache_dir, tmp_path):
    trainer, recorder = _train(cache_dir, tmp_path)
    step = recorder.steps[-1]
    output = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in step["before"].items()}
    batch, width = output["completion_ids"].shape
    output["old_per_token_logps"] = torch.zeros(batch, width)
    output["importance_sampling_ratio"] = torch.full((batch, width), 0.5)  # as vLLM's token-level correction
    tokens = trainer.processing_class.tokenizer.encode("red</answer>", add_special_tokens=False)[:3]
    context = trainer.processing_class.tokenizer.encode("<think>x</think><answer>", add_special_tokens=False)
    trainer.care_step.resampler._splice(output, [1], [context], [tokens])
    assert (output["importance_sampling_ratio"][1] == 1.0).all()
    assert (output["importance_sampling_ratio"][0] == 0.5).all()
    assert (output["old_per_token_logps"][0] == 0).all()
    assert (output["old_per_token_logps"][1, : len(tokens)] < 0).all()  # real log-probs of the spliced tokens


def test_no_gold_answer_reaches_a_repair_context(cache_dir, tmp_path):
    sentinel = "GOLD-7f3a"
    cfg = tiny_config(cache_dir, "care", steps=2, rgr=RGRConfig(max_new_tokens=8))
    trainer = build_tiny_trainer(cfg, tmp_path)
    trainer.train_dataset = trainer.train_dataset.map(lambda row: {"answer": sentinel})
    recorder = _Recorder(trainer)
    trainer.train()
    assert recorder.repair_prompts, "no repair decode happened"
    decode = trainer.processing_class.tokenizer.decode
    steps_with_repairs = [step for step in recorder.steps if (step["repairs"].outcome >= 0).any()]
    for prompts, step in zip(recorder.repair_prompts, steps_with_repairs, strict=True):
        before = step["before"]
        for ids, row in zip(prompts, _repaired_rows(step, trainer.num_generations), strict=False):
            text = decode(ids, skip_special_tokens=False)
            assert sentinel not in text
            # the context after the prompt is built from the failed response and the cue only
            n = int(before["completion_mask"][row].sum())
            response = decode(before["completion_ids"][row, :n].tolist(), skip_special_tokens=True)
            assert text.endswith(repair_context(response, CUE_TEMPLATES["structured"]))
