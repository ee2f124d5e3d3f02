"""Verifier behaviour on a table of responses: math, choice and text answers, extraction and format."""

from __future__ import annotations

import pytest

from care.verifiers import ANSWER_TYPES, extract_answer, is_well_formed, verify, verify_batch


def formatted(answer: str, thinking: str = "Let me think.") -> str:
    return f"<think>{thinking}</think>\n<answer>{answer}</answer>"


ANIMALS = ["cat", "dog", "bird", "fish"]

# (response, gold, answer_type, choices, expected correct)
CASES = [
    # --- math: equivalent forms ---
    (formatted("0.5"), "1/2", "math", None, True),
    (formatted("\\frac{1}{2}"), "0.5", "math", None, True),
    (formatted("1/2"), "\\frac{1}{2}", "math", None, True),
    (formatted("\\frac12"), "0.5", "math", None, True),
    (formatted("\\dfrac{3}{4}"), "0.75", "math", None, True),
    (formatted("10.0"), "10", "math", None, True),
    (formatted("0.3333333"), "\\frac{1}{3}", "math", None, True),
    (formatted("1,000"), "1000", "math", None, True),
    (formatted("1.2e3"), "1200", "math", None, True),
    (formatted("- 2"), "-2", "math", None, True),
    # --- math: percent rule (one side with %: X% means X or X/100) ---
    (formatted("50\\%"), "0.5", "math", None, True),
    (formatted("50%"), "1/2", "math", None, True),
    (formatted("0.5"), "50%", "math", None, True),
    (formatted("50"), "50%", "math", None, True),
    (formatted("\\boxed{12.5\\%}"), "0.125", "math", None, True),
    (formatted("60 percent"), "0.6", "math", None, True),
    (formatted("0.5%"), "50%", "math", None, False),
    (formatted("5%"), "0.5", "math", None, False),
    # --- math: intervals, sets, LaTeX ---
    (formatted("[1, 2)"), "[1,2)", "math", None, True),
    (formatted("(1,2]"), "(1,2)", "math", None, False),
    (formatted("(-\\infty, 3]"), "x \\le 3", "math", None, True),
    (formatted("\\{2, 1\\}"), "\\{1,2\\}", "math", None, True),
    (formatted("2, 1"), "\\{1,2\\}", "math", None, True),
    (formatted("\\{1, 3\\}"), "\\{1,2\\}", "math", None, False),
    (formatted("\\frac{\\sqrt{2}}{2}"), "\\sqrt{2}/2", "math", None, True),
    (formatted("\\sqrt{12}"), "2\\sqrt{3}", "math", None, True),
    (formatted("(x+1)^2"), "x^2+2x+1", "math", None, True),
    (formatted("x^2+1"), "x^2+2x+1", "math", None, False),
    (formatted("\\frac{\\pi}{4}"), "\\pi/4", "math", None, True),
    (formatted("3.14"), "\\pi", "math", None, False),
    (formatted("x = 3"), "3", "math", None, True),
    (formatted("x = 4"), "3", "math", None, False),
    (
        formatted("\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        "\\begin{pmatrix}1\\\\2\\end{pmatrix}",
        "math",
        None,
        True,
    ),
    # --- math: units and wrappers ---
    (formatted("5 cm"), "5", "math", None, True),
    (formatted("5\\text{ cm}"), "5", "math", None, True),
    (formatted("30^\\circ"), "30", "math", None, True),
    (formatted("30°"), "30", "math", None, True),
    (formatted("$12$"), "12", "math", None, True),
    (formatted("\\$12"), "12", "math", None, True),
    (formatted("12 dollars"), "12", "math", None, True),
    (formatted("6 \\text{cm}^2"), "6", "math", None, True),
    (formatted("5 m/s"), "5", "math", None, True),
    (formatted("5"), "5 cm", "math", None, True),
    (formatted("2\\pi"), "2", "math", None, False),
    (formatted("2x"), "2", "math", None, False),
    # --- math: near misses ---
    (formatted("0.51"), "0.5", "math", None, False),
    (formatted("12"), "120", "math", None, False),
    (formatted("120"), "12", "math", None, False),
    (formatted("10.000001"), "10", "math", None, False),
    (formatted("0.333"), "\\frac{1}{3}", "math", None, False),
    # --- math: extraction ---
    ("The area is \\boxed{\\frac{7}{2}} square units.", "3.5", "math", None, True),
    ("<answer>3</answer> wait, let me redo this. <answer>4</answer>", "4", "math", None, True),
    ("<answer>3</answer> wait, let me redo this. <answer>4</answer>", "3", "math", None, False),
    ("Working...\nThe final answer is: 42", "42", "math", None, True),
    (formatted("so the area is 12 square units"), "12", "math", None, True),
    (formatted("The answer is $\\boxed{17}$."), "17", "math", None, True),
    (formatted("   "), "0", "math", None, False),
    ("", "0", "math", None, False),
    # --- choice: letter phrasings ---
    (formatted("B"), "B", "choice", None, True),
    (formatted("(B)"), "B", "choice", None, True),
    (formatted("B."), "B", "choice", None, True),
    (formatted("B)"), "B", "choice", None, True),
    (formatted("b"), "B", "choice", None, True),
    (formatted("The answer is B"), "B", "choice", None, True),
    (formatted("\\boxed{B}"), "B", "choice", None, True),
    (formatted("Option B"), "B", "choice", None, True),
    (formatted("**B**"), "B", "choice", None, True),
    (formatted("$\\boxed{\\text{B}}$"), "B", "choice", None, True),
    (formatted("B. dog"), "B", "choice", ANIMALS, True),
    (formatted("(J)"), "J", "choice", None, True),
    # --- choice: option text ---
    (formatted("dog"), "B", "choice", ANIMALS, True),
    (formatted("The dog."), "B", "choice", ANIMALS, True),
    (formatted("B"), "dog", "choice", ANIMALS, True),
    (formatted("It must be the bird, since it flies."), "C", "choice", ANIMALS, True),
    (formatted("cat"), "B", "choice", ANIMALS, False),
    # --- choice: letters in prose ---
    (formatted("I think B is wrong, the answer is C"), "C", "choice", None, True),
    (formatted("I think B is wrong, the answer is C"), "B", "choice", None, False),
    (formatted("A is tempting, but D fits the figure"), "D", "choice", None, True),
    (formatted("I would pick (A) here"), "A", "choice", None, True),
    ("Looking at the chart... Answer: (C)", "C", "choice", None, True),
    # --- choice: near misses ---
    (formatted("AB"), "B", "choice", None, False),
    (formatted("Answer: BC"), "B", "choice", None, False),
    (formatted("C"), "B", "choice", None, False),
    (formatted("K"), "B", "choice", None, False),
    (formatted("Bird"), "B", "choice", None, False),
    (formatted(""), "B", "choice", None, False),
    # --- text ---
    (formatted("Paris"), "paris", "text", None, True),
    (formatted("The Eiffel Tower."), "eiffel tower", "text", None, True),
    (formatted("  New   York "), "New York", "text", None, True),
    (formatted("Yes."), "yes", "text", None, True),
    (formatted("\\text{yes}"), "Yes", "text", None, True),
    (formatted("“red”, green"), "red green", "text", None, True),
    (formatted("3.5"), "3.5", "text", None, True),
    (formatted("yes, because it is red"), "yes", "text", None, False),
    (formatted("Parish"), "Paris", "text", None, False),
    (formatted("35"), "3.5", "text", None, False),
    (formatted("no"), "yes", "text", None, False),
]


@pytest.mark.parametrize(
    ("response", "gold", "answer_type", "choices", "expected"),
    CASES,
    ids=[f"{case[2]}-{index}-{case[1]}" for index, case in enumerate(CASES)],
)
def test_verify_table(response: str, gold: str, answer_type: str, choices, expected: bool) -> None:
    result = verify(response, gold, answer_type, choices, extraction="lenient")  # the table holds untagged answers
    assert result.correct is expected, result
    assert not result.timed_out


def test_verify_batch_matches_single_calls_and_keeps_order() -> None:
    responses, golds, types, choices, expected = map(list, zip(*CASES, strict=True))
    results = verify_batch(responses, golds, types, choices, extraction="lenient")
    assert [result.correct for result in results] == expected


def test_table_is_large_and_covers_every_answer_type() -> None:
    assert len(CASES) >= 60
    assert {case[2] for case in CASES} == set(ANSWER_TYPES)


@pytest.mark.parametrize(
    "response",
    [
        "<think>a</think><answer>b</answer>",
        "  <think>a</think>\n\n<answer>b</answer>\n",
        "<think></think><answer>b</answer>",
        "<think>multi\nline</think> <answer>\n42\n</answer>",
    ],
)
def test_well_formed_responses(response: str) -> None:
    assert is_well_formed(response)
    assert verify(response, "b", "text").formatted


@pytest.mark.parametrize(
    "response",
    [
        "<answer>b</answer>",
        "<think>a</think>",
        "Sure! <think>a</think><answer>b</answer>",
        "<think>a</think><answer>b</answer> Hope this helps.",
        "<think>a</think> so <answer>b</answer>",
        "<think>a</think><answer>b</answer><answer>c</answer>",
        "<think>a<think>b</think><answer>c</answer>",
        "<answer>b</answer><think>a</think>",
        "<think>a</think><answer>  </answer>",
        "<think>a</think><answer>b",
        "the answer is b",
    ],
)
def test_malformed_responses(response: str) -> None:
    assert not is_well_formed(response)
    assert not verify(response, "b", "text").formatted


@pytest.mark.parametrize(
    ("response", "parsed"),
    [
        (formatted("  42 "), "42"),
        ("<answer>1</answer><answer>2</answer>", "2"),
        ("x \\boxed{1} then \\boxed{\\frac{2}{3}} done", "\\frac{2}{3}"),
        ("\\boxed{1} and an unbalanced \\boxed{2", "1"),
        ("reasoning\n**Answer:** C\nthanks", "C"),
        ("line one\nthe end result\n\n", "the end result"),
        ("<think>no answer tag", None),  # cut off while reasoning: nothing outside <think>
        ("<think>maybe 3</think>\nso 4", "so 4"),
        ("   \n  ", None),
    ],
)
def test_extraction_rule(response: str, parsed: str | None) -> None:
    assert extract_answer(response, "lenient") == parsed
    assert verify(response, "x", "text", extraction="lenient").parsed == parsed


def test_result_is_frozen() -> None:
    result = verify(formatted("4"), "4", "math")
    assert result.correct and result.formatted and result.parsed == "4"
    with pytest.raises(AttributeError):
        result.correct = False  # type: ignore[misc]


def test_unknown_answer_type_names_the_accepted_values() -> None:
    with pytest.raises(ValueError, match="answer_type") as error:
        verify(formatted("4"), "4", "numeric")
    assert all(name in str(error.value) for name in ANSWER_TYPES)


def test_choice_gold_that_is_not_a_letter_or_option_is_a_data_error() -> None:
    with pytest.raises(ValueError, match="choice gold"):
        verify(formatted("B"), "elephant", "choice", ANIMALS)


def test_batch_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="golds"):
        verify_batch(["a", "b"], ["a"], "text")


def test_batch_accepts_one_answer_type_for_all() -> None:
    results = verify_batch([formatted("1/2"), formatted("3")], ["0.5", "4"], "math")
    assert [result.correct for result in results] == [True, False]
