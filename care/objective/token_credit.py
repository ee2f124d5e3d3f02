"""Per-token credit (docs/method.md §5): spread each sequence advantage A_i over its tokens, summing to A_i.

Region weighting puts the credit on the answer span, where the verifier's verdict comes from; a
success's reasoning gets a small share (tau+), a failure's reasoning none, so a failed chain of
thought is not pushed down token by token for a wrong final answer it may have mostly got right.
"""

from __future__ import annotations

import torch

from .checks import check_tensor
from .config import TOKEN_CREDIT_MODES


def token_advantages(
    advantages: torch.Tensor,
    think_mask: torch.Tensor,
    answer_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    positive: torch.Tensor,
    mode: str = "region",
    tau_pos: float = 0.005,
) -> torch.Tensor:
    """Per-token advantages [B, T] with sum_t a_it = A_i for every row that has a completion token.

    advantages [B] float; think_mask / answer_mask / completion_mask [B, T] (bool or 0/1);
    positive [B] bool: verifier success (use `CareAdvantages.verifier_positive`, flattened).
    region: weight 1 on answer tokens, tau_pos on think tokens of positives, 0 on think tokens of
    failures and on tokens outside both spans (tags, trailing text; as the reference code does);
    a row with no answer token weights its whole completion 1. uniform: A_i / n_tokens on every
    completion token. Spans are intersected with the completion mask; a row with no completion
    token (or zero total weight) gets all zeros.
    """
    if mode not in TOKEN_CREDIT_MODES:
        raise ValueError(f"mode must be one of {', '.join(TOKEN_CREDIT_MODES)}; got {mode!r}")
    if isinstance(tau_pos, bool) or not isinstance(tau_pos, (int, float)) or not 0 <= tau_pos <= 1:
        raise ValueError(f"tau_pos must be a number in [0, 1], got {tau_pos!r}")
    check_tensor("advantages", advantages, (None,), "float", "[B]")
    batch = advantages.shape[0]
    check_tensor("completion_mask", completion_mask, (batch, None), "any", "[B, T]")
    token_shape = tuple(completion_mask.shape)
    check_tensor("think_mask", think_mask, token_shape, "any", "[B, T]")
    check_tensor("answer_mask", answer_mask, token_shape, "any", "[B, T]")
    check_tensor("positive", positive, (batch,), "bool", "[B]")

    completion = completion_mask.bool()
    dtype = torch.promote_types(advantages.dtype, torch.float32)
    if mode == "uniform":
        weights = completion.to(dtype)
    else:
        answer = answer_mask.bool() & completion
        think = think_mask.bool() & completion & ~answer
        think_weight = torch.where(positive, tau_pos, 0.0).to(dtype).unsqueeze(1)
        weights = answer.to(dtype) + think.to(dtype) * think_weight
        weights = torch.where(answer.any(dim=1, keepdim=True), weights, completion.to(dtype))
    total = weights.sum(dim=1, keepdim=True)
    share = torch.where(total > 0, weights / total.clamp_min(torch.finfo(dtype).tiny), 0.0)
    return advantages.to(dtype).unsqueeze(1) * share


def subgroup_loss_mask(completion_mask: torch.Tensor, in_subgroup: torch.Tensor) -> torch.Tensor:
    """Completion mask [B, T] with rollouts outside the subgroup removed, for the loss normaliser.

    Spec section 3: rollouts outside S must not dilute the token count, not merely carry A = 0.
    """
    check_tensor("in_subgroup", in_subgroup, (completion_mask.shape[0],), "bool", "[B]")
    return completion_mask.bool() & in_subgroup.unsqueeze(1)
