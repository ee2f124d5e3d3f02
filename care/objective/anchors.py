"""Anchor choice (docs/method.md §1): one correct rollout per group that the subgroup contrasts against.

All strategies are vectorised over groups and deterministic: ties are broken by a fixed rule
(never by sort instability), so permuting rollouts permutes the choice, except between exact ties,
where the lowest index wins.
"""

from __future__ import annotations

import torch

NO_INDEX = -1


def think_len_for_ranking(think_len: torch.Tensor, response_len: torch.Tensor) -> torch.Tensor:
    """Lengths to pass as `think_len`: the think-span length, or the whole response where there is none.

    Spec section 1 ranks a rollout without a `<think>` span by its whole response length. The
    objective cannot tell "no span" from "an empty span" (0 tokens), so callers mark a missing span
    with a negative `think_len` and convert here before calling `care_advantages`.
    """
    return torch.where(think_len < 0, response_len, think_len)


def choose_anchor(
    candidates: torch.Tensor,
    think_len: torch.Tensor,
    answer_len: torch.Tensor,
    logprob_sum: torch.Tensor | None,
    strategy: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Index [N] of each group's anchor among `candidates` [N, G] (bool), -1 where it has none.

    shortest_think / longest_think: fewest / most think tokens, then the shorter answer span, then
    the lowest index. max_logprob: highest summed old-policy log-prob, then the lowest index.
    random: uniform over the candidates, drawn from `generator`.
    """
    if strategy in ("shortest_think", "longest_think"):
        answer_base = answer_len.max() + 1 if answer_len.numel() else 1
        think_key = think_len if strategy == "shortest_think" else -think_len
        key = think_key.long() * answer_base + answer_len.long()
        key = key.masked_fill(~candidates, torch.iinfo(torch.long).max)
        choice = key.argmin(dim=1)  # argmin returns the first minimum: the lowest index wins ties
    elif strategy == "max_logprob":
        if logprob_sum is None:
            raise ValueError("anchor='max_logprob' needs logprob_sum (summed old-policy log-probs), got None")
        choice = logprob_sum.masked_fill(~candidates, -torch.inf).argmax(dim=1)
    elif strategy == "random":
        draws = torch.rand(candidates.shape, generator=generator, device=candidates.device)
        choice = draws.masked_fill(~candidates, -1.0).argmax(dim=1)
    else:
        raise ValueError(f"unknown anchor strategy {strategy!r}")
    return torch.where(candidates.any(dim=1), choice, NO_INDEX)
