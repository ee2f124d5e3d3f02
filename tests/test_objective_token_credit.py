"""Region-weighted and uniform token credit: hand-checked weights and the sum-to-A_i property."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from care.objective import subgroup_loss_mask, token_advantages

TAU = 0.005
# tokens: 0-2 think, 3-4 answer, 5 trailing tag, 6-7 padding
THINK = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
ANSWER = torch.tensor([[0, 0, 0, 1, 1, 0, 0, 0]], dtype=torch.bool)
COMPLETION = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)


def credit(
    advantage: float, positive: bool, mode: str = "region", answer: torch.Tensor = ANSWER
) -> list[float]:
    values = token_advantages(
        torch.tensor([advantage]), THINK, answer, COMPLETION, torch.tensor([positive]), mode=mode, tau_pos=TAU
    )
    return values[0].tolist()


def test_positive_rollout_gives_its_think_tokens_tau() -> None:
    total = 2 + 3 * TAU
    expected = [2.0 * TAU / total] * 3 + [2.0 / total] * 2 + [0.0, 0.0, 0.0]
    assert credit(2.0, positive=True) == pytest.approx(expected)


def test_failed_rollout_puts_everything_on_the_answer() -> None:
    assert credit(-1.0, positive=False) == pytest.approx([0, 0, 0, -0.5, -0.5, 0, 0, 0])


def test_missing_answer_span_spreads_over_the_whole_completion() -> None:
    no_answer = torch.zeros_like(ANSWER)
    assert credit(-0.6, positive=False, answer=no_answer) == pytest.approx([-0.1] * 6 + [0.0, 0.0])


def test_uniform_mode() -> None:
    assert credit(1.2, positive=True, mode="uniform") == pytest.approx([0.2] * 6 + [0.0, 0.0])


def test_rows_without_completion_tokens_get_zeros() -> None:
    empty = torch.zeros_like(COMPLETION)
    values = token_advantages(torch.tensor([1.0]), THINK, ANSWER, empty, torch.tensor([True]))
    assert values.tolist() == [[0.0] * 8]


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 6),
    length=st.integers(1, 12),
    mode=st.sampled_from(["region", "uniform"]),
    tau=st.sampled_from([0.0, 0.005, 1.0]),
)
def test_token_credit_sums_to_the_sequence_advantage(
    seed: int, batch: int, length: int, mode: str, tau: float
) -> None:
    generator = torch.Generator().manual_seed(seed)
    completion = torch.rand(batch, length, generator=generator) < 0.8
    completion[:, 0] = True
    think = torch.rand(batch, length, generator=generator) < 0.5
    answer = torch.rand(batch, length, generator=generator) < 0.3
    positive = torch.rand(batch, generator=generator) < 0.5
    advantages = torch.randn(batch, generator=generator, dtype=torch.float64)
    values = token_advantages(advantages, think, answer, completion, positive, mode=mode, tau_pos=tau)
    assert torch.allclose(values.sum(dim=1), advantages, atol=1e-12)
    assert bool((values[~completion] == 0).all())


def test_bad_arguments_are_named() -> None:
    advantage, positive = torch.tensor([1.0]), torch.tensor([True])
    with pytest.raises(ValueError, match="think_mask"):
        token_advantages(advantage, THINK[:, :5], ANSWER, COMPLETION, positive)
    with pytest.raises(ValueError, match="positive"):
        token_advantages(advantage, THINK, ANSWER, COMPLETION, torch.tensor([True, False]))
    with pytest.raises(TypeError, match="positive"):
        token_advantages(advantage, THINK, ANSWER, COMPLETION, torch.tensor([1]))
    with pytest.raises(ValueError, match="mode"):
        token_advantages(advantage, THINK, ANSWER, COMPLETION, positive, mode="tokens")
    with pytest.raises(ValueError, match="tau_pos"):
        token_advantages(advantage, THINK, ANSWER, COMPLETION, positive, tau_pos=-0.1)


def test_subgroup_loss_mask_drops_rollouts_outside_the_subgroup() -> None:
    completion = torch.ones(3, 4, dtype=torch.bool)
    mask = subgroup_loss_mask(completion, torch.tensor([True, False, True]))
    assert mask.sum(dim=1).tolist() == [4, 0, 4]
