"""Anchor strategies, negative selectors and the rescue on hand-built geometry.

Embeddings are 2-D unit vectors at chosen angles, so cosine distance grows with the angle between
them and every expected selection can be read off the angles.
"""

from __future__ import annotations

import math

import pytest
import torch

from care.objective import CareConfig, care_advantages, select_subgroups, think_len_for_ranking


def at_angles(degrees: list[float]) -> torch.Tensor:
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=-1).unsqueeze(0)


# rollout 0 is the only success (the anchor); failures 1..7 sit at these angles from it
FAILURE_ANGLES = [45.0, 10.0, 170.0, 30.0, 60.0, 20.0, 50.0]
INDEX_OF = {angle: i + 1 for i, angle in enumerate(FAILURE_ANGLES)}


def selection_batch() -> dict:
    correct = torch.tensor([[True] + [False] * 7])
    return {
        "correct": correct,
        "rewards": correct.double(),
        "think_len": torch.full((1, 8), 5),
        "answer_len": torch.full((1, 8), 2),
        "embeddings": at_angles([0.0, *FAILURE_ANGLES]),
        "logprob_sum": torch.zeros(1, 8, dtype=torch.float64),
    }


def selected_angles(selector: str, **overrides) -> list[float]:
    selection = select_subgroups(cfg=CareConfig(selector=selector, **overrides), **selection_batch())
    by_index = {index: angle for angle, index in INDEX_OF.items()}
    return [by_index[i] for i in selection.negative_index[0].tolist() if i >= 0]


def test_cosine_takes_the_m_nearest_then_farthest_first_from_the_nearest() -> None:
    # pool (M = 6): 10, 20, 30, 45, 50, 60. From 10 the farthest is 60; then 30 (min gap 20),
    # then 45 (min gap 15 to 30 and 60). 170 is outside the pool.
    assert selected_angles("cosine") == [10.0, 60.0, 30.0, 45.0]


def test_cosine_pool_size_m_bounds_the_spread() -> None:
    # pool 10, 20, 30, 45: from {10, 45}, 30 is 15 away from both ends and 20 only 10
    assert selected_angles("cosine", m=4) == [10.0, 45.0, 30.0, 20.0]
    assert selected_angles("cosine", k=2, m=7) == [10.0, 170.0]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("nearest", [10.0, 20.0, 30.0, 45.0]),
        ("farthest", [170.0, 60.0, 50.0, 45.0]),
        ("mixed", [10.0, 20.0, 170.0, 60.0]),  # ceil(K'/2) nearest, then the farthest of the rest
    ],
)
def test_plain_selectors(selector: str, expected: list[float]) -> None:
    assert selected_angles(selector) == expected


def test_mixed_with_odd_k_prime_favours_nearest() -> None:
    assert selected_angles("mixed", k=3) == [10.0, 20.0, 170.0]


def test_random_selector_draws_distinct_failures_from_the_generator() -> None:
    batch = selection_batch()
    cfg = CareConfig(selector="random")
    first = select_subgroups(cfg=cfg, generator=torch.Generator().manual_seed(3), **batch)
    again = select_subgroups(cfg=cfg, generator=torch.Generator().manual_seed(3), **batch)
    chosen = first.negative_index[0].tolist()
    assert chosen == again.negative_index[0].tolist()
    assert len(set(chosen)) == 4 and 0 not in chosen
    seen = set()
    for seed in range(20):
        seen |= set(
            select_subgroups(cfg=cfg, generator=torch.Generator().manual_seed(seed), **batch)
            .negative_index[0]
            .tolist()
        )
    assert seen == set(range(1, 8))


def test_repair_candidate_is_the_nearest_selected_negative() -> None:
    for selector in ("cosine", "farthest"):
        selection = select_subgroups(cfg=CareConfig(selector=selector), **selection_batch())
        expected = 10.0 if selector == "cosine" else 45.0
        assert int(selection.repair_candidate[0]) == INDEX_OF[expected]


def test_embeddings_are_required_except_for_random() -> None:
    batch = selection_batch() | {"embeddings": None}
    with pytest.raises(ValueError, match="embeddings"):
        care_advantages(cfg=CareConfig(), **batch)
    result = care_advantages(
        cfg=CareConfig(selector="random"), generator=torch.Generator().manual_seed(0), **batch
    )
    assert int(result.k_prime[0]) == 4
    assert int(result.repair_candidate[0]) == int(result.negative_index[0, 0])  # first drawn


def anchor_batch() -> dict:
    correct = torch.tensor([[True, True, True, True, False, True]])
    return {
        "correct": correct,
        "rewards": correct.double(),
        "think_len": torch.tensor([[9, 4, 4, 12, 1, 4]]),
        "answer_len": torch.tensor([[1, 5, 3, 2, 1, 3]]),
        "embeddings": torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(0)),
        "logprob_sum": torch.tensor([[-5.0, -2.0, -7.0, -1.0, -0.1, -1.0]]),
    }


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("shortest_think", 2),  # think 4 three times; answer 3 twice; lowest index 2 (index 4 failed)
        ("longest_think", 3),
        ("max_logprob", 3),  # -1.0 twice (3 and 5): lowest index; the failure's -0.1 does not count
    ],
)
def test_anchor_strategies(strategy: str, expected: int) -> None:
    result = care_advantages(cfg=CareConfig(anchor=strategy), **anchor_batch())
    assert int(result.anchor_index[0]) == expected


def test_random_anchor_is_uniform_over_successes_only() -> None:
    cfg = CareConfig(anchor="random")
    anchors = {
        int(
            care_advantages(
                cfg=cfg, generator=torch.Generator().manual_seed(seed), **anchor_batch()
            ).anchor_index[0]
        )
        for seed in range(40)
    }
    assert anchors == {0, 1, 2, 3, 5}


def test_max_logprob_without_logprob_sum_names_it() -> None:
    with pytest.raises(ValueError, match="logprob_sum"):
        care_advantages(cfg=CareConfig(anchor="max_logprob"), **(anchor_batch() | {"logprob_sum": None}))


def test_positive_by_reward_counts_formatted_wrong_answers_as_successes() -> None:
    batch = anchor_batch() | {"rewards": torch.tensor([[1.1, 1.1, 1.1, 1.1, 0.1, 1.1]], dtype=torch.float64)}
    assert int(care_advantages(cfg=CareConfig(), **batch).k_prime[0]) == 1
    by_reward = care_advantages(cfg=CareConfig(positive_by="reward"), **batch)  # no failure left
    assert int(by_reward.k_prime[0]) == 0 and bool((by_reward.advantages == 0).all())


def test_think_len_for_ranking_substitutes_the_response_length() -> None:
    think = torch.tensor([[3, -1, 0]])
    assert think_len_for_ranking(think, torch.tensor([[9, 7, 5]])).tolist() == [[3, 7, 0]]
    with pytest.raises(ValueError, match="think_len"):
        care_advantages(
            cfg=CareConfig(), **(anchor_batch() | {"think_len": torch.tensor([[9, 4, -1, 12, 1, 4]])})
        )


RESCUE_ANGLES = [0.0, 15.0, 20.0, 50.0, 90.0, 100.0]


def rescue_batch(logprob: bool = True) -> dict:
    correct = torch.zeros(1, 6, dtype=torch.bool)
    return {
        "correct": correct,
        "rewards": torch.zeros(1, 6, dtype=torch.float64),
        "think_len": torch.tensor([[8, 7, 6, 5, 9, 4]]),
        "answer_len": torch.full((1, 6), 2),
        "embeddings": at_angles(RESCUE_ANGLES),
        "logprob_sum": torch.tensor([[-1.0, -3.0, -4.0, -2.0, -5.0, -6.0]]) if logprob else None,
    }


def test_rescue_picks_farthest_first_from_the_farthest_failure() -> None:
    # pseudo-anchor 0 (highest log-prob, at 0 deg). Farthest from it: 100; then 15 (85 from 100),
    # 50 (35 from 15), 90 (10 from 100, vs 20 -> 5 from 15).
    result = care_advantages(cfg=CareConfig(), **rescue_batch())
    assert bool(result.rescued[0]) and int(result.anchor_index[0]) == 0
    angles = [RESCUE_ANGLES[i] for i in result.negative_index[0].tolist()]
    assert angles == [100.0, 15.0, 50.0, 90.0]
    assert int(result.repair_candidate[0]) == -1  # RGR never runs on a rescue group


def test_rescue_without_logprob_uses_the_shortest_think_failure() -> None:
    result = care_advantages(cfg=CareConfig(), **rescue_batch(logprob=False))
    assert int(result.anchor_index[0]) == 5


def test_rescue_needs_two_failures_and_can_be_switched_off() -> None:
    assert not bool(care_advantages(cfg=CareConfig(rescue=False), **rescue_batch()).rescued.any())
    single = {key: (value[:, :1] if value is not None else None) for key, value in rescue_batch().items()}
    result = care_advantages(cfg=CareConfig(), **single)
    assert int(result.k_prime[0]) == 0 and int(result.anchor_index[0]) == -1
    assert result.advantages.tolist() == [[0.0]]


def test_rescue_without_embeddings_draws_negatives_at_random() -> None:
    batch = rescue_batch() | {"embeddings": None}
    result = care_advantages(
        cfg=CareConfig(selector="random"), generator=torch.Generator().manual_seed(1), **batch
    )
    chosen = result.negative_index[0].tolist()
    assert len(set(chosen)) == 4 and 0 not in chosen and bool(result.rescued[0])
