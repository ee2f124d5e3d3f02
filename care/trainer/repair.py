"""Reflection-Guided Resampling inside the trainer (spec section 7), as a mixin of CareGRPOTrainer.

Between subgroup selection and scoring, each group with an anchor and a hard negative gets one
repair of its cosine-nearest negative:
1. the repair context (`care.repair.repair_context`: cue before `</think>`, cut after `<answer>`;
   `no_cue`: the same cut without the cue; `random`: nothing, a fresh sample from the prompt),
2. one decode through TRL's own generation path (HF generate or vLLM) with RGR's sampling
   settings; every rank submits the same number of rows (padded with discarded copies), so
   collective engines see the same calls everywhere,
3. a re-score with the same reward functions (TRL's `_calculate_rewards`, gathered),
4. a splice in place: the repaired completion replaces the negative's row, so batch size and
   group layout never change. `prompt_only` trains the continuation under the original prompt;
   `with_prefix` keeps the repair context as completion tokens outside CARE's loss mask
   (`care.trainer.trl_surface.LOSS_MASK`). Old, reference
   and sampling log-probs of spliced rows are recomputed on exactly the tokens trained, and any
   importance-sampling ratio is set to 1 for them (no correction, as the reference code).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from trl import GRPOTrainer
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

from care.config import RGRConfig
from care.repair import repair_context
from care.trainer.trl_surface import LOSS_MASK

FORWARD_KEYS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
                "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")
# per-token tensors that follow the completion width, with the value that pads them
COMPLETION_WIDTH_KEYS = {"completion_ids": None, "completion_mask": 0, "tool_mask": 0, LOSS_MASK: 0,
                         "old_per_token_logps": 0.0, "ref_per_token_logps": 0.0, "sampling_per_token_logps": 0.0}


@dataclass
class RepairBatch:
    """What RGR did this step, for the objective: per group [N]; -1 / 0.0 where nothing was repaired."""

    outcome: torch.Tensor  # long: -1 none, 0 failed, 1 succeeded
    reward: torch.Tensor  # float: the repaired sample's total reward


def forward_kwargs(batch: dict) -> dict:
    """The multimodal inputs TRL's forward helper takes, from a generation batch."""
    return {key: batch.get(key) for key in FORWARD_KEYS}


class ReflectionResampler:
    """Mixin for CareGRPOTrainer: needs TRL's generation, reward and forward helpers on `self`."""

    rgr: RGRConfig
    _last_prompts: list | None = None
    _last_inputs: list | None = None

    # TRL prepares multimodal prompts inside _generate_and_score_completions; keep them for repairs.
    def _generate(self, prompts):
        self._last_prompts = prompts
        return super()._generate(prompts)

    def _repair(self, output: dict, selection, group_size: int) -> RepairBatch:
        n_groups = selection.anchor_index.numel()
        local_rows = output["completion_ids"].size(0)
        wanted = [group * group_size + column for group, column in enumerate(selection.repair_candidate.tolist())
                  if column >= 0]
        rows_per_rank = [[row - rank * local_rows for row in wanted if rank * local_rows <= row < (rank + 1) * local_rows]
                         for rank in range(self.accelerator.num_processes)]
        mine = rows_per_rank[self.accelerator.process_index]
        width = max(len(rows) for rows in rows_per_rank)
        outcome = torch.full((n_groups,), -1, dtype=torch.long)
        reward = torch.zeros(n_groups)
        if width == 0:  # no rank has a candidate: no generate call anywhere
            return RepairBatch(outcome, reward)

        padded = mine + [mine[0] if mine else 0] * (width - len(mine))
        contexts = [self._context_text(output, row) for row in padded]
        context_ids = [self._tokenizer.encode(context, add_special_tokens=False) for context in contexts]
        continuations = self._decode_repairs(padded, context_ids)
        texts = [context + self._tokenizer.decode(ids, skip_special_tokens=True)
                 for context, ids in zip(contexts, continuations, strict=True)]
        per_func = self._score_repairs(padded, texts, continuations)  # [world * width, funcs], gathered

        success, total = self._repair_verdicts(per_func)
        for rank, rows in enumerate(rows_per_rank):
            for slot, row in enumerate(rows):
                group = (rank * local_rows + row) // group_size
                outcome[group] = int(success[rank * width + slot])
                reward[group] = float(total[rank * width + slot])
        if mine:
            self._splice(output, mine, context_ids[: len(mine)], continuations[: len(mine)])
        return RepairBatch(outcome, reward)

    # ------------------------------------------------------------------ context and decode
    def _context_text(self, output: dict, row: int) -> str:
        """The text after the prompt that the repair continues from ("" for a fresh sample)."""
        if self.rgr.variant == "random":
            return ""
        n = int(output["completion_mask"][row].sum())
        response = self._tokenizer.decode(output["completion_ids"][row, :n].tolist(), skip_special_tokens=True)
        return repair_context(response, self._cue() if self.rgr.variant == "cue" else "")

    def _cue(self) -> str:
        """The configured cue, capped at rgr.max_cue_tokens tokens."""
        ids = self._tokenizer.encode(self.rgr.cue_string, add_special_tokens=False)[: self.rgr.max_cue_tokens]
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def _decode_repairs(self, rows: list[int], added: list[list[int]]) -> list[list[int]]:
        """One generate call for all of this rank's repairs (prompt + context ids), through TRL's path."""
        prompt_ids, images, multimodal = self._tokenize_prompts([self._last_prompts[row] for row in rows])
        prompt_ids = [list(ids) + extra for ids, extra in zip(prompt_ids, added, strict=True)]
        for key, value in multimodal.items():  # per-token fields (mm_token_type_ids, ...): text tokens are 0
            if isinstance(value, list) and len(value) == len(rows) and all(isinstance(v, list) for v in value):
                multimodal[key] = [list(v) + [0] * len(extra) for v, extra in zip(value, added, strict=True)]
        with self._repair_sampling():
            completion_ids, _ = self._generate_single_turn(prompt_ids, images, multimodal, num_generations=1)
        return [list(ids) for ids in completion_ids]

    @contextmanager
    def _repair_sampling(self):
        """RGR's own temperature, top-p and token budget for the duration of one decode."""
        settings = {"temperature": self.rgr.temperature, "top_p": self.rgr.top_p}
        saved = {}
        if self.use_vllm:
            engine = self.vllm_generation
            saved = {name: getattr(engine, name) for name in ("temperature", "top_p", "max_completion_length")}
            for name, value in {**settings, "max_completion_length": self.rgr.max_new_tokens}.items():
                setattr(engine, name, value)
        else:
            saved = {"generation_config": self.generation_config, "generation_kwargs": self.generation_kwargs}
            kwargs = {**self.generation_kwargs, **settings, "max_new_tokens": self.rgr.max_new_tokens, "do_sample": True}
            config = copy.deepcopy(self.generation_config)
            config.update(**{key: kwargs[key] for key in ("temperature", "top_p", "max_new_tokens", "do_sample")})
            self.generation_config, self.generation_kwargs = config, kwargs
            engine = self
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(engine, name, value)

    def _score_repairs(self, rows, texts, continuations) -> torch.Tensor:
        """Per-function rewards of the repaired responses, gathered over ranks (same verifier as rollouts)."""
        prompts = [self._last_prompts[row] for row in rows]
        conversational = isinstance(prompts[0], list)
        completions = [[{"role": "assistant", "content": text}] if conversational else text for text in texts]
        inputs = [self._last_inputs[row] for row in rows]
        return GRPOTrainer._calculate_rewards(self, inputs, prompts, completions, continuations).cpu()

    def _repair_verdicts(self, per_func: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(success, total reward) per repair, by the same rule the objective uses for rollouts."""
        total, correct = self._reward_totals(per_func)
        return (correct if self.care_config.positive_by == "accuracy" else total > 0), total

    # ------------------------------------------------------------------ splice
    def _splice(self, output: dict, rows: list[int], context_ids: list[list[int]],
                continuations: list[list[int]]) -> None:
        """Replace `rows` of the local batch by their repairs, widening the completion tensors if needed."""
        eos = self.eos_token_ids
        spliced, trainable = [], []
        for context, ids in zip(context_ids, continuations, strict=True):
            ids = ids or [eos[0]]  # an empty decode still ends the sequence
            prefix = context if self.rgr.train_context == "with_prefix" else []
            spliced.append(prefix + ids)
            trainable.append([0] * len(prefix) + [1] * len(ids))
        width = max(output["completion_ids"].size(1), *(len(ids) for ids in spliced))
        if LOSS_MASK not in output:
            output[LOSS_MASK] = torch.ones_like(output["completion_mask"])
        _widen(output, width, self._tokenizer.pad_token_id)
        device = output["completion_ids"].device
        index = torch.tensor(rows, device=device)
        output["completion_ids"][index] = self._tokenizer.pad_token_id
        output["completion_mask"][index] = 0
        output[LOSS_MASK][index] = 0
        if "tool_mask" in output:  # TRL's tool-result mask: a repair holds no tool output
            output["tool_mask"][index] = 1
        for row, ids, mask in zip(rows, spliced, trainable, strict=True):
            output["completion_ids"][row, : len(ids)] = torch.tensor(ids, device=device)
            output["completion_mask"][row, : len(ids)] = 1
            output[LOSS_MASK][row, : len(ids)] = torch.tensor(mask, device=device)
        self._rescore_logps(output, rows)

    @torch.no_grad()
    def _rescore_logps(self, output: dict, rows: list[int]) -> None:
        """Old / reference / sampling log-probs of spliced rows on their new tokens; IS ratio 1 for them."""
        if "importance_sampling_ratio" in output:
            output["importance_sampling_ratio"][rows] = 1.0
        policy_keys = [key for key in ("old_per_token_logps", "sampling_per_token_logps") if key in output]
        if not policy_keys and "ref_per_token_logps" not in output:
            return
        subset = _select_rows(output, rows)
        args = (torch.cat([subset["prompt_ids"], subset["completion_ids"]], dim=1),
                torch.cat([subset["prompt_mask"], subset["completion_mask"]], dim=1), subset["completion_ids"].size(1))
        if policy_keys:
            policy, _, _ = self._get_per_token_logps_and_entropies(self.model, *args, **forward_kwargs(subset))
            for key in policy_keys:
                output[key][rows] = policy.to(output[key].dtype)
        if "ref_per_token_logps" in output:
            output["ref_per_token_logps"][rows] = self._reference_logps(args, subset).to(output["ref_per_token_logps"].dtype)

    def _reference_logps(self, args, subset) -> torch.Tensor:
        if self.ref_model is not None:
            logps, _, _ = self._get_per_token_logps_and_entropies(self.ref_model, *args, **forward_kwargs(subset))
            return logps
        from trl.trainer.utils import use_adapter

        model = self.accelerator.unwrap_model(self.model)
        with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
            logps, _, _ = self._get_per_token_logps_and_entropies(self.model, *args, **forward_kwargs(subset))
        return logps


def _widen(output: dict, width: int, pad_token_id: int) -> None:
    """Right-pad every completion-width tensor (and per-token multimodal ids) to `width`."""
    for key, value in COMPLETION_WIDTH_KEYS.items():
        tensor = output.get(key)
        if tensor is None or tensor.size(1) >= width:
            continue
        fill = pad_token_id if value is None else value
        output[key] = torch.nn.functional.pad(tensor, (0, width - tensor.size(1)), value=fill)
    ratio = output.get("importance_sampling_ratio")
    if ratio is not None and ratio.size(1) > 1 and ratio.size(1) < width:  # token-level ratio
        output["importance_sampling_ratio"] = torch.nn.functional.pad(ratio, (0, width - ratio.size(1)), value=1.0)
    total = output["prompt_ids"].size(1) + width
    for key in ("token_type_ids", "mm_token_type_ids"):
        tensor = output.get(key)
        if tensor is not None and tensor.size(1) < total:
            output[key] = torch.nn.functional.pad(tensor, (0, total - tensor.size(1)), value=0)


def _select_rows(batch: dict, rows: list[int]) -> dict:
    """The sub-batch of `rows`, images included (TRL's per-sample pixel split handles every layout)."""
    size = batch["completion_ids"].size(0)
    split = split_pixel_values_by_grid(dict(batch))
    subset = {}
    for key, value in split.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.size(0) == size:
            subset[key] = value[rows]
        elif isinstance(value, list) and len(value) == size:
            subset[key] = [value[row] for row in rows]
        else:
            subset[key] = value
    return unsplit_pixel_values_by_grid(subset)
