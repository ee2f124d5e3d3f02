"""CARE's features of each rollout, read from one old-policy forward (docs/method.md §2).

Hard negatives are picked by cosine distance between rollouts' last hidden states, mean-pooled
over each think span; the anchor rules may also rank by summed log-probs. Both come from one
call of TRL's forward helper (`_get_per_token_logps_and_entropies`) over prompt + completion: a
forward hook on the decoder's final norm pools the hidden states chunk by chunk while TRL
computes its log-probs. Which call carries it (TRL's old-log-prob forward where TRL runs one,
else one no-grad call of CARE's) is step 3 of care.trainer.care_step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from care.trainer.spans import SpanFinder, Spans


@dataclass
class Features:
    """What CARE reads from one old-policy forward, one row per rollout in that forward's order."""

    spans: Spans
    embeddings: torch.Tensor  # [B, D] unit-norm, think-span mean-pooled last hidden states
    logprob_sum: torch.Tensor  # [B] summed completion log-probs


class FeatureReader:
    """Reads `Features` from a call of TRL's forward helper, with a hook on the final norm."""

    def __init__(self, span_finder: SpanFinder, final_norm: Callable[[], torch.nn.Module]):
        self.span_finder = span_finder
        self.final_norm = final_norm  # looked up per call: the trainer may wrap the model after building

    def read(self, forward, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        """`forward(model, input_ids, ...)`'s result, and the features of its rows.

        `forward` must call the model once per chunk of rows, in order (TRL's helper does).
        """
        completion_mask = attention_mask[:, -logits_to_keep:]
        spans = self.span_finder.find(input_ids[:, -logits_to_keep:], completion_mask)
        # pool over the think span; a rollout without one pools over its whole response (docs/method.md §2)
        has_think = spans.think.any(dim=1, keepdim=True)
        weights = torch.where(has_think, spans.think, completion_mask.bool()).float()
        pooled: list[torch.Tensor] = []
        done_rows = [0]  # each call of the hook is the next chunk of rows

        def pool(module, inputs, hidden):
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            start, done_rows[0] = done_rows[0], done_rows[0] + hidden.size(0)
            w = weights[start:done_rows[0]].to(hidden.device)
            summed = (hidden[:, -logits_to_keep:].detach().float() * w.unsqueeze(-1)).sum(dim=1)
            pooled.append(summed / w.sum(dim=1, keepdim=True).clamp(min=1.0))

        handle = self.final_norm().register_forward_hook(pool)
        try:
            result = forward(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        finally:
            handle.remove()
        logps = result[0].detach()
        embeddings = torch.nn.functional.normalize(torch.cat(pooled), dim=-1)
        return result, Features(spans, embeddings, (logps * completion_mask).sum(dim=1))
