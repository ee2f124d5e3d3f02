"""Benchmarks: MathVista, MathVerse, MATH-Vision, MMMU and MMMU-Pro rows -> `Record`.

Column names are those of the hub releases (see each function). Multiple choice always becomes
answer_type "choice" with `choices` = option texts and `answer` = the gold letter; free-form golds are
"math" when they are numbers or expressions and "text" otherwise (`common.looks_mathematical`).
"""

from __future__ import annotations

from care.data.adapters.common import (
    MalformedRow,
    RowContext,
    as_text,
    check_letter,
    clean_placeholders,
    free_form_type,
    is_present,
    letter_for_option_text,
    parse_options_literal,
    split_embedded_options,
)
from care.data.schema import Record

# The question lives in the image (MathVerse "Vision Only", MMMU-Pro "vision"): this is the text turn.
QUESTION_IN_IMAGE = "Answer the question shown in the image."
CHOICE_QUESTION_IN_IMAGE = "Answer the multiple-choice question shown in the image with the letter of your choice."
MMMU_IMAGE_COLUMNS = tuple(f"image_{i}" for i in range(1, 8))
_MATHVISTA_TYPES = {"integer": "math", "float": "math", "list": "math", "text": "text"}


def _image_cell(row: dict, decoded: str, fallback: str):
    """The embedded image when the release ships one (`decoded_image`), else the path column."""
    return row[decoded] if is_present(row.get(decoded)) else row.get(fallback)


def mathvista(row: dict, ctx: RowContext) -> Record:
    """AI4Math/MathVista: pid, question, image (path), decoded_image, choices, unit, precision, answer,
    question_type (multi_choice|free_form), answer_type (integer|float|text|list), query, metadata.

    Multiple-choice golds are option TEXT in MathVista; they are mapped to their letter. Free-form
    questions get MathVista's own answer-format hint (decimal places, list) appended, since exact
    verification of "1.25" against gold "1.2" needs the model to know the precision.
    """
    pid = as_text(row["pid"])
    where = f"mathvista pid {pid}"
    question = clean_placeholders(row["question"])
    choices = None
    if row["question_type"] == "multi_choice":
        choices = [as_text(c) for c in row["choices"] or []]
        answer, answer_type = letter_for_option_text(as_text(row["answer"]), choices, where), "choice"
    else:
        answer = as_text(row["answer"])
        answer_type = _MATHVISTA_TYPES.get(row.get("answer_type"), free_form_type(answer))
        question = _with_format_hint(question, row.get("answer_type"), row.get("precision"))
    meta = {key: row.get(key) for key in ("pid", "unit", "precision", "question_type", "answer_type", "query")}
    meta["metadata"] = row.get("metadata")
    return Record(id=f"mathvista-{pid}", images=ctx.images.images(_image_cell(row, "decoded_image", "image")),
                  question=question, answer=answer, answer_type=answer_type, source="mathvista",
                  choices=choices, meta=meta)


def _with_format_hint(question: str, answer_type: str | None, precision) -> str:
    if answer_type == "float" and precision is not None:
        places = int(precision)
        return f"{question}\n(Give the answer as a number with {places} decimal place{'s' * (places != 1)}.)"
    if answer_type == "list":
        return f"{question}\n(Give the answer as a list, e.g. [1, 2, 3].)"
    return question


def mathverse(row: dict, ctx: RowContext) -> Record:
    """AI4Math/MathVerse (config testmini): sample_index, problem_index, problem_version, question, image,
    answer, question_type (multi-choice|free-form), metadata, query_wo, query_cot, question_for_eval.

    Multiple-choice questions carry their options inline ("Choices:\\nA:..."); they are split into
    `choices`. "Vision Only" rows have an empty question (text and options are drawn in the image): the
    text turn is then a fixed instruction, and `choices` stays None. Free-form golds are all math.
    """
    index = as_text(row["sample_index"])
    question = clean_placeholders(row.get("question") or "")
    choices = None
    if row["question_type"] == "multi-choice":
        stem, options = split_embedded_options(question)
        if options:
            question, choices = stem, options
        answer, answer_type = check_letter(row["answer"], choices, f"mathverse {index}"), "choice"
    else:
        answer, answer_type = as_text(row["answer"]), "math"
    meta = {key: row.get(key) for key in ("problem_index", "problem_version", "question_type",
                                          "question_for_eval", "metadata")}
    if not question:
        question = CHOICE_QUESTION_IN_IMAGE if answer_type == "choice" else QUESTION_IN_IMAGE
    return Record(id=f"mathverse-{index}", images=ctx.images.images(row["image"]), question=question, answer=answer, answer_type=answer_type,
                  source="mathverse", choices=choices, meta=meta)


def mathvision(row: dict, ctx: RowContext) -> Record:
    """MathLLMs/MathVision (split test or testmini): id, question (with `<image1>` references), options
    (list; empty for free-form), image (path), decoded_image, answer (a letter when options exist),
    solution, level, subject. The release has ONE image per row even when the text names several."""
    question_id = as_text(row["id"])
    options = [clean_placeholders(as_text(o)) for o in row.get("options") or []]
    if options:
        answer, answer_type = check_letter(row["answer"], options, f"mathvision {question_id}"), "choice"
    else:
        answer = as_text(row["answer"])
        answer_type = free_form_type(answer)
    return Record(id=f"mathvision-{question_id}",
                  images=ctx.images.images(_image_cell(row, "decoded_image", "image")),
                  question=clean_placeholders(row["question"]), answer=answer, answer_type=answer_type,
                  source="mathvision", choices=options or None,
                  meta={"level": row.get("level"), "subject": row.get("subject"), "split": ctx.split})


def mmmu(row: dict, ctx: RowContext) -> Record:
    """MMMU/MMMU (30 subject configs, split validation): id, question (with `<image 1>`), options (string
    repr of a list), explanation, image_1..image_7, img_type, answer, topic_difficulty, question_type
    (multiple-choice|open), subfield.

    Images are the non-empty image_k columns in order; `meta["image_columns"]` records which, so
    `<image k>` can be matched to its image. Open golds written as a list literal ("['0.5', '1/2']")
    take the first entry as gold and keep all in `meta["accepted_answers"]` (UNVERIFIED assumption).
    """
    row_id = as_text(row["id"])
    where = f"mmmu {row_id}"
    image_columns = [c for c in MMMU_IMAGE_COLUMNS if is_present(row.get(c))]
    meta = {"subject": ctx.config or _subject_from_id(row_id), "image_columns": image_columns}
    meta.update({key: row.get(key) for key in ("subfield", "img_type", "topic_difficulty", "question_type")})
    choices = None
    if row["question_type"] == "multiple-choice":
        choices = [clean_placeholders(o) for o in parse_options_literal(row["options"], where)] or None
        answer, answer_type = check_letter(row["answer"], choices, where), "choice"
    else:
        accepted = _accepted_open_answers(as_text(row["answer"]), where)
        answer, answer_type = accepted[0], free_form_type(accepted[0])
        meta["accepted_answers"] = accepted
    images = [image for column in image_columns for image in ctx.images.images(row[column])]
    return Record(id=f"mmmu-{row_id}", images=images, question=clean_placeholders(row["question"]),
                  answer=answer, answer_type=answer_type, source="mmmu", choices=choices, meta=meta)


def _subject_from_id(row_id: str) -> str:
    """"validation_Art_Theory_12" -> "Art_Theory"."""
    parts = row_id.split("_")
    return "_".join(parts[1:-1]) if len(parts) > 2 else ""


def _accepted_open_answers(answer: str, where: str) -> list[str]:
    if answer.startswith("[") and answer.endswith("]"):
        values = parse_options_literal(answer, where)
        if values:
            return [v.strip() for v in values]
    if not answer:
        raise MalformedRow(f"{where}: empty gold answer")
    return [answer]


def mmmu_pro_standard(row: dict, ctx: RowContext) -> Record:
    """MMMU/MMMU_Pro config "standard (10 options)", split test: id, question, options (string repr of
    a list, up to 10), explanation, image_1..image_7, img_type, answer (letter), topic_difficulty,
    subject. Always multiple choice."""
    row_id = as_text(row["id"])
    where = f"mmmu_pro_standard {row_id}"
    image_columns = [c for c in MMMU_IMAGE_COLUMNS if is_present(row.get(c))]
    choices = [clean_placeholders(o) for o in parse_options_literal(row["options"], where)] or None
    meta = {"image_columns": image_columns}
    meta.update({key: row.get(key) for key in ("subject", "img_type", "topic_difficulty")})
    return Record(id=f"mmmu_pro_standard-{row_id}",
                  images=[image for column in image_columns for image in ctx.images.images(row[column])],
                  question=clean_placeholders(row["question"]), answer=check_letter(row["answer"], choices, where),
                  answer_type="choice", source="mmmu_pro_standard", choices=choices, meta=meta)


def mmmu_pro_vision(row: dict, ctx: RowContext) -> Record:
    """MMMU/MMMU_Pro config "vision", split test: id, image (a screenshot holding question AND options),
    options, answer, subject. The options are deliberately NOT shown as text (that is the point of the
    vision setting): `choices` is None and the parsed options go to `meta["options"]`."""
    row_id = as_text(row["id"])
    where = f"mmmu_pro_vision {row_id}"
    options = parse_options_literal(row.get("options"), where)
    return Record(id=f"mmmu_pro_vision-{row_id}", images=ctx.images.images(row["image"]),
                  question=CHOICE_QUESTION_IN_IMAGE, answer=check_letter(row["answer"], options, where),
                  answer_type="choice", source="mmmu_pro_vision", choices=None,
                  meta={"options": options, "subject": row.get("subject")})
