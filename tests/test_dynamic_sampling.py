"""DAPO's dynamic sampling: the slot rule, and a real trainer that fills its batch with groups that teach."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from care.config import AlgorithmConfig
from care.trainer.dynamic_sampling import SlotFiller, groups_with_signal
from care.trainer.trl_surface import LOSS_MASK, trained_tokens
from tests.trainer_helpers import build_tiny_trainer, half_the_prompts_teach, tiny_config


# ---------------------------------------------------------------- the slot rule, on its own
def test_groups_with_signal_are_those_whose_rewards_differ():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.6]])
    assert groups_with_signal(rewards).tolist() == [False, False, True, True]


@st.composite
def layouts(draw):
    group = draw(st.integers(1, 5))
    processes = draw(st.integers(1, 4))
    per_process_groups = draw(st.integers(1, 4))
    n_groups = per_process_groups * processes
    # rows per process need not be a multiple of G: groups may straddle processes
    if draw(st.booleans()) and group > 1:
        n_groups = draw(st.integers(1, 8)) * processes
    rows = n_groups * group
    if rows % processes:
        n_groups = processes * group
        rows = n_groups * group
    rounds = draw(st.lists(st.lists(st.booleans(), min_size=n_groups, max_size=n_groups), min_size=1, max_size=5))
    return n_groups, group, rows // processes, rounds


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_every_filled_slot_holds_a_group_with_signal_that_lives_on_its_processes(layout):
    n_groups, group, rows_per_process, rounds = layout
    filler = SlotFiller(n_groups, group, rows_per_process)
    offered = {}
    for index, signal in enumerate(rounds):
        filler.offer(index, signal)
        for pool in set(filler.pools):
            offered[pool] = offered.get(pool, 0) + sum(s for g, s in enumerate(signal) if filler.pools[g] == pool)
    used = [source for source in filler.source if source is not None]
    assert len(used) == len(set(used)), "a group fills two slots"
    for slot, source in enumerate(filler.source):
        if source is None:
            continue
        round_index, group_index = source
        assert rounds[round_index][group_index], "a slot holds a group without signal"
        rows = lambda g: {row // rows_per_process for row in range(g * group, (g + 1) * group)}  # noqa: E731
        assert rows(group_index) == rows(slot), "a group would move between processes"
        if len(rows(slot)) > 1:
            assert group_index == slot, "a straddling group left its own slot"
    # the fill is as full as the rule allows: per pool, min(slots, groups with signal offered to it)
    for pool in set(filler.pools):
        slots = [g for g, p in enumerate(filler.pools) if p == pool]
        filled = sum(filler.source[g] is not None for g in slots)
        assert filled == min(len(slots), offered[pool])


def test_round_one_groups_with_signal_stay_in_their_own_slots():
    filler = SlotFiller(4, 2, 8)
    filler.offer(0, [True, False, True, False])
    filler.offer(1, [True, True, False, False])
    assert filler.source == [(0, 0), (1, 1), (0, 2), (1, 0)]  # a later group takes its own slot first


@pytest.mark.parametrize("kwargs, message", [
    ({"max_sampling_rounds": 0}, "algorithm.max_sampling_rounds=0 is out of range"),
    ({"dynamic_sampling": True, "loss_type": "grpo"}, "algorithm.dynamic_sampling=true with algorithm.loss_type='grpo'"),
])
def test_bad_dynamic_sampling_settings_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlgorithmConfig(name="dapo", **kwargs)


# ---------------------------------------------------------------- a real trainer
class Rounds:
    """Records every round TRL generates (through `sample`) and what the step hands back."""

    def __init__(self, trainer):
        self.trainer, self.rounds, self.outputs = trainer, [], []
        sample, step = trainer.sample, trainer._generate_and_score_completions

        def recording_sample(inputs, read_features):
            rollouts = sample(inputs, read_features)
            self.rounds.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in rollouts.batch.items()})
            return rollouts

        def recording_step(inputs):
            self.outputs.append(step(inputs))
            return self.outputs[-1]
        trainer.sample, trainer._generate_and_score_completions = recording_sample, recording_step


def _dapo(cache_dir, tmp_path, steps=2, **algorithm):
    cfg = tiny_config(cache_dir, "dapo", steps=steps, prompts_per_rollout=4)
    cfg.algorithm.mask_truncated_completions = False  # a random tiny policy never stops: keep its tokens
    for key, value in algorithm.items():
        setattr(cfg.algorithm, key, value)
    trainer = build_tiny_trainer(cfg, tmp_path, reward_funcs=(half_the_prompts_teach,))
    return trainer, Rounds(trainer)


def _rows(batch):
    """Each row's completion tokens, without padding."""
    return [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(batch["completion_ids"], batch["completion_mask"],
                                                                    strict=True)]


def _whole_rows(batch):
    """Each row as a comparable whole: prompt tokens, completion tokens, advantage and image pixels."""
    from trl.trainer.utils import split_pixel_values_by_grid

    split = split_pixel_values_by_grid(dict(batch))
    prompts = [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"],
                                                                      strict=True)]
    pixels = [tuple(p.flatten().tolist()) for p in split["pixel_values"]]
    grids = [tuple(g.flatten().tolist()) for g in split["image_grid_thw"]]
    return list(zip(prompts, _rows(batch), batch["advantages"].tolist(), pixels, grids, strict=True))


def test_dapo_fills_its_batch_with_groups_whose_rewards_differ(cache_dir, tmp_path):
    trainer, recorder = _dapo(cache_dir, tmp_path)
    trainer.train()
    logged, group = trainer.state.log_history, trainer.num_generations
    assert all(entry["dynamic/rounds"] >= 2 for entry in logged[:2])  # round 1 always leaves slots empty
    assert len(recorder.rounds) == sum(entry["dynamic/rounds"] for entry in logged[:2])
    # the last step: the batch keeps its size, each row is a row some round generated, with its tokens
    # and TRL's advantage, and every trained group has rewards that differ
    output, result, entry = recorder.outputs[-1], trainer.care_step.last_objective, logged[1]
    assert output["completion_ids"].size(0) == 4 * group
    generated = {}
    for batch in recorder.rounds[-int(entry["dynamic/rounds"]):]:
        generated.update(zip(_rows(batch), _whole_rows(batch), strict=True))
    assert all(generated[row] == whole for row, whole in zip(_rows(output), _whole_rows(output), strict=True))
    trained = trained_tokens(output).amax(dim=1).bool().view(-1, group).all(dim=1)
    assert trained.float().mean().item() == pytest.approx(entry["dynamic/filled_fraction"])
    assert result.advantages.view(-1, group)[trained].abs().sum(dim=1).gt(0).all()
    # the loss's token normaliser counts the merged batch, not the first round TRL counted
    assert all(out["num_items_in_batch"] == trained_tokens(out).sum() for out in recorder.outputs)
    assert [LOSS_MASK in out for out in recorder.outputs] == [e["dynamic/filled_fraction"] < 1 for e in logged[:2]]


def test_when_rounds_run_out_the_step_trains_on_what_was_kept(cache_dir, tmp_path):
    trainer, recorder = _dapo(cache_dir, tmp_path, max_sampling_rounds=1)
    trainer.train()
    entry = trainer.state.log_history[0]
    assert entry["dynamic/rounds"] == 1.0 and entry["dynamic/filled_fraction"] < 1.0
    output, group = recorder.outputs[0], trainer.num_generations
    kept = output[LOSS_MASK].amax(dim=1).bool().view(-1, group)
    assert kept.all(dim=1).logical_or(~kept.any(dim=1)).all()  # whole groups in or out
    assert entry["dynamic/filled_fraction"] == pytest.approx(kept.all(dim=1).float().mean().item())
    assert output["num_items_in_batch"] == trained_tokens(output).sum()
    # the groups left out carry no gradient: scrambling their advantages changes nothing
    model = trainer.model

    def grads(batch):
        model.zero_grad()
        trainer._compute_loss(model, batch).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    batch = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in output.items()}
    scrambled = dict(batch, advantages=batch["advantages"].clone())
    scrambled["advantages"][~kept.reshape(-1)] = 50.0
    assert torch.allclose(grads(batch), grads(scrambled))


def test_dynamic_sampling_off_draws_one_round(cache_dir, tmp_path):
    trainer, recorder = _dapo(cache_dir, tmp_path, steps=1, dynamic_sampling=False)
    trainer.train()
    assert len(recorder.rounds) == 1 and "dynamic/rounds" not in trainer.state.log_history[0]


def test_care_features_read_in_each_round_follow_their_rows(cache_dir, tmp_path):
    """With several updates per rollout batch TRL runs an old-log-prob forward per round, and CARE
    reads its features there: after the merge they must be the features of the rows merged."""
    cfg = tiny_config(cache_dir, "care", steps=1, prompts_per_rollout=4, prompts_per_update=2)
    cfg.algorithm.dynamic_sampling = True
    trainer = build_tiny_trainer(cfg, tmp_path, reward_funcs=(half_the_prompts_teach,))
    step = trainer.care_step
    assert step.trl_runs_old_logp_forward()
    merged = []
    assemble = step.dynamic_sampler._assemble

    def checking_assemble(*args):
        rollouts = assemble(*args)
        merged.append((rollouts.features, step.features_forward(rollouts.batch)))  # the same policy, read anew
        return rollouts
    step.dynamic_sampler._assemble = checking_assemble
    trainer.train()
    assert trainer.state.log_history[0]["dynamic/rounds"] >= 2 and merged
    (read, fresh), = merged
    assert torch.allclose(read.embeddings, fresh.embeddings, atol=1e-4)
    assert torch.allclose(read.logprob_sum, fresh.logprob_sum, atol=1e-3)
    assert torch.equal(read.spans.think, fresh.spans.think) and torch.equal(read.spans.answer, fresh.spans.answer)
