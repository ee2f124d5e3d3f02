"""The synthetic task: deterministic, split cleanly, verifiable, and needs the image."""

import random
from collections import defaultdict

import pytest

from care.data.schema import ANSWER_TYPES, Record, to_prompt_row
from care.data.synthetic import COLOR_NAMES, demonstration, make_splits, reasoning


def _pixels(record):
    return record.images[0].tobytes()


def test_same_seed_gives_identical_records_and_images():
    a_train, a_eval = make_splits(seed=3, train_size=40, eval_size=10)
    b_train, b_eval = make_splits(seed=3, train_size=40, eval_size=10)
    for a, b in zip(a_train + a_eval, b_train + b_eval, strict=True):
        assert (a.id, a.question, a.answer, a.answer_type) == (b.id, b.question, b.answer, b.answer_type)
        assert _pixels(a) == _pixels(b)


def test_record_ids_are_those_earlier_runs_trained_on():
    """The ids name the boards; a change of hash formula would silently change the default run's data."""
    train, held_out = make_splits(seed=0, train_size=3, eval_size=2)
    assert [r.id for r in train + held_out] == [
        "synthetic-train-aa11e54bb68fff2f", "synthetic-train-112782c7d274ff36", "synthetic-train-0a134b2ba53f56be",
        "synthetic-heldout-055e899ba3a22595", "synthetic-heldout-0ee95799108442bf"]


def test_different_seeds_differ():
    a, _ = make_splits(seed=0, train_size=20, eval_size=2)
    b, _ = make_splits(seed=1, train_size=20, eval_size=2)
    assert [r.id for r in a] != [r.id for r in b]


def test_held_out_split_shares_no_board_mark_question_with_train():
    train, held_out = make_splits(seed=0, train_size=500, eval_size=100)
    assert len(train) == 500 and len(held_out) == 100
    train_keys = {r.id.rsplit("-", 1)[1] for r in train}
    assert not train_keys & {r.id.rsplit("-", 1)[1] for r in held_out}
    assert len({r.id for r in train + held_out}) == 600


def test_records_follow_the_shared_schema():
    train, _ = make_splits(seed=0, train_size=30, eval_size=2)
    for r in train:
        assert isinstance(r, Record) and r.source == "synthetic" and r.answer_type in ANSWER_TYPES
        assert len(r.images) == 1 and r.images[0].size == (84, 84)
        row = to_prompt_row(r)
        assert row["prompt"][0]["role"] == "user" and "<answer>" in row["prompt"][0]["content"]
        assert row["answer"] == r.answer and row["images"] == r.images


def test_gold_answers_match_the_drawn_board():
    train, _ = make_splits(seed=0, train_size=200, eval_size=2, grid=3, cell_px=28)
    for r in train:
        board = r.meta["board"]
        # the rendered image really shows the board: sample each cell's centre colour
        for i, row in enumerate(board):
            for j, name in enumerate(row):
                rgb = r.images[0].getpixel((j * 28 + 3, i * 28 + 3))
                nearest = min(COLOR_NAMES, key=lambda c: sum((a - b) ** 2 for a, b in
                                                            zip(rgb, __import__("care.data.synthetic", fromlist=["COLORS"]).COLORS[c], strict=True)))
                assert nearest == name
        cells = [c for row in board for c in row]
        marked = cells[r.meta["mark"]]
        # the mark is drawn: the marked cell's centre is white, its corner keeps the colour
        mr, mc = divmod(r.meta["mark"], 3)
        assert r.images[0].getpixel((mc * 28 + 14, mr * 28 + 14)) == (255, 255, 255)
        if r.meta["kind"] == "count":
            assert r.answer == str(cells.count(marked))
        else:
            assert r.answer == marked


def test_questions_cannot_be_answered_without_the_image():
    """Every frequent question text has several different gold answers across boards."""
    train, _ = make_splits(seed=0, train_size=2000, eval_size=2)
    answers = defaultdict(set)
    counts = defaultdict(int)
    for r in train:
        answers[r.question].add(r.answer)
        counts[r.question] += 1
    frequent = [q for q, n in counts.items() if n >= 20]
    assert len(frequent) == 2  # two fixed question texts: everything else is in the image
    assert all(len(answers[q]) >= 3 for q in frequent)
    # and the most common answer per question is far from always right
    best_guess = sum(max(sum(1 for r in train if r.question == q and r.answer == a) for a in answers[q])
                     for q in frequent) / sum(counts[q] for q in frequent)
    assert best_guess < 0.5


@pytest.mark.parametrize("reflect", [False, True])
def test_demonstrations_are_well_formed_and_verify(reflect):
    from care.verifiers import verify

    train, _ = make_splits(seed=0, train_size=60, eval_size=2)
    rng = random.Random(0)
    for r in train:
        response = demonstration(r, rng, reflect=reflect)
        verdict = verify(response, r.answer, r.answer_type)
        assert verdict.correct and verdict.formatted, response
        assert ("<repair>" in response) == reflect
        assert response.startswith("<think>" + reasoning(r.meta["board"], r.question, r.meta["mark"]).rsplit(" ", 1)[0])


def test_a_wrong_answer_does_not_verify():
    from care.verifiers import verify

    train, _ = make_splits(seed=0, train_size=40, eval_size=2)
    for r in train:
        wrong = str(int(r.answer) + 1) if r.answer_type == "math" else \
            next(c for c in COLOR_NAMES if c != r.answer)
        assert not verify(f"<think>x</think><answer>{wrong}</answer>", r.answer, r.answer_type).correct


@pytest.mark.parametrize("slip", [False, True])
def test_an_answer_slip_keeps_the_reasoning_but_changes_the_answer(slip):
    train, _ = make_splits(seed=0, train_size=30, eval_size=2)
    for r in train:
        response = demonstration(r, random.Random(0), reflect=False, slip=slip)
        final = response.split("<answer>")[1].split("</answer>")[0]
        assert (final != r.answer) == slip
        assert response.startswith("<think>" + reasoning(r.meta["board"], r.question, r.meta["mark"]))


@pytest.mark.parametrize("trace, wrong_share", [("reconcile", (0.0, 0.0)), ("rederive", (0.3, 0.7))])
def test_reflection_traces_conclude_before_the_cue_as_configured(trace, wrong_share):
    """`reconcile`: the reading and its conclusion are intact before the cue (an answer slip to
    reconcile); `rederive`: about half conclude wrongly before the cue. Both end in the right answer."""
    from care.repair import CUE_TEMPLATES

    train, _ = make_splits(seed=0, train_size=80, eval_size=2)
    rng, wrong = random.Random(0), 0
    for r in train:
        response = demonstration(r, rng, reflect=True, trace=trace)
        before_cue = response.removeprefix("<think>").split(CUE_TEMPLATES["structured"])[0]
        sound = reasoning(r.meta["board"], r.question, r.meta["mark"])
        assert before_cue.rsplit(" ", 1)[0] == sound.rsplit(" ", 1)[0]
        wrong += before_cue != sound
        assert response.endswith(f"</think><answer>{r.answer}</answer>")
    assert wrong_share[0] <= wrong / len(train) <= wrong_share[1]
    with pytest.raises(ValueError, match="cold_start.reflection_trace.*reconcile, rederive.*'bogus'"):
        demonstration(train[0], rng, reflect=True, trace="bogus")


def test_mislocate_traces_read_soundly_name_a_wrong_mark_and_end_right():
    from care.repair import CUE_TEMPLATES
    from care.verifiers import verify

    train, _ = make_splits(seed=0, train_size=80, eval_size=2)
    rng, wrong_before_cue = random.Random(0), 0
    for r in train:
        response = demonstration(r, rng, reflect=True, trace="mislocate")
        before_cue = response.removeprefix("<think>").split(CUE_TEMPLATES["structured"])[0]
        sound = reasoning(r.meta["board"], r.question, r.meta["mark"])
        reading = sound.split(" marked:")[0]
        assert before_cue.startswith(reading + " marked:")  # the board is read right
        concluded = before_cue.rsplit(" ", 1)[1]
        wrong_before_cue += concluded != r.answer
        assert verify(response, r.answer, r.answer_type).correct
    assert wrong_before_cue / len(train) > 0.9  # only a board whose every cell gives the gold escapes
