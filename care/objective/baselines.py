"""Baseline advantages (GRPO, Dr. GRPO) in the CARE result type, so both log the same quantities."""

from __future__ import annotations

import torch

from .anchors import NO_INDEX
from .checks import check_tensor
from .negatives import ranked_order
from .result import CareAdvantages

GRPO_SCALES = ("group", "none")


def grpo_advantages(
    rewards: torch.Tensor, correct: torch.Tensor, scale: str = "group", eps: float = 1e-4
) -> CareAdvantages:
    """Group-relative advantages as TRL's GRPOTrainer computes them (per-group scale_rewards).

    scale="group": (r - mean) / (std + eps) with the unbiased (Bessel) std over the group's G
    rollouts, std = 0 when G = 1; scale="none" is Dr. GRPO: mean-centred only. One deliberate
    difference from TRL: a group whose rewards are all equal gets exactly 0, where TRL leaves
    rounding residues of the mean (up to ~1e-4 after the division).
    `correct` only feeds the logging fields: every rollout is in the "subgroup", failures in
    groups with a success count as its negatives (k_prime = |F|), and they are the fail-derived ones.
    """
    if scale not in GRPO_SCALES:
        raise ValueError(f"scale must be one of {', '.join(GRPO_SCALES)}; got {scale!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a number > 0, got {eps!r}")
    check_tensor("rewards", rewards, (None, None), "float", "[N, G]")
    n_groups, group_size = rewards.shape
    check_tensor("correct", correct, (n_groups, group_size), "bool", "[N, G]")
    if group_size < 1:
        raise ValueError("rewards must have at least one rollout per group (G >= 1)")

    rewards = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    constant = rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True)
    centred = torch.where(constant, 0.0, centred)
    if scale == "group":
        has_spread = group_size > 1 and n_groups > 0  # torch.std of one sample is NaN; TRL uses 0
        std = rewards.std(dim=1, keepdim=True) if has_spread else torch.zeros_like(rewards[:, :1])
        advantages = centred / (std + eps)
    else:
        advantages = centred

    failure = ~correct
    mixed = correct.any(dim=1) & failure.any(dim=1)
    negatives = failure & mixed.unsqueeze(1)
    k_prime = negatives.sum(dim=1)
    column = torch.arange(group_size, device=rewards.device).unsqueeze(0)
    ordered = ranked_order(column.expand(n_groups, -1).to(rewards.dtype), negatives)
    negative_index = torch.where(column < k_prime.unsqueeze(1), ordered, NO_INDEX)
    no_index = torch.full((n_groups,), NO_INDEX, dtype=torch.long, device=rewards.device)
    return CareAdvantages(
        advantages=advantages,
        in_subgroup=torch.ones_like(correct),
        is_positive=correct,
        verifier_positive=correct,
        fail_derived=failure,
        anchor_index=no_index,
        negative_index=negative_index,
        k_prime=k_prime,
        eq_factor=torch.ones(n_groups, dtype=rewards.dtype, device=rewards.device),
        rescued=torch.zeros_like(mixed),
        repair_candidate=no_index,
        repaired_index=no_index,
        repair_outcome=no_index,
        k=group_size,
    )
