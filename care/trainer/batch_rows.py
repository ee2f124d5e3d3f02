"""Rows of TRL's generation batch: pick some, or merge rows of several batches into one.

TRL's `_generate_and_score_completions` returns one dict per process: prompts left-padded,
completions right-padded, each to the widest row of that call, and images flattened over the
batch (`pixel_values` [patches, dim] with `image_grid_thw` per image). RGR's re-scoring takes a
few rows of it (care.trainer.repair) and dynamic sampling builds a batch from rows of several
rounds (care.trainer.dynamic_sampling), each padded to its own widths. Both go through
`take_rows`, which uses TRL's own per-sample split of the images, as TRL's shuffle does: after
`split_pixel_values_by_grid`, every list and every tensor with a batch dimension is one entry
per row, and a 0-d tensor (`num_items_in_batch`) belongs to the whole batch.
"""

from __future__ import annotations

import torch
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

from care.trainer.trl_surface import LOSS_MASK

# prompt-width tensors (left-padded) and completion-width tensors (right-padded), with their pad values;
# None pads with the tokenizer's pad token
PROMPT_WIDTH_KEYS = {"prompt_ids": None, "prompt_mask": 0}
COMPLETION_WIDTH_KEYS = {"completion_ids": None, "completion_mask": 0, "tool_mask": 0, LOSS_MASK: 0,
                         "old_per_token_logps": 0.0, "ref_per_token_logps": 0.0, "sampling_per_token_logps": 0.0}
# per-token multimodal ids over prompt + completion: zeros on either side
SEQUENCE_WIDTH_KEYS = ("token_type_ids", "mm_token_type_ids")


def pad_widths(batch: dict, prompt_width: int, completion_width: int, pad_token_id: int) -> None:
    """Pad `batch` (in place) to at least these prompt and completion widths, as TRL pads them."""
    old_prompt = batch["prompt_ids"].size(1)
    old_completion = batch["completion_ids"].size(1)
    left, right = max(prompt_width - old_prompt, 0), max(completion_width - old_completion, 0)
    if not left and not right:
        return
    pad = torch.nn.functional.pad
    for key, value in PROMPT_WIDTH_KEYS.items():
        if batch.get(key) is not None and left:
            batch[key] = pad(batch[key], (left, 0), value=pad_token_id if value is None else value)
    for key, value in COMPLETION_WIDTH_KEYS.items():
        if batch.get(key) is not None and right:
            batch[key] = pad(batch[key], (0, right), value=pad_token_id if value is None else value)
    ratio = batch.get("importance_sampling_ratio")
    if ratio is not None and ratio.size(1) > 1 and right:  # token-level ratio; [B, 1] is per sequence
        batch["importance_sampling_ratio"] = pad(ratio, (0, right), value=1.0)
    total = old_prompt + left + old_completion + right
    for key in SEQUENCE_WIDTH_KEYS:
        tensor = batch.get(key)
        if tensor is not None:
            batch[key] = pad(tensor, (left, max(total - left - tensor.size(1), 0)), value=0)


def take_rows(batches: list[dict], sources: list[tuple[int, int]], pad_token_id: int) -> dict:
    """The batch whose row i is row `sources[i][1]` of `batches[sources[i][0]]`.

    Rows keep their tokens, masks, log-probs, advantages and images; narrower batches are padded
    to the widest used. `num_items_in_batch` is copied from the first batch: the caller recounts it.
    """
    used = sorted({index for index, _ in sources})
    prompt_width = max(batches[index]["prompt_ids"].size(1) for index in used)
    completion_width = max(batches[index]["completion_ids"].size(1) for index in used)
    split = {}
    for index in used:
        batch = split_pixel_values_by_grid(dict(batches[index]))
        pad_widths(batch, prompt_width, completion_width, pad_token_id)
        split[index] = batch
    merged = {}
    for key, value in split[used[0]].items():
        if isinstance(value, list):
            merged[key] = [split[index][key][row] for index, row in sources]
        elif isinstance(value, torch.Tensor) and value.ndim > 0:
            merged[key] = _stack_rows([split[index][key] for index in used], used, sources)
        else:
            merged[key] = value
    return unsplit_pixel_values_by_grid(merged)


def _stack_rows(tensors: list[torch.Tensor], used: list[int], sources: list[tuple[int, int]]) -> torch.Tensor:
    """Rows of several same-width tensors, in `sources` order, with one index_select per tensor."""
    if len(used) == 1:
        rows = torch.tensor([row for _, row in sources], device=tensors[0].device)
        return tensors[0].index_select(0, rows)
    offsets, total = {}, 0
    for index, tensor in zip(used, tensors, strict=True):
        offsets[index], total = total, total + tensor.size(0)
    rows = torch.tensor([offsets[index] + row for index, row in sources], device=tensors[0].device)
    return torch.cat(tensors).index_select(0, rows)


def moved(batch: dict, device) -> dict:
    """The batch with every tensor (and every tensor in a list) on `device`."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, list):
            return [move(item) for item in value]
        return value
    return {key: move(value) for key, value in batch.items()}
