"""The training reward: accuracy from the <answer> span of a well-formed response (strict rule), plus
a weighted format term; CARE's positives, anchors and rescue read accuracy, never "reward > 0"."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from care.config import Config, RLConfig
from care.objective import CareConfig, care_advantages
from care.trainer.build import reward_functions
from care.trainer.care_step import reward_verdicts
from care.verifiers import extract_answer, verify
from care.verifiers.reward import VerifierReward

WELL_FORMED = "<think>2 + 3 = 5</think><answer>5</answer>"
NO_ANSWER_SPAN = "<think>I think it is 5</think>"
CUT_OFF = "<think>2 + 3 = 5</think><answer>5"
NO_THINK = "<answer>5</answer>"
TRAILING = "<think>2 + 3</think><answer>5</answer> and then 6"
BOXED = "so the result is \\boxed{5}"


CONF = Path(__file__).resolve().parents[1] / "conf"


def composed(*overrides: str) -> Config:
    """The typed config `python run.py <overrides>` trains with."""
    from run import to_config

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


@pytest.fixture(scope="module")
def real_data() -> Config:
    return composed("data=care_mix")


def accuracy(responses, cfg: Config) -> list[float]:
    reward = reward_functions(cfg)[0]
    return reward(completions=responses, answer=["5"] * len(responses), answer_type=["math"] * len(responses))


def test_training_does_not_pay_for_skipping_the_answer_span(real_data):
    """Before the strict rule, the training reward scored this 1.0 through the last-line fallback."""
    assert real_data.rl.extraction == "strict"
    assert accuracy([NO_ANSWER_SPAN], real_data) == [0.0]


def test_the_strict_rule_is_every_default():
    """The synthetic default too (it trained on the lenient rule until 2026-12-02)."""
    default = composed()
    assert (default.rl.extraction, default.eval.extraction) == ("strict", "strict")
    assert accuracy([NO_ANSWER_SPAN], default) == [0.0]
    assert composed("eval=paper6").eval.extraction == "strict"
    lenient = composed("rl.extraction=lenient")
    assert accuracy([BOXED], default) == [0.0] and accuracy([BOXED], lenient) == [1.0]
    assert accuracy([NO_ANSWER_SPAN], lenient) == [0.0]  # the 5 is inside <think>: never an answer


def test_strict_rule_scores_only_a_well_formed_answer_span(real_data):
    assert accuracy([WELL_FORMED, CUT_OFF, NO_THINK, TRAILING, BOXED], real_data) == [1.0, 0, 0, 0, 0]
    for response in (CUT_OFF, NO_THINK, TRAILING, BOXED, NO_ANSWER_SPAN, ""):
        assert extract_answer(response, "strict") is None
    assert extract_answer(WELL_FORMED, "strict") == "5"


def test_lenient_rule_keeps_the_fallbacks_for_evaluation():
    for response in (WELL_FORMED, CUT_OFF, NO_THINK, BOXED, "<think>it might be 7</think> The answer is 5"):
        assert verify(response, "5", "math", extraction="lenient").correct, response
    # never from inside the reasoning: a candidate weighed while thinking is not the answer
    for response in (NO_ANSWER_SPAN, "<think>maybe \\boxed{5}, or the answer is 5", "<think><answer>5</answer></think>"):
        assert not verify(response, "5", "math", extraction="lenient").correct, response
    # one default, library and product alike: strict
    assert not verify(BOXED, "5", "math").correct and verify(WELL_FORMED, "5", "math").correct
    assert extract_answer(BOXED) is None
    with pytest.raises(ValueError, match="rl.extraction='loose'.*strict, lenient"):
        RLConfig(extraction="loose")
    with pytest.raises(ValueError, match="extraction rule 'loose'"):
        extract_answer(WELL_FORMED, "loose")


def test_reward_weights_and_rule_reach_the_trainer(real_data, tmp_path):
    from care.trainer.build import grpo_args

    cfg = real_data
    assert grpo_args(cfg, tmp_path).reward_weights == [0.9, 0.1]
    assert [f.__name__ for f in reward_functions(cfg)] == ["accuracy", "format"]
    assert reward_functions(cfg)[0].extraction == "strict"
    assert grpo_args(Config(), tmp_path).reward_weights == [1.0]  # the default run: accuracy alone


def test_care_decisions_read_accuracy_not_the_weighted_reward():
    """0.9 acc + 0.1 format: a well-formed wrong answer earns 0.1 > 0 yet is a failure; a cut-off
    correct-looking answer earns 0 and is never the anchor."""
    group = [WELL_FORMED, "<think>2 + 3 = 6</think><answer>6</answer>",
             "<think>2 + 3 = 7</think><answer>7</answer>", CUT_OFF]
    acc = VerifierReward(extraction="strict")(completions=group, answer=["5"] * 4, answer_type=["math"] * 4)
    fmt = [float(verify(r, "5", "math").formatted) for r in group]
    per_func = torch.tensor([acc, fmt]).T
    rewards, correct = reward_verdicts(per_func, weights=torch.tensor([0.9, 0.1]), accuracy_index=0)
    assert rewards.tolist() == pytest.approx([1.0, 0.1, 0.1, 0.0])
    assert correct.tolist() == [True, False, False, False]

    n = len(group)
    batch = {"think_len": torch.full((1, n), 3), "answer_len": torch.ones(1, n, dtype=torch.long),
             "embeddings": torch.nn.functional.normalize(torch.randn(1, n, 8, generator=torch.Generator().manual_seed(0)),
                                                          dim=-1),
             "logprob_sum": torch.tensor([[-1.0, -2.0, -3.0, -0.5]])}
    result = care_advantages(correct.view(1, n), rewards.view(1, n), cfg=CareConfig(), **batch)
    assert result.verifier_positive.tolist() == [[True, False, False, False]]
    assert result.anchor_index.tolist() == [0]
    assert sorted(result.negative_index[0, :3].tolist()) == [1, 2, 3]  # both formatted wrong answers
    assert (result.advantages[0, 1:] < 0).all() and result.advantages[0, 0] > 0
    by_reward = care_advantages(correct.view(1, n), rewards.view(1, n), cfg=CareConfig(positive_by="reward"), **batch)
    assert by_reward.verifier_positive.tolist() == [[True, True, True, False]]  # what "reward > 0" would do
    assert by_reward.negative_index[0].tolist()[:1] == [3] and by_reward.k_prime.tolist() == [1]

    # the same group without its one correct answer: no anchor, the all-negative rescue fires instead
    wrong = correct.clone()
    wrong[0] = False
    rescued = care_advantages(wrong.view(1, n), (rewards - 0.9 * correct).view(1, n), cfg=CareConfig(), **batch)
    assert not rescued.verifier_positive.any() and rescued.rescued.tolist() == [True]
