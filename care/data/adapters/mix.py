"""`care_mix`: the union of the training sets with cross-source duplicates removed.

Two records are duplicates when their normalised question text AND their images match:
  - question: bare `<image>` placeholders already removed by the adapters, then Unicode NFKC,
    case-folded, runs of whitespace collapsed to one space (punctuation is kept as is);
  - images: sha256 of the decoded pixels of each image, in order (`common.image_digest`), so the same
    picture stored as PNG in one release and re-saved in another still matches.
The first occurrence wins (order: geometry3k, chartqa, virl39k, each in file order); the ids it absorbed
are listed in its `meta["duplicate_ids"]`. Gold answers are not part of the key: a disagreeing
duplicate is still a duplicate, and its gold is kept in `meta["duplicate_answers"]` for auditing.
"""

from __future__ import annotations

import unicodedata

from care.data.adapters.common import image_digest
from care.data.schema import Record


def normalise_question(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def dedupe_key(record: Record) -> tuple[str, tuple[str, ...]]:
    return normalise_question(record.question), tuple(image_digest(image) for image in record.images)


def dedupe(records: list[Record]) -> list[Record]:
    """Records in order, each duplicate folded into its first occurrence."""
    kept: dict[tuple, Record] = {}
    for record in records:
        key = dedupe_key(record)
        first = kept.get(key)
        if first is None:
            kept[key] = record
            continue
        first.meta.setdefault("duplicate_ids", []).append(record.id)
        if record.answer != first.answer:
            first.meta.setdefault("duplicate_answers", []).append(record.answer)
    return list(kept.values())
