"""The shared trainer: every algorithm trains, CARE's decisions are the objective's, masks are exact."""

import pytest
import torch

from care.objective import care_advantages
from care.trainer.trl_surface import LOSS_MASK
from tests.trainer_helpers import build_tiny_trainer, tiny_config


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("algorithm", ["grpo", "dapo", "gspo", "care"])
def test_each_algorithm_trains_and_changes_parameters(algorithm, cache_dir, tmp_path):
    cfg = tiny_config(cache_dir, algorithm)
    # a random tiny policy never stops within the budget: DAPO's overlong masking would drop every
    # rollout (tested on its own below), so this check of the update path turns it off
    cfg.algorithm.mask_truncated_completions = False
    trainer = build_tiny_trainer(cfg, tmp_path)
    before = _params(trainer.model)
    trainer.train()
    after = _params(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before), f"{algorithm} left the policy unchanged"
    logged = trainer.state.log_history[0]
    for key in ("signal/fss_neg", "signal/zero_signal_groups", "signal/nonzero_grad_prompts", "accuracy",
                "groups_all_fail", "groups_all_correct"):
        assert key in logged, key
    assert trainer.algorithm == algorithm


def test_dapo_masks_truncated_completions_out_of_the_loss(cache_dir, tmp_path):
    trainer = build_tiny_trainer(tiny_config(cache_dir, "dapo", steps=1), tmp_path)
    capture = _Capture(trainer)
    trainer.train()
    output, _ = capture.outputs[-1]
    eos = trainer.processing_class.tokenizer.eos_token_id
    truncated = ~(output["completion_ids"] == eos).any(dim=1)
    assert truncated.any()
    assert (output["completion_mask"][truncated] == 0).all()


class _Capture:
    def __init__(self, trainer):
        self.trainer, self.outputs = trainer, []
        original = trainer._generate_and_score_completions

        def wrapped(inputs):
            output = original(inputs)
            self.outputs.append((output, trainer.last_objective))
            return output
        trainer._generate_and_score_completions = wrapped


@pytest.mark.parametrize("deferred", [False, True])
def test_logged_k_prime_matches_the_objective_for_that_batch(deferred, cache_dir, tmp_path):
    trainer = build_tiny_trainer(tiny_config(cache_dir, "care", steps=1), tmp_path)
    trainer.defer_override = deferred
    assert trainer.defer_objective == deferred
    capture = _Capture(trainer)
    trainer.train()
    output, _ = capture.outputs[-1]
    result = trainer.last_objective  # the deferred path decides inside the loss, after the capture
    logged = trainer.state.log_history[0]
    with_subgroup = result.k_prime > 0
    assert logged["care/k_prime_mean"] == pytest.approx(result.k_prime[with_subgroup].float().mean().item())
    if deferred:  # rows are shuffled before the loss; the rest of this test reads generation order
        return
    # CARE's loss mask keeps exactly the subgroup: anchor + K' negatives per group; TRL's tool_mask is not used
    assert "tool_mask" not in output
    kept_rows = output[LOSS_MASK].amax(dim=1).bool()
    assert torch.equal(kept_rows, result.in_subgroup.reshape(-1))
    sizes = result.in_subgroup.sum(dim=1)
    assert torch.equal(sizes[with_subgroup], result.k_prime[with_subgroup] + 1)
    expected_items = (output["completion_mask"] * output[LOSS_MASK]).sum()
    assert output["num_items_in_batch"] == expected_items


def test_objective_inputs_reproduce_the_handed_back_advantages(cache_dir, tmp_path):
    """Re-running care_advantages on the trainer's inputs gives the advantages it trained on."""
    trainer = build_tiny_trainer(tiny_config(cache_dir, "care", steps=1), tmp_path)
    seen = {}
    import care.trainer.care_trainer as module

    select, score = module.select_subgroups, module.score_subgroups

    def recording_select(*args, **kwargs):
        seen["args"] = args
        return select(*args, **kwargs)

    def recording_score(*args, **kwargs):
        seen["result"] = score(*args, **kwargs)
        return seen["result"]
    module.select_subgroups, module.score_subgroups = recording_select, recording_score
    try:
        trainer.train()
    finally:
        module.select_subgroups, module.score_subgroups = select, score
    again = care_advantages(*seen["args"], generator=torch.Generator().manual_seed(trainer.care_seed * 1_000_003 + 0))
    assert torch.equal(again.advantages, seen["result"].advantages)


def test_rollouts_outside_the_subgroup_contribute_zero_gradient(cache_dir, tmp_path):
    cfg = tiny_config(cache_dir, "care", steps=1)
    cfg.care.k = 1  # S = anchor + one negative: with G = 4 some rollouts are always left out
    trainer = build_tiny_trainer(cfg, tmp_path)
    trainer.defer_override = False  # the eager hand-back; the deferred path is checked against it below
    capture = _Capture(trainer)
    trainer.train()
    output, result = capture.outputs[-1]
    outside = ~result.in_subgroup.reshape(-1)
    assert outside.any()
    model = trainer.model

    def grads(batch):
        model.zero_grad()
        trainer._compute_loss(model, batch).backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    batch = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in output.items()}
    reference = grads(batch)
    # scramble what the masked rollouts said and how they were credited: nothing may change
    scrambled = dict(batch)
    scrambled["advantages"] = batch["advantages"].clone()
    scrambled["advantages"][outside] = 123.0
    ids = batch["completion_ids"].clone()
    ids[outside] = (ids[outside] + 7) % len(trainer.processing_class.tokenizer)
    scrambled["completion_ids"] = ids
    for a, b in zip(reference, grads(scrambled), strict=True):
        assert torch.equal(a, b)


def test_deferred_objective_gives_the_eager_loss_and_gradient(cache_dir, tmp_path):
    """Running CARE inside the loss forward (no extra pass) trains exactly like the eager hand-back."""
    from trl.trainer.utils import (
        shuffle_sequence_dict,
        split_pixel_values_by_grid,
        unsplit_pixel_values_by_grid,
    )

    trainer = build_tiny_trainer(tiny_config(cache_dir, "care", steps=1), tmp_path)
    assert trainer.defer_objective  # the default one-epoch CARE run without RGR takes this path
    raw = {}
    original = trainer.apply_objective
    trainer.apply_objective = lambda output: raw.setdefault("output", output)
    trainer.model.train()
    trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    trainer.apply_objective = original
    trainer.current_gradient_accumulation_steps = 1  # normally set by the train loop
    model = trainer.model

    def copy(batch):
        return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}

    def loss_and_grads(batch):
        model.zero_grad()
        loss = trainer._compute_loss(model, batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    trainer.defer_override = False
    eager = trainer.apply_objective(copy(raw["output"]))
    eager_result = trainer.last_objective
    eager_loss, eager_grads = loss_and_grads(eager)

    trainer.defer_override = True
    deferred = trainer.apply_objective(copy(raw["output"]))
    assert "care_row" in deferred and LOSS_MASK not in deferred  # nothing decided before the loss forward
    torch.manual_seed(3)  # TRL shuffles rows between generation and loss; so do we
    deferred = unsplit_pixel_values_by_grid(shuffle_sequence_dict(split_pixel_values_by_grid(deferred)))
    assert not torch.equal(deferred["care_row"], torch.arange(deferred["care_row"].numel()))
    deferred_loss, deferred_grads = loss_and_grads(deferred)

    assert torch.equal(trainer.last_objective.advantages, eager_result.advantages)
    assert torch.allclose(deferred_loss, eager_loss, atol=1e-6)
    assert len(deferred_grads) == len(eager_grads)
    for a, b in zip(eager_grads, deferred_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_features_come_from_trls_old_logprob_forward_when_it_runs_one(cache_dir, tmp_path):
    """With several PPO epochs TRL computes old log-probs itself; CARE reads its features from that pass."""
    trainer = build_tiny_trainer(tiny_config(cache_dir, "care", steps=1), tmp_path)
    trainer.num_iterations = 2  # as GRPOConfig(num_iterations=2): TRL now runs an old-log-prob forward
    assert not trainer.defer_objective and trainer._trl_computes_old_logps()
    extra_passes = []
    original = trainer._rollout_features
    trainer._rollout_features = lambda output: extra_passes.append(1) or original(output)
    kept, keep = [], trainer._keep_features
    trainer._keep_features = lambda features: kept.append(features) or keep(features)
    capture = _Capture(trainer)
    trainer.model.train()
    trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    assert extra_passes == [] and len(kept) == 1
    output, _ = capture.outputs[-1]
    # the same features a separate forward gives, and the log-probs TRL stored
    again = original(output)
    assert torch.allclose(kept[0].embeddings, again.embeddings, atol=1e-5)
    assert torch.allclose(kept[0].logprob_sum, again.logprob_sum, atol=1e-4)
    assert torch.allclose(kept[0].logprob_sum, (output["old_per_token_logps"] * output["completion_mask"]).sum(1),
                          atol=1e-4)
