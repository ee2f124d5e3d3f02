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


def prompt_messages(record: Record) -> list[dict]:
    """The one conversation every prompt is rendered from, in training and evaluation alike.

    One user turn: the record's images first, then `prompt_text`. This is the layout TRL gives a
    training row's string prompt with its images (`trl.data_utils.prepare_multimodal_messages`),
    so the backbone's chat template renders the same text in both places (tests/test_training_data.py).
    """
    content = [{"type": "image"} for _ in record.images] + [{"type": "text", "text": prompt_text(record)}]
    return [{"role": "user", "content": content}]


def render_prompt(processor, record: Record) -> str:
    """`prompt_messages` through the backbone's chat template, ready for generation."""
    return processor.apply_chat_template(prompt_messages(record), add_generation_prompt=True, tokenize=False)


def to_prompt_row(record: Record) -> dict:
    """A TRL row: the conversational prompt (TRL puts the images before the text, as `prompt_messages`
    does) plus the verifier's columns."""
    return {
        "id": record.id,
        "prompt": [{"role": "user", "content": prompt_text(record)}],
        "images": record.images,
        "answer": record.answer,
        "answer_type": record.answer_type,
        "choices": record.choices,
        "source": record.source,
    }
