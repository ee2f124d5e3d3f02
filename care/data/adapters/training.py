"""Training sets: Geometry3K, ChartQA and ViRL39K rows -> `Record`.

Column names are those of the hub releases:
  hiyouga/geometry3k     images (list of images), problem (with `<image>`), answer
  HuggingFaceM4/ChartQA  image, query, label (list of strings), human_or_machine
  TIGER-Lab/ViRL39K      question (with `<image>`), answer (mostly `\\boxed{...}`), image (list of paths
                         relative to the unzipped `images.zip`, e.g. "images/Processed-...-0.jpg"),
                         category, source, qid, PassRate_32BTrained, PassRate_7BBase
"""

from __future__ import annotations

from care.data.adapters.common import (
    LETTERS,
    MalformedRow,
    RowContext,
    as_text,
    check_letter,
    clean_placeholders,
    free_form_type,
    letter_for_option_text,
    split_embedded_options,
)
from care.data.schema import Record
from care.verifiers.extraction import last_boxed


def geometry3k(row: dict, ctx: RowContext) -> Record:
    """hiyouga's Geometry3K is free-form (the original's four choices are dropped): every gold is math."""
    return Record(
        id=f"geometry3k-{ctx.split}-{ctx.index}",  # the release has no id column; row order is stable
        images=ctx.images.images(row["images"]),
        question=clean_placeholders(row["problem"]),
        answer=as_text(row["answer"]),
        answer_type="math",
        source="geometry3k",
        meta={"split": ctx.split},
    )


def chartqa(row: dict, ctx: RowContext) -> Record:
    """The first label is the gold; numbers are math, words ("Yes", "Democrats") are text."""
    labels = row["label"]
    labels = [labels] if isinstance(labels, str) else [as_text(label) for label in labels or []]
    if not labels:
        raise MalformedRow("ChartQA row has an empty label list")
    return Record(
        id=f"chartqa-{ctx.split}-{ctx.index}",  # no id column either
        images=ctx.images.images(row["image"]),
        question=clean_placeholders(row["query"]),
        answer=labels[0],
        answer_type=free_form_type(labels[0]),
        source="chartqa",
        meta={"split": ctx.split, "labels": labels, "human_or_machine": row.get("human_or_machine")},
    )


def virl39k(row: dict, ctx: RowContext) -> Record:
    """Gold = content of the last `\\boxed{}` (the raw answer when there is none).

    ViRL39K has no question-type column. ASSUMED (not verified on the full release): multiple-choice
    questions list their options inline at the end ("Choices:\\nA: ..." or "(A) ..." lines) and box the
    letter. Such a block becomes `choices` and is cut from the question. A single boxed letter A-J without
    a recognisable block is still a choice (options then live in the image or in prose).
    """
    raw_answer = as_text(row["answer"])
    boxed = last_boxed(raw_answer)
    answer = (boxed if boxed is not None else raw_answer).strip()
    question = clean_placeholders(row["question"])
    stem, options = split_embedded_options(question)
    choices = None
    if options and len(answer) == 1 and answer.upper() in LETTERS[: len(options)]:
        question, choices, answer, answer_type = stem, options, answer.upper(), "choice"
    elif options and _matches_an_option(answer, options):
        question, choices, answer_type = stem, options, "choice"
        answer = letter_for_option_text(answer, options, f"virl39k {row.get('qid')}")
    elif len(answer) == 1 and answer.upper() in LETTERS:
        answer, answer_type = check_letter(answer, None, "virl39k"), "choice"
    else:
        answer_type = free_form_type(answer)
    meta = {key: row.get(key) for key in ("category", "source", "PassRate_32BTrained", "PassRate_7BBase")}
    meta.update(qid=row.get("qid"), raw_answer=raw_answer, split=ctx.split)
    return Record(
        id=f"virl39k-{row.get('qid') or ctx.index}",
        images=ctx.images.images(row["image"]),
        question=question,
        answer=answer,
        answer_type=answer_type,
        source="virl39k",
        choices=choices,
        meta=meta,
    )


def _matches_an_option(answer: str, options: list[str]) -> bool:
    try:
        letter_for_option_text(answer, options, "")
    except MalformedRow:
        return False
    return True
