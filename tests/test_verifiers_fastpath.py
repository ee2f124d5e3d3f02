"""The in-process fast paths never disagree with the math-verify path they skip."""

from __future__ import annotations

import importlib.util
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from care.verifiers import extract_answer
from care.verifiers.math_answers import clean_math_answer, math_equal, quick_math_verdict


def load_table() -> list[tuple]:
    """The case table of test_verifiers.py, loaded by path so any pytest import mode works."""
    spec = importlib.util.spec_from_file_location(
        "verifier_case_table", Path(__file__).with_name("test_verifiers.py")
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.CASES


def full_verdict(prediction: str, gold: str) -> bool:
    """math-verify only: guards kept, fast paths off."""
    return math_equal(prediction, gold, fast_path=False)


MATH_PAIRS = [(response, gold) for response, gold, answer_type, _, _ in load_table() if answer_type == "math"]


@pytest.mark.parametrize(("response", "gold"), MATH_PAIRS)
def test_quick_verdict_agrees_with_math_verify_on_the_table(response: str, gold: str) -> None:
    prediction = extract_answer(response)
    if prediction is None:
        return
    quick = quick_math_verdict(prediction, gold)
    if quick is not None:
        assert quick == full_verdict(prediction, gold)


def decimal_text(value: Decimal) -> str:
    text = format(value, "f")
    return "0" if text in {"-0", "0"} else text


numbers = st.one_of(
    st.integers(-10_000, 10_000).map(str),
    st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False, allow_infinity=False).map(
        decimal_text
    ),
    st.decimals(min_value=0, max_value=2, places=7, allow_nan=False, allow_infinity=False).map(decimal_text),
)


@st.composite
def number_pairs(draw: st.DrawFn) -> tuple[str, str]:
    gold = draw(numbers)
    relation = draw(st.sampled_from(["same", "other", "nudged", "scaled", "padded"]))
    if relation == "same":
        prediction = gold
    elif relation == "other":
        prediction = draw(numbers)
    elif relation == "nudged":
        step = draw(st.sampled_from(["0.000001", "0.0000004", "0.00001", "0.01", "1"]))
        prediction = decimal_text(Decimal(gold) + Decimal(step))
    elif relation == "scaled":
        prediction = decimal_text(Decimal(gold) / 100)
    else:
        prediction = gold + ".0" if "." not in gold else gold + "0"
    suffixes = ["", "", "%", "\\%", " cm"]
    return prediction + draw(st.sampled_from(suffixes)), gold + draw(st.sampled_from(suffixes))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(number_pairs())
def test_numeric_fast_path_agrees_with_math_verify(pair: tuple[str, str]) -> None:
    prediction, gold = pair
    quick = quick_math_verdict(prediction, gold)
    if quick is not None:
        assert quick == full_verdict(prediction, gold), (prediction, gold)


def test_fast_path_decides_the_common_cases() -> None:
    assert quick_math_verdict("42", "42") is True
    assert quick_math_verdict("42", "43") is False
    assert quick_math_verdict("0.5", "0.51") is False
    assert quick_math_verdict("50%", "0.5") is True
    assert quick_math_verdict("\\frac{1}{2}", "0.5") is None  # needs math-verify
    assert quick_math_verdict("0.3333333", "0.333333") is None  # within rounding: math-verify decides


@pytest.mark.parametrize(
    ("raw", "text", "percent"),
    [
        ("$\\boxed{50\\%}$.", "50", True),
        ("The answer is $12$.", "12", False),
        ("\\text{5 cm}", "5", False),
        ("12 dollars", "12", False),
        ("2 \\pi", "2 \\pi", False),
        ("30°", "30^\\circ", False),
        ("1.5e-3", "1.5\\times 10^{-3}", False),
        ("\\(x = 3\\)", "x = 3", False),
    ],
)
def test_cleaning_steps(raw: str, text: str, percent: bool) -> None:
    cleaned = clean_math_answer(raw)
    assert (cleaned.text, cleaned.percent) == (text, percent)
