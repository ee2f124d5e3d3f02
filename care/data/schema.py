"""The one record schema every dataset is converted into, and its prompt format.

A record is what the verifier and the evaluation need (gold answer, answer type,
choices) plus what the policy sees (images, question). Training rows for TRL are
derived from records by `to_prompt_row`, so every dataset shares one prompt template.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

ANSWER_TYPES = ("math", "choice", "text")

RESPONSE_INSTRUCTION = "Think inside <think></think>, then answer inside <answer></answer>."


@dataclass
class Record:
    id: str
    images: list[Image.Image]
    question: str
    answer: str
    answer_type: str
    source: str
    choices: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"answer_type={self.answer_type!r} is not one of {ANSWER_TYPES}")


def prompt_text(record: Record) -> str:
    """The user turn's text: question, options if any, and the response-format instruction."""
    lines = [record.question]
    if record.choices:
        lines += [f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(record.choices)]
    lines.append(RESPONSE_INSTRUCTION)
    return "\n".join(lines)


def to_prompt_row(record: Record) -> dict:
    """A TRL row: conversational prompt (TRL inserts the image parts) plus verifier columns."""
    return {
        "id": record.id,
        "prompt": [{"role": "user", "content": prompt_text(record)}],
        "images": record.images,
        "answer": record.answer,
        "answer_type": record.answer_type,
        "choices": record.choices,
        "source": record.source,
    }
