"""Config validation, argument errors, the RGR two-stage flow, baselines and section 8 metrics."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from care.objective import (
    CareConfig,
    care_advantages,
    grpo_advantages,
    score_subgroups,
    select_subgroups,
    signal_metrics,
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("k", 0),
        ("k", 2.0),
        ("m", 3),
        ("s", 0.0),
        ("s", 1.5),
        ("s_refl", -0.1),
        ("rescue_gamma", 0.0),
        ("rescue_gamma", float("inf")),
        ("eps", 0),
        ("tau_pos", 2.0),
        ("equalize", 1),
        ("anchor", "shortest"),
        ("selector", "cos"),
        ("positive_by", "format"),
        ("token_credit", "answer"),
    ],
)
def test_bad_config_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        CareConfig(**{field: value})


def test_choice_errors_list_the_accepted_values() -> None:
    with pytest.raises(ValueError, match="cosine, nearest, farthest, mixed, random"):
        CareConfig(selector="hard")


def batch(n_groups: int = 3, group_size: int = 4, dim: int = 5) -> dict:
    generator = torch.Generator().manual_seed(0)
    correct = torch.tensor([[True, False, False, True], [False] * 4, [True] * 4])[:n_groups, :group_size]
    return {
        "correct": correct,
        "rewards": correct.float(),
        "think_len": torch.randint(0, 50, (n_groups, group_size), generator=generator),
        "answer_len": torch.randint(1, 5, (n_groups, group_size), generator=generator),
        "embeddings": torch.randn(n_groups, group_size, dim, generator=generator),
        "logprob_sum": -torch.rand(n_groups, group_size, generator=generator),
    }


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("embeddings", torch.randn(3, 5, 5), ValueError),
        ("embeddings", torch.randn(3, 4), ValueError),
        ("embeddings", torch.full((3, 4, 5), float("nan")), ValueError),
        ("rewards", torch.zeros(3, 5), ValueError),
        ("rewards", torch.zeros(3, 4, dtype=torch.long), TypeError),
        ("rewards", torch.full((3, 4), float("nan")), ValueError),
        ("correct", torch.zeros(3, 4), TypeError),
        ("think_len", torch.zeros(3, 4), TypeError),
        ("answer_len", -torch.ones(3, 4, dtype=torch.long), ValueError),
        ("logprob_sum", torch.zeros(4, 4), ValueError),
        ("cfg", {"k": 4}, TypeError),
    ],
)
def test_bad_arguments_are_named(name: str, value: object, error: type) -> None:
    arguments = batch() | {"cfg": CareConfig()}
    arguments[name] = value
    with pytest.raises(error, match=name):
        care_advantages(**arguments)


def test_repair_outcome_flow_and_errors() -> None:
    cfg = CareConfig()
    selection = select_subgroups(cfg=cfg, **batch())
    candidate = int(selection.repair_candidate[0])
    assert candidate in (1, 2) and selection.repair_candidate[1:].tolist() == [-1, -1]
    rewards = batch()["rewards"]
    result = score_subgroups(selection, rewards, cfg, repair_outcome=torch.tensor([1, -1, -1]))
    assert result.repaired_index.tolist() == [candidate, -1, -1]
    assert result.advantages[0, candidate] > 0
    low = score_subgroups(
        selection,
        rewards,
        cfg,
        repair_outcome=torch.tensor([1, -1, -1]),
        repair_reward=torch.tensor([0.8, 0.0, 0.0]),
    )
    assert 0 < low.advantages[0, candidate] < result.advantages[0, candidate]
    with pytest.raises(ValueError, match="repair_outcome"):
        score_subgroups(selection, rewards, cfg, repair_outcome=torch.tensor([-1, 0, -1]))  # rescued group
    with pytest.raises(ValueError, match="repair_outcome"):
        score_subgroups(selection, rewards, cfg, repair_outcome=torch.tensor([2, -1, -1]))
    with pytest.raises(ValueError, match="repair_outcome"):
        score_subgroups(selection, rewards, cfg, repair_outcome=torch.tensor([1, -1]))


def test_grpo_baseline_matches_trl_semantics_and_fills_the_logging_fields() -> None:
    rewards = torch.tensor([[1.0, 0.2, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3]])
    correct = rewards > 0.5
    result = grpo_advantages(rewards, correct)
    expected = (rewards[0] - rewards[0].mean()) / (rewards[0].std() + 1e-4)  # TRL: unbiased std + 1e-4
    assert torch.allclose(result.advantages[0], expected)
    assert result.advantages[1].tolist() == [0.0] * 4  # constant group: exactly zero
    assert bool(result.in_subgroup.all()) and result.anchor_index.tolist() == [-1, -1]
    assert result.k_prime.tolist() == [2, 0] and result.negative_index[0].tolist() == [1, 2, -1, -1]
    single = grpo_advantages(torch.tensor([[1.0], [0.0]]), torch.tensor([[True], [False]]))
    assert single.advantages.tolist() == [[0.0], [0.0]]
    with pytest.raises(ValueError, match="scale"):
        grpo_advantages(rewards, correct, scale="batch")


def test_signal_metrics_by_hand() -> None:
    # group 0: anchor +2, two negatives -0.5 (|A| 3); group 1 rescued, K' = 3: +2 and 3 x -1/3 (|A| 3,
    # all verifier failures and fail-derived); group 2 all correct: zero signal
    result = care_advantages(cfg=CareConfig(), **batch())
    correct = batch()["correct"]
    metrics = signal_metrics(result, correct, think_len=batch()["think_len"])
    assert metrics["accuracy"] == pytest.approx(6 / 12)
    assert metrics["groups_all_fail"] == pytest.approx(1 / 3)
    assert metrics["groups_all_correct"] == pytest.approx(1 / 3)
    assert metrics["zero_signal_groups"] == pytest.approx(1 / 3)
    assert metrics["nonzero_grad_prompts"] == pytest.approx(2 / 3)
    assert metrics["fss_neg"] == pytest.approx(4 / 6, abs=1e-4)
    assert metrics["fss_fail_derived"] == pytest.approx(4 / 6, abs=1e-4)
    assert metrics["adv_mass_pos"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["subgroup_rollout_share"] == pytest.approx(7 / 12)
    assert metrics["eq_factor_mean"] == pytest.approx((2**0.5 + (4 / 3) ** 0.5) / 2)
    assert metrics["rescue_rate"] == pytest.approx(1 / 3)
    assert metrics["k_prime_mean"] == pytest.approx((2 + 3) / 2)
    assert [metrics[f"k_prime_hist/{k}"] for k in range(5)] == pytest.approx([1 / 3, 0, 1 / 3, 1 / 3, 0])
    anchor = int(result.anchor_index[0])
    assert metrics["anchor_think_len_mean"] == float(batch()["think_len"][0, anchor])
    assert metrics["rgr_attempts"] == 0.0 and metrics["rgr_success_rate"] == 0.0


def test_signal_metrics_zero_cases_and_shared_keys() -> None:
    correct = torch.ones(2, 3, dtype=torch.bool)
    care = care_advantages(
        correct,
        correct.float(),
        torch.ones(2, 3, dtype=torch.long),
        torch.ones(2, 3, dtype=torch.long),
        torch.randn(2, 3, 4),
        None,
        CareConfig(),
    )
    grpo = grpo_advantages(correct.float(), correct)
    care_metrics, grpo_metrics = signal_metrics(care, correct), signal_metrics(grpo, correct, k_hist=4)
    assert care_metrics.keys() == grpo_metrics.keys()
    assert care_metrics["fss_neg"] == 0.0 and care_metrics["eq_factor_mean"] == 0.0
    assert care_metrics["zero_signal_groups"] == 1.0 == grpo_metrics["zero_signal_groups"]
    assert all(isinstance(value, float) for value in care_metrics.values())


def test_importing_the_objective_pulls_in_nothing_heavy() -> None:
    code = "import sys, care.objective; print(sorted(m for m in ('trl', 'transformers', 'hydra', 'omegaconf') if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
