"""The TRL reward function: signature, completion shapes, columns, weights and logging."""

from __future__ import annotations

import pickle

import pytest

from care.verifiers import FormatReward, VerifierReward, completion_text, make_reward_fn

GOOD = "<think>2+2</think><answer>4</answer>"
RIGHT_BUT_UNFORMATTED = "The answer is \\boxed{4}"
WRONG_BUT_FORMATTED = "<think>2+2</think><answer>5</answer>"


def call(reward, completions, **columns):
    """Call the way TRL's GRPOTrainer._calculate_rewards does."""
    prompts = ["What is 2+2?"] * len(completions)
    return reward(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1, 2, 3]] * len(completions),
        trainer_state=object(),
        log_extra=lambda column, values: None,
        **columns,
    )


def weighted(rewards, weights, completions, **columns):
    """Sum of the reward functions times their weights, as TRL combines `reward_weights`."""
    per_function = [call(reward, completions, **columns) for reward in rewards]
    return [sum(w * r for w, r in zip(weights, row, strict=True)) for row in zip(*per_function, strict=True)]


def test_accuracy_plus_weighted_format() -> None:
    completions = [GOOD, RIGHT_BUT_UNFORMATTED, WRONG_BUT_FORMATTED, "nonsense"]
    assert call(FormatReward(), completions) == [1.0, 0.0, 1.0, 0.0]
    rewards = weighted([make_reward_fn(), FormatReward()], [1.0, 0.5], completions,
                       answer=["4"] * 4, answer_type=["math"] * 4)
    assert rewards == [1.5, 1.0, 0.5, 0.0]
    assert all(isinstance(value, float) for value in rewards)


def test_the_trainer_adds_the_format_reward_only_when_weighted() -> None:
    from care.config import Config
    from care.trainer.build import reward_functions

    cfg = Config()
    cfg.rl.format_weight = 0.0
    assert [f.__name__ for f in reward_functions(cfg)] == ["accuracy"]
    cfg.rl.format_weight = 0.1
    accuracy, format_reward = reward_functions(cfg)
    assert isinstance(accuracy, VerifierReward) and isinstance(format_reward, FormatReward)


def test_accuracy_only_by_default() -> None:
    rewards = call(
        make_reward_fn(), [GOOD, WRONG_BUT_FORMATTED], answer=["4", "4"], answer_type=["math", "math"]
    )
    assert rewards == [1.0, 0.0]


def test_conversational_completions() -> None:
    completions = [
        [{"role": "assistant", "content": GOOD}],
        [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "<think>look</think>"},
                    {"type": "text", "text": "<answer>B</answer>"},
                ],
            }
        ],
        [
            {
                "role": "assistant",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": "<think>x</think><answer>dog</answer>"},
                ],
            }
        ],
        [{"role": "assistant", "content": "<think>x</think><answer>Paris</answer>"}],
    ]
    rewards = weighted(
        [make_reward_fn(), FormatReward()],
        [1.0, 0.1],
        completions,
        answer=["4", "B", "B", "paris"],
        answer_type=["math", "choice", "choice", "text"],
        choices=[None, ["cat", "dog"], ["cat", "dog"], None],
    )
    assert rewards == pytest.approx([1.1, 1.1, 1.1, 1.1])


@pytest.mark.parametrize(
    ("completion", "text"),
    [
        ("plain", "plain"),
        (None, ""),
        ({"role": "assistant", "content": "one message"}, "one message"),
        ([{"role": "user", "content": "ignored"}, {"role": "assistant", "content": "kept"}], "kept"),
        (
            [
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
            "ab",
        ),
    ],
)
def test_completion_text(completion, text: str) -> None:
    assert completion_text(completion) == text


def test_rows_without_gold_get_none() -> None:
    rewards = call(make_reward_fn(), [GOOD, GOOD], answer=[None, "4"], answer_type=["math", "math"])
    assert rewards == [None, 1.0]


def test_missing_column_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="answer_type"):
        call(make_reward_fn(), [GOOD], answer=["4"])


def test_name_logging_and_pickling() -> None:
    reward = VerifierReward(name="accuracy")
    assert make_reward_fn().__name__ == "verifier_accuracy"
    logged: dict[str, float] = {}
    call(reward, [GOOD, "x"], answer=["4", "4"], answer_type=["math", "math"], log_metric=logged.__setitem__)
    assert logged == {"accuracy/formatted": 0.5, "accuracy/timeouts": 0.0}
    clone = pickle.loads(pickle.dumps(reward))
    assert isinstance(clone, VerifierReward) and clone.__name__ == reward.__name__
    assert pickle.loads(pickle.dumps(FormatReward())).__name__ == "format"


def test_trl_reads_the_name() -> None:
    utils = pytest.importorskip("trl.trainer.utils")
    assert utils.get_callable_name(make_reward_fn()) == "verifier_accuracy"
    assert not utils.is_async_callable(make_reward_fn())


def test_reward_noise_flips_that_share_of_verdicts_reproducibly() -> None:
    """rl.reward_noise: the control config known to be worse; the flips follow torch's seed, as sampling does."""
    import torch

    from care.config import Config, RLConfig
    from care.trainer.build import reward_functions

    cfg = Config(rl=RLConfig(reward_noise=0.3))
    (noisy,) = reward_functions(cfg)
    completions, n = [GOOD, WRONG_BUT_FORMATTED] * 500, 1000
    clean = call(VerifierReward(extraction="strict"), completions, answer=["4"] * n, answer_type=["math"] * n)
    torch.manual_seed(0)
    first = call(noisy, completions, answer=["4"] * n, answer_type=["math"] * n)
    torch.manual_seed(0)
    assert call(noisy, completions, answer=["4"] * n, answer_type=["math"] * n) == first
    flipped = sum(a != b for a, b in zip(first, clean, strict=True)) / n
    assert 0.25 < flipped < 0.35 and set(first) == {0.0, 1.0}
    with pytest.raises(ValueError, match="rl.reward_noise=1.5 is out of range"):
        RLConfig(reward_noise=1.5)
