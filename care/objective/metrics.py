"""Signal metrics (docs/method.md §8) for any advantage result, CARE or baseline, as a flat dict.

Keys (fractions of groups unless said otherwise):
  accuracy (of rollouts); groups_with_success / groups_all_fail / groups_all_correct;
  zero_signal_groups: every |A| in the group <= zero_atol; nonzero_grad_prompts = 1 - that;
  fss_neg = sum |A| on verifier failures / sum |A|; fss_fail_derived = sum |A| on result.fail_derived
  / sum |A|; adv_mass_pos / adv_mass_neg: sum |A| on successes / failures per group;
  subgroup_rollout_share: rollouts in S (what the loss normaliser counts) / all rollouts;
  k_prime_mean, eq_factor_mean: over groups with a subgroup (K' > 0); k_prime_hist/{j}: share of
  groups with K' = j (top bin: K' >= j); rescue_rate, rescue_count; rgr_attempts, rgr_successes
  (counts) and rgr_success_rate; with think_len: anchor_think_len_mean, correct_think_len_mean.
Every ratio with a zero denominator is 0.0 (fss_* when all advantages are 0, means over no group).
zero_atol defaults to exact zero: CARE and the baselines here write exact zeros where there is no signal.
"""

from __future__ import annotations

import torch

from .checks import check_tensor
from .result import CareAdvantages


def signal_metrics(
    result: CareAdvantages,
    correct: torch.Tensor,
    think_len: torch.Tensor | None = None,
    k_hist: int | None = None,
    zero_atol: float = 0.0,
) -> dict[str, float]:
    """Section 8 quantities for one batch; compute it for CARE and for GRPO to plot them side by side.

    k_hist: top bin of the K' histogram (keys k_prime_hist/0 .. k_prime_hist/{k_hist}, fractions of
    groups; the top bin also counts larger K'); defaults to result.k, pass the CARE K for baselines
    so both log the same keys. think_len [N, G] adds mean think lengths of anchors (non-rescued
    groups only: a rescue pseudo-anchor is a failure) and of all correct rollouts.
    """
    advantages = result.advantages
    n_groups, group_size = advantages.shape
    check_tensor("correct", correct, (n_groups, group_size), "bool", "[N, G]")
    magnitude = advantages.abs().double()
    total = magnitude.sum()
    failure = ~correct
    has_success = correct.any(dim=1)
    all_fail = ~has_success
    all_correct = correct.all(dim=1)
    zero_signal = (magnitude <= zero_atol).all(dim=1)
    with_subgroup = result.k_prime > 0
    attempts = result.repair_outcome >= 0

    metrics = {
        "accuracy": _mean(correct),
        "groups_with_success": _mean(has_success),
        "groups_all_fail": _mean(all_fail),
        "groups_all_correct": _mean(all_correct),
        "zero_signal_groups": _mean(zero_signal),
        "nonzero_grad_prompts": _mean(~zero_signal),
        "fss_neg": _ratio(magnitude[failure].sum(), total),
        "fss_fail_derived": _ratio(magnitude[result.fail_derived].sum(), total),
        "adv_mass_pos": _ratio(magnitude[correct].sum(), n_groups),
        "adv_mass_neg": _ratio(magnitude[failure].sum(), n_groups),
        "subgroup_rollout_share": _mean(result.in_subgroup),
        "k_prime_mean": _ratio(result.k_prime[with_subgroup].sum(), with_subgroup.sum()),
        "eq_factor_mean": _ratio(result.eq_factor[with_subgroup].double().sum(), with_subgroup.sum()),
        "rescue_rate": _mean(result.rescued),
        "rescue_count": float(result.rescued.sum()),
        "rgr_attempts": float(attempts.sum()),
        "rgr_successes": float((result.repair_outcome == 1).sum()),
        "rgr_success_rate": _ratio((result.repair_outcome == 1).sum(), attempts.sum()),
    }
    top = result.k if k_hist is None else k_hist
    binned = result.k_prime.clamp(max=top)
    for value in range(top + 1):
        metrics[f"k_prime_hist/{value}"] = _mean(binned == value)
    if think_len is not None:
        check_tensor("think_len", think_len, (n_groups, group_size), "int", "[N, G]")
        real_anchor = (result.anchor_index >= 0) & ~result.rescued
        anchor_think = think_len.gather(1, result.anchor_index.clamp_min(0).unsqueeze(1)).squeeze(1)
        metrics["anchor_think_len_mean"] = _ratio(anchor_think[real_anchor].double().sum(), real_anchor.sum())
        metrics["correct_think_len_mean"] = _ratio(think_len[correct].double().sum(), correct.sum())
    return metrics


def _mean(mask: torch.Tensor) -> float:
    return _ratio(mask.sum(), mask.numel())


def _ratio(numerator: torch.Tensor | float, denominator: torch.Tensor | float) -> float:
    denominator = float(denominator)
    return float(numerator) / denominator if denominator > 0 else 0.0
