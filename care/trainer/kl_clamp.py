"""The reference's per-token KL clamp (`algorithm.kl_clamp`, docs/method.md §6), without touching TRL's loss.

The reference (EasyR1) clamps each token's k3 KL, exp(ref - logp) - (ref - logp) - 1, to ±10
(k3 is never negative, so only the upper bound binds): a clamped token adds a constant, so its
KL gradient is zero while its policy-gradient term stays. TRL's loss has no clamp. The same
gradient is had by setting, for each token whose k3 exceeds the bound, the reference log-prob
to the policy's own: then ref = logp, k3 = 0 and its gradient 1 - exp(ref - logp) = 0.

The decision is taken once per rollout batch, on the log-probs of the policy that sampled it
(TRL's old log-probs where it computed them, else one no-grad forward). At the first optimizer
update of a batch the policy is that policy, so the gradient is exactly the reference's. With
several updates per rollout batch (the paper recipe: 4), later updates keep the clamp decided
at rollout time and the clamped tokens' KL gradient is 1 - exp(old - logp), not exactly zero.
The logged `kl` counts a clamped token as 0 where the reference counts 10; `kl/clamped_fraction`
says how many trained tokens were clamped.
"""

from __future__ import annotations

import torch


def k3(ref_logps: torch.Tensor, logps: torch.Tensor) -> torch.Tensor:
    """TRL's (and the reference's) per-token k3 estimate of KL(policy || reference)."""
    return torch.exp(ref_logps - logps) - (ref_logps - logps) - 1


def clamp_reference_kl(batch: dict, limit: float, policy_logps: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
    """Set `batch["ref_per_token_logps"]` to `policy_logps` where k3 exceeds `limit` (in place).

    Returns the clamped-token mask [B, T] (bool), restricted to the `trained` tokens.
    """
    ref = batch["ref_per_token_logps"]
    policy = policy_logps.to(ref.dtype)
    clamped = (k3(ref, policy) > limit) & trained.bool()
    batch["ref_per_token_logps"] = torch.where(clamped, policy, ref)
    return clamped
