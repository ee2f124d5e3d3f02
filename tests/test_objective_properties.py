"""Property tests of CARE advantages over random groups, including ties, G = 1..8 and D = 1.

Rewards are correct + a format bonus in {0, 0.1}, so every success outscores every failure, as a
verifier with a format term would.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from care.objective import CareConfig, care_advantages

SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def batches(draw, distinct: bool = False, binary: bool = False) -> dict:
    """A batch of N groups; `distinct` removes every tie (lengths, log-probs, embedding geometry)."""
    n_groups = draw(st.integers(1, 4))
    group_size = draw(st.integers(2 if distinct else 1, 8))
    dim = draw(st.integers(2, 4) if distinct else st.integers(1, 4))
    size = n_groups * group_size
    correct = torch.tensor(draw(st.lists(st.booleans(), min_size=size, max_size=size))).view(
        n_groups, group_size
    )
    bonus = (
        0.0
        if binary
        else torch.tensor(draw(st.lists(st.sampled_from([0.0, 0.1]), min_size=size, max_size=size)))
    )
    rewards = correct.double() + (bonus.view(n_groups, group_size) if not binary else 0.0)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if distinct:
        think_len = (
            torch.stack([torch.randperm(group_size, generator=generator) for _ in range(n_groups)]) * 3
        )
        answer_len = torch.randint(1, 5, (n_groups, group_size), generator=generator)
        embeddings = torch.randn(n_groups, group_size, dim, generator=generator, dtype=torch.float64)
        logprob_sum = -torch.stack(
            [torch.randperm(group_size, generator=generator) for _ in range(n_groups)]
        ).double()
    else:
        think_len = torch.randint(0, 3, (n_groups, group_size), generator=generator)
        answer_len = torch.randint(0, 2, (n_groups, group_size), generator=generator)
        embeddings = torch.randint(-1, 2, (n_groups, group_size, dim), generator=generator).double()
        logprob_sum = -torch.randint(0, 2, (n_groups, group_size), generator=generator).double()
    return {
        "correct": correct,
        "rewards": rewards,
        "think_len": think_len,
        "answer_len": answer_len,
        "embeddings": embeddings,
        "logprob_sum": logprob_sum,
    }


@st.composite
def configs(draw, deterministic: bool = False) -> CareConfig:
    k = draw(st.integers(1, 5))
    anchors = ["shortest_think", "longest_think", "max_logprob"] + ([] if deterministic else ["random"])
    selectors = ["cosine", "nearest", "farthest", "mixed"] + ([] if deterministic else ["random"])
    return CareConfig(
        k=k,
        m=draw(st.integers(k, k + 3)),
        equalize=draw(st.booleans()),
        rescue=draw(st.booleans()),
        rescue_normalize=draw(st.booleans()),
        anchor=draw(st.sampled_from(anchors)),
        selector=draw(st.sampled_from(selectors)),
        positive_by=draw(st.sampled_from(["accuracy", "reward"])),
    )


@SETTINGS
@given(batch=batches(), cfg=configs())
def test_subgroup_invariants(batch: dict, cfg: CareConfig) -> None:
    result = care_advantages(cfg=cfg, generator=torch.Generator().manual_seed(0), **batch)
    advantages = result.advantages
    assert bool(torch.isfinite(advantages).all())
    assert bool((advantages[~result.in_subgroup] == 0).all())

    positive = batch["correct"] if cfg.positive_by == "accuracy" else batch["rewards"] > 0
    for group in range(advantages.shape[0]):
        n_fail = int((~positive[group]).sum())
        has_success = bool(positive[group].any())
        if has_success and n_fail > 0:
            expected_k_prime = min(cfg.k, n_fail)
        elif not has_success and cfg.rescue and n_fail >= 2:
            expected_k_prime = min(cfg.k, n_fail - 1)
        else:
            expected_k_prime = 0
        k_prime = int(result.k_prime[group])
        assert k_prime == expected_k_prime
        assert bool(result.rescued[group]) == (k_prime > 0 and not has_success)
        anchor = int(result.anchor_index[group])
        negatives = result.negative_index[group].tolist()
        assert negatives[k_prime:] == [-1] * (len(negatives) - k_prime)
        negatives = negatives[:k_prime]
        assert int(result.in_subgroup[group].sum()) == (1 + k_prime if k_prime else 0)
        if k_prime == 0:
            assert anchor == -1 and bool((advantages[group] == 0).all())
            continue
        assert len(set(negatives)) == k_prime and anchor not in negatives
        assert not bool(positive[group, negatives].any())
        assert bool(positive[group, anchor]) == has_success
        assert advantages[group, anchor] > 0
        assert bool((advantages[group, negatives] < 0).all())
        if cfg.equalize:
            assert math.isclose(float(result.eq_factor[group]), math.sqrt(cfg.k / k_prime), rel_tol=1e-12)
    assert bool((result.fail_derived <= result.in_subgroup).all())


@SETTINGS
@given(batch=batches(binary=True), cfg=configs())
def test_equalisation_gives_the_anchor_sqrt_k_and_the_negatives_minus_s_sqrt_k(
    batch: dict, cfg: CareConfig
) -> None:
    cfg = CareConfig(**{**cfg.__dict__, "equalize": True, "rescue_normalize": True})
    result = care_advantages(cfg=cfg, generator=torch.Generator().manual_seed(0), **batch)
    for group in torch.nonzero(result.k_prime > 0).flatten().tolist():
        anchor = int(result.anchor_index[group])
        negatives = result.negative_index[group][: int(result.k_prime[group])]
        assert abs(float(result.advantages[group, anchor]) - math.sqrt(cfg.k)) < 1e-4
        total = float(result.advantages[group, negatives].sum())
        assert abs(total + cfg.s * math.sqrt(cfg.k)) < 1e-4


@SETTINGS
@given(batch=batches(distinct=True), cfg=configs(deterministic=True), seed=st.integers(0, 10_000))
def test_permuting_rollouts_permutes_the_result(batch: dict, cfg: CareConfig, seed: int) -> None:
    n_groups, group_size = batch["correct"].shape
    generator = torch.Generator().manual_seed(seed)
    perm = torch.stack([torch.randperm(group_size, generator=generator) for _ in range(n_groups)])
    permuted = {
        key: value.gather(1, perm if value.dim() == 2 else perm.unsqueeze(2).expand_as(value))
        for key, value in batch.items()
    }
    original = care_advantages(cfg=cfg, **batch)
    shuffled = care_advantages(cfg=cfg, **permuted)
    assert torch.allclose(shuffled.advantages, original.advantages.gather(1, perm), atol=1e-9)
    assert torch.equal(shuffled.in_subgroup, original.in_subgroup.gather(1, perm))
    assert torch.equal(shuffled.k_prime, original.k_prime)
    for group in range(n_groups):
        to_original = perm[group]
        anchor = int(shuffled.anchor_index[group])
        assert (int(to_original[anchor]) if anchor >= 0 else -1) == int(original.anchor_index[group])
        mapped = [int(to_original[i]) for i in shuffled.negative_index[group].tolist() if i >= 0]
        assert mapped == [i for i in original.negative_index[group].tolist() if i >= 0]


@settings(max_examples=30, deadline=None)
@given(batch=batches(), seed=st.integers(0, 2**31 - 1))
def test_fixed_generator_gives_identical_results(batch: dict, seed: int) -> None:
    cfg = CareConfig(anchor="random", selector="random")
    first = care_advantages(cfg=cfg, generator=torch.Generator().manual_seed(seed), **batch)
    second = care_advantages(cfg=cfg, generator=torch.Generator().manual_seed(seed), **batch)
    for name, value in first.__dict__.items():
        assert (
            torch.equal(value, getattr(second, name))
            if isinstance(value, torch.Tensor)
            else value == getattr(second, name)
        )


@settings(max_examples=40, deadline=None)
@given(batch=batches(), level=st.sampled_from([0.0, 0.3, 1.0]))
def test_constant_rewards_give_no_signal(batch: dict, level: float) -> None:
    batch = batch | {"rewards": torch.full_like(batch["rewards"], level)}
    result = care_advantages(cfg=CareConfig(), **batch)
    assert bool(torch.isfinite(result.advantages).all())
    rescued = result.rescued.unsqueeze(1)
    assert bool((result.advantages[~rescued.expand_as(result.advantages)] == 0).all())


def test_float32_inputs_stay_float32_and_finite() -> None:
    correct = torch.tensor([[True, False], [False, False], [True, True]])
    result = care_advantages(
        correct,
        correct.float(),
        torch.tensor([[1, 2], [3, 4], [5, 6]]),
        torch.ones(3, 2, dtype=torch.long),
        torch.zeros(3, 2, 1),  # zero vectors: every cosine distance is 1
        None,
        CareConfig(),
    )
    assert result.advantages.dtype == torch.float32
    expected = torch.tensor([[2.0, -1.0], [2.0, -1.0], [0.0, 0.0]])  # row 2: rescue, shortest think
    assert torch.allclose(result.advantages, expected, atol=1e-5)
