"""Reflection-Guided Resampling (docs/method.md §7): one repair per group, spliced into the batch.

`ReflectionResampler.repair` runs between subgroup selection and scoring (step 5 of
care.trainer.care_step). Each group with an anchor and a hard negative gets one repair of its
cosine-nearest negative:
1. the repair context (`care.repair.repair_context`: cue before `</think>`, cut after `<answer>`;
   `no_cue`: the same cut without the cue; `random`: nothing, a fresh sample from the prompt),
2. one decode through TRL's own generation path (HF generate or vLLM) with RGR's sampling
   settings; every rank submits the same number of rows (padded with discarded copies), so
   collective engines see the same calls everywhere,
3. a re-score with the same reward functions (TRL's `_calculate_rewards`, gathered), judged by
   the rule the objective uses for rollouts,
4. a splice in place: the repaired completion replaces the negative's row, so batch size and
   group layout never change. `prompt_only` trains the continuation under the original prompt;
   `with_prefix` keeps the repair context as completion tokens outside CARE's loss mask
   (`care.trainer.trl_surface.LOSS_MASK`). Old, reference
   and sampling log-probs of spliced rows are recomputed on exactly the tokens trained, and any
   importance-sampling ratio is set to 1 for them (no correction, as the reference code).
The resampler is handed TRL's trainer and uses only its generation, reward and forward helpers
(listed in care.trainer.trl_surface); what it needs of CARE (the verdict rule) it is given.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from care.config import RGRConfig
from care.repair import repair_context
from care.trainer.batch_rows import pad_widths, take_rows
from care.trainer.trl_surface import LOSS_MASK, forward_inputs, forward_kwargs


@dataclass
class RepairBatch:
    """What RGR did this step, for the objective: per group [N]; -1 / 0.0 where nothing was repaired."""

    outcome: torch.Tensor  # long: -1 none, 0 failed, 1 succeeded
    reward: torch.Tensor  # float: the repaired sample's total reward


class ReflectionResampler:
    """RGR on one generation batch, through TRL's helpers on `trainer`.

    `verdict(per_func)` turns gathered per-function rewards [R, funcs] into (success [R] bool,
    total reward [R]) by the objective's own rule, so a repair is judged like a rollout.
    """

    def __init__(self, trainer, config: RGRConfig,
                 verdict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]):
        self.trainer, self.config, self.verdict = trainer, config, verdict

    def repair(self, batch: dict, prompts: list, inputs: list[dict], selection, group_size: int) -> RepairBatch:
        """Repair each group's `selection.repair_candidate` in `batch` (this process's rows, in place).

        `prompts`: the prompts as TRL prepared them for generation; `inputs`: the dataset rows
        (their reward columns score the repairs). Both are this process's, row for row.
        """
        accelerator = self.trainer.accelerator
        n_groups = selection.anchor_index.numel()
        local_rows = batch["completion_ids"].size(0)
        wanted = [group * group_size + column for group, column in enumerate(selection.repair_candidate.tolist())
                  if column >= 0]
        rows_per_rank = [[row - rank * local_rows for row in wanted if rank * local_rows <= row < (rank + 1) * local_rows]
                         for rank in range(accelerator.num_processes)]
        mine = rows_per_rank[accelerator.process_index]
        width = max(len(rows) for rows in rows_per_rank)
        outcome = torch.full((n_groups,), -1, dtype=torch.long)
        reward = torch.zeros(n_groups)
        if width == 0:  # no rank has a candidate: no generate call anywhere
            return RepairBatch(outcome, reward)

        padded = mine + [mine[0] if mine else 0] * (width - len(mine))
        tokenizer = self.trainer._tokenizer
        contexts = [self._context_text(batch, row) for row in padded]
        context_ids = [tokenizer.encode(context, add_special_tokens=False) for context in contexts]
        continuations = self._decode_repairs([prompts[row] for row in padded], context_ids)
        texts = [context + tokenizer.decode(ids, skip_special_tokens=True)
                 for context, ids in zip(contexts, continuations, strict=True)]
        per_func = self._score_repairs([prompts[row] for row in padded], [inputs[row] for row in padded],
                                       texts, continuations)  # [world * width, funcs], gathered

        success, total = self.verdict(per_func)
        for rank, rows in enumerate(rows_per_rank):
            for slot, row in enumerate(rows):
                group = (rank * local_rows + row) // group_size
                outcome[group] = int(success[rank * width + slot])
                reward[group] = float(total[rank * width + slot])
        if mine:
            self._splice(batch, mine, context_ids[: len(mine)], continuations[: len(mine)])
        return RepairBatch(outcome, reward)

    # ------------------------------------------------------------------ context and decode
    def _context_text(self, batch: dict, row: int) -> str:
        """The text after the prompt that the repair continues from ("" for a fresh sample)."""
        if self.config.variant == "random":
            return ""
        n = int(batch["completion_mask"][row].sum())
        response = self.trainer._tokenizer.decode(batch["completion_ids"][row, :n].tolist(), skip_special_tokens=True)
        return repair_context(response, self._cue() if self.config.variant == "cue" else "")

    def _cue(self) -> str:
        """The configured cue, capped at rgr.max_cue_tokens tokens."""
        tokenizer = self.trainer._tokenizer
        ids = tokenizer.encode(self.config.cue_string, add_special_tokens=False)[: self.config.max_cue_tokens]
        return tokenizer.decode(ids, skip_special_tokens=True)

    def _decode_repairs(self, prompts: list, added: list[list[int]]) -> list[list[int]]:
        """One generate call for all of this rank's repairs (prompt + context ids), through TRL's path."""
        trainer = self.trainer
        prompt_ids, images, multimodal = trainer._tokenize_prompts(prompts)
        prompt_ids = [list(ids) + extra for ids, extra in zip(prompt_ids, added, strict=True)]
        for key, value in multimodal.items():  # per-token fields (mm_token_type_ids, ...): text tokens are 0
            if isinstance(value, list) and len(value) == len(prompts) and all(isinstance(v, list) for v in value):
                multimodal[key] = [list(v) + [0] * len(extra) for v, extra in zip(value, added, strict=True)]
        with self._repair_sampling():
            completion_ids, _ = trainer._generate_single_turn(prompt_ids, images, multimodal, num_generations=1)
        return [list(ids) for ids in completion_ids]

    @contextmanager
    def _repair_sampling(self):
        """RGR's own temperature, top-p and token budget for the duration of one decode."""
        trainer, config = self.trainer, self.config
        settings = {"temperature": config.temperature, "top_p": config.top_p}
        if trainer.use_vllm:
            engine = trainer.vllm_generation
            saved = {name: getattr(engine, name) for name in ("temperature", "top_p", "max_completion_length")}
            for name, value in {**settings, "max_completion_length": config.max_new_tokens}.items():
                setattr(engine, name, value)
        else:
            engine = trainer
            saved = {"generation_config": trainer.generation_config, "generation_kwargs": trainer.generation_kwargs}
            kwargs = {**trainer.generation_kwargs, **settings, "max_new_tokens": config.max_new_tokens, "do_sample": True}
            generation_config = copy.deepcopy(trainer.generation_config)
            generation_config.update(**{key: kwargs[key] for key in ("temperature", "top_p", "max_new_tokens", "do_sample")})
            trainer.generation_config, trainer.generation_kwargs = generation_config, kwargs
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(engine, name, value)

    def _score_repairs(self, prompts: list, inputs: list[dict], texts: list[str], continuations) -> torch.Tensor:
        """Per-function rewards of the repaired responses, gathered over ranks (same verifier as rollouts)."""
        conversational = isinstance(prompts[0], list)
        completions = [[{"role": "assistant", "content": text}] if conversational else text for text in texts]
        return self.trainer._calculate_rewards(inputs, prompts, completions, continuations).cpu()

    # ------------------------------------------------------------------ splice
    def _splice(self, batch: dict, rows: list[int], context_ids: list[list[int]],
                continuations: list[list[int]]) -> None:
        """Replace `rows` of the local batch by their repairs, widening the completion tensors if needed."""
        pad_token_id = self.trainer._tokenizer.pad_token_id
        eos = self.trainer.eos_token_ids
        spliced, trainable = [], []
        for context, ids in zip(context_ids, continuations, strict=True):
            ids = ids or [eos[0]]  # an empty decode still ends the sequence
            prefix = context if self.config.train_context == "with_prefix" else []
            spliced.append(prefix + ids)
            trainable.append([0] * len(prefix) + [1] * len(ids))
        width = max(batch["completion_ids"].size(1), *(len(ids) for ids in spliced))
        if LOSS_MASK not in batch:
            batch[LOSS_MASK] = torch.ones_like(batch["completion_mask"])
        pad_widths(batch, batch["prompt_ids"].size(1), width, pad_token_id)
        device = batch["completion_ids"].device
        index = torch.tensor(rows, device=device)
        batch["completion_ids"][index] = pad_token_id
        batch["completion_mask"][index] = 0
        batch[LOSS_MASK][index] = 0
        if "tool_mask" in batch:  # TRL's tool-result mask: a repair holds no tool output
            batch["tool_mask"][index] = 1
        for row, ids, mask in zip(rows, spliced, trainable, strict=True):
            batch["completion_ids"][row, : len(ids)] = torch.tensor(ids, device=device)
            batch["completion_mask"][row, : len(ids)] = 1
            batch[LOSS_MASK][row, : len(ids)] = torch.tensor(mask, device=device)
        self._rescore_logps(batch, rows)

    @torch.no_grad()
    def _rescore_logps(self, batch: dict, rows: list[int]) -> None:
        """Old / reference / sampling log-probs of spliced rows on their new tokens; IS ratio 1 for them."""
        if "importance_sampling_ratio" in batch:
            batch["importance_sampling_ratio"][rows] = 1.0
        policy_keys = [key for key in ("old_per_token_logps", "sampling_per_token_logps") if key in batch]
        if not policy_keys and "ref_per_token_logps" not in batch:
            return
        trainer = self.trainer
        subset = take_rows([batch], [(0, row) for row in rows], self.trainer._tokenizer.pad_token_id)
        args = forward_inputs(subset)
        if policy_keys:
            policy, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, *args, **forward_kwargs(subset))
            for key in policy_keys:
                batch[key][rows] = policy.to(batch[key].dtype)
        if "ref_per_token_logps" in batch:
            batch["ref_per_token_logps"][rows] = self._reference_logps(args, subset).to(batch["ref_per_token_logps"].dtype)

    def _reference_logps(self, args, subset) -> torch.Tensor:
        trainer = self.trainer
        if trainer.ref_model is not None:
            logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.ref_model, *args, **forward_kwargs(subset))
            return logps
        from trl.trainer.utils import use_adapter

        model = trainer.accelerator.unwrap_model(trainer.model)
        with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
            logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, *args, **forward_kwargs(subset))
        return logps
