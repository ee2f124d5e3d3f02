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
    assert trainer.care_step.algorithm == algorithm


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
            self.outputs.append((output, trainer.care_step.last_objective))
            return output
        trainer._generate_and_score_completions = wrapped


def test_logged_k_prime_matches_the_objective_for_that_batch(cache_dir, tmp_path):
    trainer = build_tiny_trainer(tiny_config(cache_dir, "care", steps=1), tmp_path)
    capture = _Capture(trainer)
    trainer.train()
    output, result = capture.outputs[-1]
    logged = trainer.state.log_history[0]
    with_subgroup = result.k_prime > 0
    assert logged["care/k_prime_mean"] == pytest.approx(result.k_prime[with_subgroup].float().mean().item())
    # CARE's loss mask keeps exactly the subgroup: anchor + K' negatives per group
    kept_rows = output[LOSS_MASK].amax(dim=1).bool()
    assert torch.equal(kept_rows, result.in_subgroup.reshape(-1))
    sizes = result.in_subgroup.sum(dim=1)
    assert torch.equal(sizes[with_subgroup], result.k_prime[with_subgroup] + 1)
    expected_items = (output["completion_mask"] * output[LOSS_MASK]).sum()
    assert output["num_items_in_batch"] == expected_items
    # TRL's loss reads it as tool_mask (no tools here, so it is CARE's mask alone)
    assert torch.equal(output["tool_mask"], output[LOSS_MASK])


def test_objective_inputs_reproduce_the_handed_back_advantages(cache_dir, tmp_path):
    """Re-running care_advantages on the trainer's inputs gives the advantages it trained on."""
    trainer = build_tiny_trainer(tiny_config(cache_dir, "care", steps=1), tmp_path)
    seen = {}
    import care.trainer.care_step as module

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
    again = care_advantages(*seen["args"], generator=torch.Generator().manual_seed(trainer.care_step.seed * 1_000_003 + 0))
    assert torch.equal(again.advantages, seen["result"].advantages)


def test_rollouts_outside_the_subgroup_contribute_zero_gradient(cache_dir, tmp_path):
    cfg = tiny_config(cache_dir, "care", steps=1)
    cfg.care.k = 1  # S = anchor + one negative: with G = 4 some rollouts are always left out
    trainer = build_tiny_trainer(cfg, tmp_path)
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


def _recorded_rounds(trainer):
    """Wraps trainer.sample and the step's own features forward; returns (rounds sampled, own forwards)."""
    rounds, own_forwards = [], []
    sample, features_forward = trainer.sample, trainer.care_step.features_forward

    def recording_sample(inputs, read_features):
        rounds.append(sample(inputs, read_features))
        return rounds[-1]

    def recording_features_forward(batch):
        own_forwards.append(features_forward(batch))
        return own_forwards[-1]
    trainer.sample, trainer.care_step.features_forward = recording_sample, recording_features_forward
    return rounds, own_forwards


def test_one_update_per_rollout_batch_reads_features_from_one_no_grad_forward(cache_dir, tmp_path):
    """TRL runs no forward before the loss here: CARE runs one of its own per generation batch."""
    trainer = build_tiny_trainer(tiny_config(cache_dir, "care", steps=1), tmp_path)
    assert not trainer.care_step.trl_runs_old_logp_forward()
    rounds, own_forwards = _recorded_rounds(trainer)
    trainer.model.train()
    trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    assert len(rounds) == 1 and rounds[0].features is None and len(own_forwards) == 1
    assert own_forwards[0].embeddings.shape[0] == rounds[0].batch["completion_ids"].shape[0]


def test_features_come_from_trls_old_logprob_forward_when_it_runs_one(cache_dir, tmp_path):
    """With several PPO epochs TRL computes old log-probs itself; CARE reads its features from that pass."""
    trainer = build_tiny_trainer(tiny_config(cache_dir, "care", steps=1), tmp_path)
    trainer.num_iterations = 2  # as GRPOConfig(num_iterations=2): TRL now runs an old-log-prob forward
    assert trainer.care_step.trl_runs_old_logp_forward()
    rounds, own_forwards = _recorded_rounds(trainer)
    trainer.model.train()
    output = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    assert own_forwards == [] and rounds[0].features is not None
    kept = rounds[0].features
    # the same features a separate forward gives, and the log-probs TRL stored
    again = trainer.care_step.features_forward(output)
    assert torch.allclose(kept.embeddings, again.embeddings, atol=1e-5)
    assert torch.allclose(kept.logprob_sum, again.logprob_sum, atol=1e-4)
    assert torch.allclose(kept.logprob_sum, (output["old_per_token_logps"] * output["completion_mask"]).sum(1),
                          atol=1e-4)


def test_baselines_train_on_trls_own_batch(cache_dir, tmp_path):
    """GRPO, DAPO, GSPO: the step only logs; the batch TRL trains on is the one TRL generated."""
    trainer = build_tiny_trainer(tiny_config(cache_dir, "grpo", steps=1), tmp_path)
    rounds, own_forwards = _recorded_rounds(trainer)
    trainer.model.train()
    output = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    assert output is rounds[0].batch and LOSS_MASK not in output and own_forwards == []
    assert not rounds[0].read_features and rounds[0].features is None
