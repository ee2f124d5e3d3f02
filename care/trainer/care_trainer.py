"""One trainer for every algorithm: TRL's GRPOTrainer with CARE advantages swapped in.

TRL generates, scores and (for GRPO, DAPO, GSPO) computes group z-score advantages; the loss
itself is TRL's, configured per algorithm. For `care`, CareGRPOTrainer replaces the advantages
and the set of trained rollouts; its docstring walks through one step. Every algorithm logs the
same signal metrics, computed on its own advantages. The TRL internals this relies on are
listed, and checked against the installed TRL, in `care.trainer.trl_surface`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from trl import GRPOTrainer

from care.checkpoints import ResumableTrainer
from care.config import RGRConfig
from care.objective import (
    CareConfig,
    grpo_advantages,
    score_subgroups,
    select_subgroups,
    signal_metrics,
    subgroup_loss_mask,
    think_len_for_ranking,
    token_advantages,
)
from care.trainer.repair import ReflectionResampler, forward_kwargs
from care.trainer.spans import SpanFinder, Spans
from care.trainer.trl_surface import LOSS_MASK, loss_inputs, trained_tokens

# signal_metrics key -> logged name (TRL logs keys as given; our callback prefixes bare ones with train/)
LOGGED_NAMES = {
    "accuracy": "accuracy",
    "groups_all_fail": "groups_all_fail",
    "groups_all_correct": "groups_all_correct",
    "zero_signal_groups": "signal/zero_signal_groups",
    "fss_neg": "signal/fss_neg",
    "fss_fail_derived": "signal/fss_fail_derived",
    "nonzero_grad_prompts": "signal/nonzero_grad_prompts",
    "k_prime_mean": "care/k_prime_mean",
    "eq_factor_mean": "care/eq_factor_mean",
    "rescue_rate": "care/rescue_rate",
    "anchor_think_len_mean": "care/anchor_think_len",
    "correct_think_len_mean": "correct_think_len",
    "adv_mass_pos": "signal/adv_mass_pos",
    "adv_mass_neg": "signal/adv_mass_neg",
    "rgr_attempts": "rgr/attempts",
    "rgr_successes": "rgr/successes",
    "rgr_success_rate": "rgr/repair_rate",
}


@dataclass
class Features:
    """What CARE reads from one old-policy forward, rows in that forward's order."""

    spans: Spans
    embeddings: torch.Tensor  # [B, D] unit-norm, think-span mean-pooled last hidden states
    logprob_sum: torch.Tensor  # [B] summed completion log-probs
    per_token_logps: torch.Tensor  # [B, T] detached


class CareGRPOTrainer(ResumableTrainer, ReflectionResampler, GRPOTrainer):
    """GRPOTrainer whose advantages come from `care.objective` when `algorithm == "care"`.

    One CARE step, in order (methods of this class unless named otherwise):
    1. rollouts: `_generate_and_score_completions` seeds sampling by (seed, step, rank) and lets
       TRL generate G responses per prompt (RGR's `_generate` keeps the prepared prompts);
    2. verify: TRL scores them with the verifier rewards; `_calculate_rewards` keeps the gathered
       per-function rewards, `_gathered_rewards` turns them into (total reward, correct);
    3. hidden states: `_get_per_token_logps_and_entropies`, when armed, pools last-layer hidden
       states over each think span with a forward hook, beside TRL's log-probs (`Features`);
       which forward carries it is below;
    4. select: `_care_step` gathers the features over processes (groups may span ranks) and
       calls `care.objective.select_subgroups` identically on every rank (anchor, hard
       negatives, repair candidate per group);
    5. repair: with RGR on, `_repair` (`care.trainer.repair.ReflectionResampler`) decodes one
       repair per group and splices it into the batch in place;
    6. advantages: `care.objective.score_subgroups`, then `_hand_back` writes per-token
       advantages (region credit) and narrows CARE's loss mask (`trl_surface.LOSS_MASK`) to the
       subgroup, so rollouts outside it leave the loss and the token normaliser;
    7. loss: `_compute_loss` hands TRL's `_compute_loss` the batch with that mask folded in
       (`trl_surface.loss_inputs`).

    Where the hidden states come from (never an extra pass when one can be avoided):
    - deferred (`defer_objective`: RGR off, one PPO epoch, one micro-batch per generation,
      token-level mean loss, no vLLM): from the loss forward itself; steps 4-6 run between that
      forward and the loss (`_deferred_objective`): rollouts outside the subgroup get zero
      advantage, a KL reference equal to their own detached log-probs (so exactly zero loss and
      gradient) and leave the token normaliser; the gradient is the eager path's (tested).
    - TRL's own old-log-prob forward, when it runs one (vLLM, several PPO epochs).
    - otherwise one extra no-grad forward (`_rollout_features`: RGR must know the subgroup
      before the batch is final).
    """

    def __init__(self, *args, algorithm: str, care_config: CareConfig, seed: int = 0,
                 accuracy_reward_index: int = 0, rgr: RGRConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.algorithm = algorithm
        self.care_config = care_config
        self.rgr = rgr if rgr is not None else RGRConfig(enabled=False)
        self.care_seed = seed
        self.accuracy_reward_index = accuracy_reward_index
        self.span_finder = SpanFinder(self._tokenizer)
        self._rewards_per_func: torch.Tensor | None = None
        self._on_forward = None  # armed for the next policy forward: called with its Features
        self._features: Features | None = None
        self.defer_override: bool | None = None  # tests force the eager (False) or deferred (True) path
        self.last_objective = None  # the most recent batch's objective result (gathered), for tests and RGR

    @property
    def defer_objective(self) -> bool:
        if self.defer_override is not None:
            return self.defer_override
        return (self.algorithm == "care" and not self.rgr.enabled and not self.use_vllm and not self.tools
                and self.num_iterations == 1 and self.args.steps_per_generation == 1 and self.loss_type == "dapo"
                and self.top_entropy_quantile == 1.0 and self.off_policy_mask_threshold is None)

    def _trl_computes_old_logps(self) -> bool:
        generate_every = self.args.steps_per_generation * self.num_iterations
        return (self.args.gradient_accumulation_steps % generate_every != 0
                or (self.use_vllm and self.vllm_importance_sampling_correction))

    # TRL gathers rewards across processes inside this call; keep them for the objective.
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        self._last_inputs = inputs  # RGR re-scores repairs with the same reward columns
        self._features = None
        if self.model.training:
            # Sampling depends on (seed, step, rank) only, not on how the process got here: a run
            # resumed from a checkpoint draws exactly the rollouts an uninterrupted run draws,
            # whatever else consumed random numbers before this step in either process.
            torch.manual_seed((self.care_seed * 1_000_003 + self.state.global_step) * 1_009
                              + self.accelerator.process_index + 1)
        if self.model.training and self.algorithm == "care" and not self.defer_objective \
                and self._trl_computes_old_logps():
            self._on_forward = self._keep_features  # TRL's old-log-prob forward is the first one
        output = super()._generate_and_score_completions(inputs)
        self._on_forward = None
        if not self.model.training:
            return output
        return self.apply_objective(output)

    def _keep_features(self, features: Features) -> None:
        self._features = features

    def _compute_loss(self, model, inputs):
        """TRL's loss on CARE's tokens: our loss mask enters TRL's only through `loss_inputs`."""
        batch = loss_inputs(inputs)
        if "care_row" in batch:  # deferred objective: run it inside this forward
            self._on_forward = lambda features: self._deferred_objective(features, batch)
        try:
            return super()._compute_loss(model, batch)
        finally:
            self._on_forward = None

    # ------------------------------------------------------------------ objective
    def apply_objective(self, output: dict) -> dict:
        if self.algorithm != "care":
            return self._baseline_signal(output)
        if self.defer_objective:  # remember each row's place: TRL shuffles rows before the loss
            output["care_row"] = torch.arange(output["completion_ids"].size(0), device=output["completion_ids"].device)
            return output
        features = self._features or self._rollout_features(output)
        self._features = None
        self._care_step(output, features)
        return output

    def _deferred_objective(self, features: Features, inputs: dict) -> None:
        """Objective between the loss forward and the loss: write advantages, KL reference and normaliser."""
        order = inputs["care_row"]
        in_subgroup = self._care_step(inputs, features, order=order)
        if "ref_per_token_logps" in inputs:  # outside the subgroup: KL against itself, zero loss and gradient
            outside = ~in_subgroup
            ref = inputs["ref_per_token_logps"].clone()
            ref[outside] = features.per_token_logps[outside].to(ref.dtype)
            inputs["ref_per_token_logps"] = ref

    def _care_step(self, output: dict, features: Features, order: torch.Tensor | None = None) -> torch.Tensor:
        """Subgroups, RGR, scoring, hand-back and signal logging for one generation batch.

        `order[i]` is the generation-order row of the batch's row i (deferred path); None: same order.
        Returns which local rows (in the batch's order) are in their group's subgroup.
        """
        group = self.num_generations
        spans = features.spans
        rewards, correct = self._gathered_rewards()
        local = [think_len_for_ranking(spans.think_len, spans.response_len), spans.answer_len,
                 features.embeddings, features.logprob_sum]
        if order is not None:
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            local = [t[inverse.to(t.device)] for t in local]
        think_all, answer_all, emb_all, logp_all = (t.view(-1, group, *t.shape[1:]) for t in self._gather(*local))
        generator = torch.Generator().manual_seed(self.care_seed * 1_000_003 + self.state.global_step)
        selection = select_subgroups(correct.view(-1, group), rewards.view(-1, group), think_all, answer_all,
                                     emb_all.float(), logp_all.float(), self.care_config, generator=generator)
        outcome = repair_reward = None
        if self.rgr.enabled:
            repairs = self._repair(output, selection, group)
            outcome, repair_reward = repairs.outcome, repairs.reward
            spans = self.span_finder.find(output["completion_ids"], output["completion_mask"])
        result = score_subgroups(selection, rewards.view(-1, group), self.care_config, outcome, repair_reward)
        in_subgroup = self._hand_back(output, result, spans, order)
        self.last_objective = result
        self._log_signal(signal_metrics(result, correct.view(-1, group), think_len=think_all,
                                        k_hist=self.care_config.k))
        return in_subgroup

    def _baseline_signal(self, output: dict) -> dict:
        """GRPO / DAPO / GSPO keep TRL's advantages; log the same signal metrics on them."""
        spans = self.span_finder.find(output["completion_ids"], output["completion_mask"])
        rewards, correct = self._gathered_rewards()
        (think_all,) = self._gather(think_len_for_ranking(spans.think_len, spans.response_len))
        group = self.num_generations
        result = grpo_advantages(rewards.view(-1, group), correct.view(-1, group))
        self.last_objective = result
        self._log_signal(signal_metrics(result, correct.view(-1, group), think_len=think_all.view(-1, group),
                                        k_hist=self.care_config.k))
        return output

    def _gathered_rewards(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted total reward, accuracy-correct) for every rollout of every process."""
        return self._reward_totals(self._rewards_per_func)

    def _reward_totals(self, per_func: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted total reward, accuracy-correct) per row of TRL's per-function rewards (CPU)."""
        weights = self.reward_weights.to(per_func.device)
        rewards = torch.nan_to_num((per_func * weights).nansum(dim=1), nan=0.0).float().cpu()
        accuracy = torch.nan_to_num(per_func[:, self.accuracy_reward_index], nan=0.0).cpu()
        return rewards, accuracy > 0.5

    def _gather(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        device = self.accelerator.device
        return [self.accelerator.gather(t.to(device).contiguous()).cpu() for t in tensors]

    def _process_slice(self, batch: int) -> slice:
        start = self.accelerator.process_index * batch
        return slice(start, start + batch)

    def _hand_back(self, output: dict, result, spans: Spans, order: torch.Tensor | None = None) -> torch.Tensor:
        """Local per-token advantages, and CARE's loss mask narrowed to the subgroup.

        Rollouts outside the subgroup leave the loss and its token normaliser (spec section 3), not
        merely carry A = 0. Returns the local rows' subgroup membership, in the batch's order.
        """
        completion_mask = output["completion_mask"]
        local = self._process_slice(completion_mask.size(0))
        rows = slice(None) if order is None else order.cpu()
        advantages, in_subgroup, positive = (
            t.reshape(-1)[local][rows].to(completion_mask.device)
            for t in (result.advantages, result.in_subgroup, result.verifier_positive))
        trained = trained_tokens(output)  # RGR's with_prefix rows: the repair context is not trained
        output["advantages"] = token_advantages(advantages, spans.think, spans.answer, trained, positive,
                                                mode=self.care_config.token_credit, tau_pos=self.care_config.tau_pos)
        output[LOSS_MASK] = subgroup_loss_mask(trained, in_subgroup).to(completion_mask.dtype)
        output["num_items_in_batch"] = self.accelerator.gather(trained_tokens(output).sum()).sum()
        return in_subgroup

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def _rollout_features(self, output: dict) -> Features:
        """One no-grad old-policy forward, for when no forward TRL runs anyway can carry the features."""
        self._on_forward = self._keep_features
        try:
            self._get_per_token_logps_and_entropies(
                self.model, torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1),
                torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1), output["completion_ids"].size(1),
                batch_size=self.args.per_device_train_batch_size, **forward_kwargs(output))
        finally:
            self._on_forward = None
        return self._features

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        """TRL's forward; when armed, also pools last hidden states over each rollout's think span."""
        on_forward, self._on_forward = self._on_forward, None  # one forward per arming
        if on_forward is None:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              *args, **kwargs)
        completion_mask = attention_mask[:, -logits_to_keep:]
        spans = self.span_finder.find(input_ids[:, -logits_to_keep:], completion_mask)
        # pool over the think span; a rollout without one pools over its whole response (spec section 2)
        has_think = spans.think.any(dim=1, keepdim=True)
        weights = torch.where(has_think, spans.think, completion_mask.bool()).float()
        pooled: list[torch.Tensor] = []
        done_rows = [0]  # TRL forwards in chunks; each call of the hook is the next chunk of rows

        def pool_hook(module, args, hidden):
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            start, done_rows[0] = done_rows[0], done_rows[0] + hidden.size(0)
            w = weights[start:done_rows[0]].to(hidden.device)
            summed = (hidden[:, -logits_to_keep:].detach().float() * w.unsqueeze(-1)).sum(dim=1)
            pooled.append(summed / w.sum(dim=1, keepdim=True).clamp(min=1.0))

        norm = self.accelerator.unwrap_model(self.model).get_decoder().norm
        handle = norm.register_forward_hook(pool_hook)
        try:
            result = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                                *args, **kwargs)
        finally:
            handle.remove()
        logps = result[0].detach()
        on_forward(Features(spans, torch.nn.functional.normalize(torch.cat(pooled), dim=-1),
                            (logps * completion_mask).sum(dim=1), logps))
        return result

    def _log_signal(self, metrics: dict[str, float]) -> None:
        mode = "train"
        for key, value in metrics.items():
            name = LOGGED_NAMES.get(key)
            if name is None and key.startswith("k_prime_hist/"):
                name = f"care/{key}"
            if name is not None:
                self._metrics[mode][name].append(float(value))
