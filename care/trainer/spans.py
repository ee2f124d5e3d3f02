"""Find the <think> and <answer> spans of generated token ids.

Tags are ordinary text in Qwen vocabularies, so a tokenizer may split `</think>` into
several pieces or merge it with neighbouring text. We decode each token on its own
(cached per id), locate the tags in the concatenated text, and mark every token whose
characters overlap a span's content. Missing tags degrade gracefully: no `<think>` but a
`</think>` means the think span starts at the response start; no closing tag runs to the
next opening tag or the end; no answer span leaves the answer mask empty (token credit
then treats the whole response as answer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Spans:
    think: torch.Tensor  # bool [B, T]
    answer: torch.Tensor  # bool [B, T]
    think_len: torch.Tensor  # long [B]: tokens inside <think>, -1 when there is no think span
    answer_len: torch.Tensor  # long [B]
    response_len: torch.Tensor  # long [B]


class SpanFinder:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._pieces: dict[int, str] = {}

    def piece(self, token_id: int) -> str:
        text = self._pieces.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            self._pieces[token_id] = text
        return text

    def char_spans(self, text: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """(think, answer) content ranges in characters, or None where absent."""
        think = None
        open_at = text.find("<think>")
        close_at = text.find("</think>", open_at + 1 if open_at >= 0 else 0)
        if open_at >= 0:
            start = open_at + len("<think>")
            end = close_at if close_at >= 0 else _first(text.find("<answer>", start), len(text))
            think = (start, end)
        elif close_at >= 0:
            think = (0, close_at)
        answer = None
        answer_at = text.rfind("<answer>", think[1] if think else 0)
        if answer_at >= 0:
            start = answer_at + len("<answer>")
            answer = (start, _first(text.find("</answer>", start), len(text)))
        return think, answer

    def find(self, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> Spans:
        batch, width = completion_ids.shape
        think = torch.zeros(batch, width, dtype=torch.bool)
        answer = torch.zeros(batch, width, dtype=torch.bool)
        has_think = torch.zeros(batch, dtype=torch.bool)
        lengths = completion_mask.sum(1).long().cpu()
        for row, (ids, n) in enumerate(zip(completion_ids.tolist(), lengths.tolist(), strict=True)):
            pieces = [self.piece(i) for i in ids[:n]]
            ends = torch.tensor([len(p) for p in pieces]).cumsum(0) if pieces else torch.zeros(0)
            starts = ends - torch.tensor([len(p) for p in pieces]) if pieces else torch.zeros(0)
            think_range, answer_range = self.char_spans("".join(pieces))
            for target, char_range in ((think, think_range), (answer, answer_range)):
                if char_range is not None and n:
                    lo, hi = char_range
                    target[row, :n] = (starts < hi) & (ends > lo) & (hi > lo)
            has_think[row] = think_range is not None
        think_len = torch.where(has_think, think.sum(1), torch.full((batch,), -1)).long()
        device = completion_ids.device
        return Spans(think.to(device), answer.to(device), think_len.to(device), answer.sum(1).long().to(device),
                     lengths.to(device))


def _first(found: int, default: int) -> int:
    return found if found >= 0 else default
