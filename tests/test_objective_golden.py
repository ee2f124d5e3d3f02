"""Golden values of the CARE objective, computed by hand from the method's formulas (docs/method.md).

Subgroup z-scores use the population std; with binary rewards, one anchor and K' negatives the
anchor's z is sqrt(K') and each negative's -1/sqrt(K'), so after s = 0.5 and sqrt(K/K') the anchor
gets sqrt(4) = 2 and each negative -0.5 * 2 / K'.
"""

from __future__ import annotations

import math

import pytest
import torch

from care.objective import (
    CareConfig,
    care_advantages,
    grpo_advantages,
    score_subgroups,
    select_subgroups,
)

G = 8


def one_group(n_correct: int, group_size: int = G, dim: int = 4) -> dict:
    """One group whose first `n_correct` rollouts are correct; distinct lengths and embeddings."""
    generator = torch.Generator().manual_seed(7)
    correct = torch.arange(group_size).unsqueeze(0) < n_correct
    return {
        "correct": correct,
        "rewards": correct.double(),
        "think_len": torch.arange(10, 10 + group_size).unsqueeze(0),
        "answer_len": torch.full((1, group_size), 3),
        "embeddings": torch.randn(1, group_size, dim, generator=generator, dtype=torch.float64),
        "logprob_sum": -torch.arange(1.0, group_size + 1, dtype=torch.float64).unsqueeze(0),
    }


@pytest.mark.parametrize(
    ("n_failures", "negative_value"), [(1, -1.00), (2, -0.50), (3, -1 / 3), (4, -0.25), (7, -0.25)]
)
def test_worked_values_for_each_k_prime(n_failures: int, negative_value: float) -> None:
    batch = one_group(G - n_failures)
    result = care_advantages(cfg=CareConfig(), **batch)
    k_prime = min(4, n_failures)
    advantages = result.advantages[0]
    anchor = int(result.anchor_index[0])
    negatives = result.negative_index[0][:k_prime]
    assert int(result.k_prime[0]) == k_prime
    assert anchor == 0  # shortest think among the correct rollouts 0 .. G - n_failures - 1
    assert advantages[anchor].item() == pytest.approx(2.0, abs=1e-5)
    assert advantages[negatives].tolist() == pytest.approx([negative_value] * k_prime, abs=1e-5)
    assert float(result.eq_factor[0]) == pytest.approx(math.sqrt(4 / k_prime))
    outside = ~result.in_subgroup[0]
    assert int(outside.sum()) == G - 1 - k_prime
    assert bool((advantages[outside] == 0).all())


def test_without_equalisation_the_raw_scaled_z_scores_remain() -> None:
    result = care_advantages(cfg=CareConfig(equalize=False), **one_group(6))  # K' = 2
    advantages = result.advantages[0]
    assert advantages[0].item() == pytest.approx(math.sqrt(2), abs=1e-5)  # z of the anchor
    assert advantages[result.negative_index[0][:2]].tolist() == pytest.approx(
        [-0.5 / math.sqrt(2)] * 2, abs=1e-5
    )


def rgr_result(outcome: int) -> tuple:
    batch = one_group(1)  # one success, 7 failures -> K' = 4
    cfg = CareConfig()
    selection = select_subgroups(cfg=cfg, **batch)
    result = score_subgroups(selection, batch["rewards"], cfg, repair_outcome=torch.tensor([outcome]))
    return selection, result


def test_rgr_success_makes_the_repaired_negative_a_positive() -> None:
    selection, result = rgr_result(1)
    repaired = int(selection.repair_candidate[0])
    # rewards in S: [1, 1, 0, 0, 0] -> mean 0.4, std sqrt(0.24)
    std = math.sqrt(0.24)
    advantages = result.advantages[0]
    assert int(result.repaired_index[0]) == repaired
    assert advantages[0].item() == pytest.approx(0.6 / std, abs=1e-5)  # 1.2247
    assert advantages[repaired].item() == pytest.approx(0.6 / std, abs=1e-5)
    others = [i for i in result.negative_index[0].tolist() if i != repaired]
    assert advantages[others].tolist() == pytest.approx([-0.5 * 0.4 / std] * 3, abs=1e-5)  # -0.408
    assert bool(result.is_positive[0, repaired]) and bool(result.verifier_positive[0, repaired])
    assert bool(result.fail_derived[0, repaired])


def test_rgr_failure_keeps_the_repaired_negative_at_half_scale() -> None:
    selection, result = rgr_result(0)
    repaired = int(selection.repair_candidate[0])
    advantages = result.advantages[0]
    assert advantages[0].item() == pytest.approx(2.0, abs=1e-5)
    assert advantages[repaired].item() == pytest.approx(-0.125, abs=1e-5)
    others = [i for i in result.negative_index[0].tolist() if i != repaired]
    assert advantages[others].tolist() == pytest.approx([-0.25] * 3, abs=1e-5)
    assert int(result.repair_outcome[0]) == 0 and not bool(result.verifier_positive[0, repaired])


def test_rescue_at_k_prime_four_matches_a_real_group() -> None:
    result = care_advantages(cfg=CareConfig(), **one_group(0))
    anchor = int(result.anchor_index[0])
    assert bool(result.rescued[0]) and int(result.k_prime[0]) == 4
    assert anchor == 0  # highest summed log-prob (-1)
    advantages = result.advantages[0]
    # pseudo rewards [0.1, -0.025 x 4]: mean 0, std 0.05 (+ eps 1e-6), z = 2 and -0.5
    assert advantages[anchor].item() == pytest.approx(0.1 / (0.05 + 1e-6), rel=1e-6)
    assert advantages[result.negative_index[0]].tolist() == pytest.approx([-0.25] * 4, abs=1e-4)
    assert bool(result.fail_derived[0][result.in_subgroup[0]].all())


@pytest.mark.parametrize(
    ("group_size", "anchor_value", "negative_value"),
    [(8, 0.1, -0.0125), (3, 0.1 * math.sqrt(2), -0.025 * math.sqrt(2))],
)
def test_rescue_without_normalisation_stays_at_gamma_scale(
    group_size: int, anchor_value: float, negative_value: float
) -> None:
    # centred pseudo rewards (mean 0): anchor +gamma, negatives -s * gamma / K', times sqrt(K / K')
    result = care_advantages(cfg=CareConfig(rescue_normalize=False), **one_group(0, group_size=group_size))
    advantages = result.advantages[0]
    k_prime = int(result.k_prime[0])
    assert advantages[int(result.anchor_index[0])].item() == pytest.approx(anchor_value, abs=1e-9)
    assert advantages[result.negative_index[0][:k_prime]].tolist() == pytest.approx(
        [negative_value] * k_prime, abs=1e-9
    )


def test_grpo_one_success_in_eight() -> None:
    batch = one_group(1)
    result = grpo_advantages(batch["rewards"].float(), batch["correct"])
    std = math.sqrt(8 / 7 * (1 / 8) * (7 / 8))  # unbiased std of one 1 and seven 0s
    assert result.advantages[0, 0].item() == pytest.approx((7 / 8) / (std + 1e-4), abs=1e-5)  # 2.47
    assert result.advantages[0, 1:].tolist() == pytest.approx(
        [-(1 / 8) / (std + 1e-4)] * 7, abs=1e-5
    )  # -0.35
    assert (
        round(result.advantages[0, 0].item(), 2) == 2.47 and round(result.advantages[0, 1].item(), 2) == -0.35
    )


def test_grpo_without_scaling_is_mean_centred_only() -> None:
    batch = one_group(1)
    result = grpo_advantages(batch["rewards"], batch["correct"], scale="none")
    assert result.advantages[0].tolist() == pytest.approx([0.875] + [-0.125] * 7)
