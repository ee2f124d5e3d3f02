"""The reference's per-token KL clamp, through TRL's own loss: the clamped tokens lose their KL gradient only."""

import pytest
import torch

from care.trainer.kl_clamp import clamp_reference_kl, k3
from care.trainer.trl_surface import forward_kwargs, trained_tokens
from tests.trainer_helpers import build_tiny_trainer, tiny_config


def test_only_trained_tokens_over_the_limit_are_clamped():
    policy = torch.tensor([[-1.0, -1.0, -1.0, -1.0]])
    batch = {"ref_per_token_logps": torch.tensor([[-1.0, 2.0, -5.0, 4.0]])}  # k3: 0, 16.1, 3.0, 143.4
    trained = torch.tensor([[1, 1, 1, 0]])
    clamped = clamp_reference_kl(batch, 10.0, policy, trained)
    assert clamped.tolist() == [[False, True, False, False]]  # the last is over the limit but not trained
    assert batch["ref_per_token_logps"].tolist() == [[-1.0, -1.0, -5.0, 4.0]]
    assert k3(batch["ref_per_token_logps"], policy)[0, 1] == 0


@pytest.fixture(scope="module")
def trained_care(cache_dir, tmp_path_factory):
    """A tiny CARE trainer after one update, and the batch it trained on."""
    trainer = build_tiny_trainer(tiny_config(cache_dir, "care", steps=1), tmp_path_factory.mktemp("kl"))
    outputs = []
    step = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: outputs.append(step(inputs)) or outputs[-1]
    trainer.train()
    return trainer, outputs[-1]


def test_the_clamped_batch_trains_as_the_references_clamped_loss(trained_care):
    """grad of TRL's loss on the clamped batch == grad of (TRL's loss without KL) + beta * the
    reference's clamped k3, written by hand, at the policy that the clamp was decided on."""
    trainer, output = trained_care
    model = trainer.model
    batch = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in output.items()}
    generator = torch.Generator().manual_seed(0)  # a reference far from the policy, so some tokens clamp
    batch["ref_per_token_logps"] = batch["ref_per_token_logps"] + 2.0 * torch.randn(
        batch["ref_per_token_logps"].shape, generator=generator)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    width = batch["completion_ids"].size(1)

    def logps():
        return trainer._get_per_token_logps_and_entropies(model, ids, mask, width, **forward_kwargs(batch))[0]

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    trainer.args.use_bias_correction_kl = False  # recipe=paper: a plain k3 loss, as the reference's
    limit, trained = 3.0, trained_tokens(batch)
    with torch.no_grad():
        policy = logps()
    original_ref = batch["ref_per_token_logps"].clone()
    clamped_batch = dict(batch)
    clamped = clamp_reference_kl(clamped_batch, limit, policy, trained)
    assert 0 < int(clamped.sum()) < int(trained.sum())  # the check means something: some in, some out
    ours = grads(trainer._compute_loss(model, clamped_batch))

    beta, trainer.beta = trainer.beta, 0.0
    try:
        policy_term = trainer._compute_loss(model, batch)
    finally:
        trainer.beta = beta
    kl = torch.clamp(k3(original_ref, logps()), max=limit)  # the reference's low_var_kl
    normaliser = batch["num_items_in_batch"].clamp(min=1.0)
    expected = grads(policy_term + beta * (kl * trained).sum() / normaliser)
    assert torch.allclose(ours, expected, atol=1e-6, rtol=1e-4)
    # and without the clamp they differ: the test can fail
    assert not torch.allclose(grads(trainer._compute_loss(model, batch)), expected, atol=1e-6, rtol=1e-4)


def test_a_clamped_run_logs_the_clamped_fraction(cache_dir, tmp_path):
    cfg = tiny_config(cache_dir, "care", steps=2)
    cfg.algorithm.kl_clamp = 1e-9  # after one update almost every token differs from the reference
    trainer = build_tiny_trainer(cfg, tmp_path)
    trainer.train()
    first, second = (entry["kl/clamped_fraction"] for entry in trainer.state.log_history[:2])
    assert first == 0.0  # step 1: the policy is the reference
    assert 0.5 < second <= 1.0 and trainer.state.log_history[1]["kl"] < 1e-6
