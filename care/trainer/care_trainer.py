"""One trainer for every algorithm: TRL's GRPOTrainer with CARE advantages swapped in.

TRL generates, scores and (for GRPO, DAPO, GSPO) computes group z-score advantages; the
loss itself is TRL's, configured per algorithm. For `care` this subclass then
1. finds each rollout's <think>/<answer> spans from its token ids,
2. runs one no-grad forward of the old policy that yields both the summed log-prob and
   the last-layer hidden states mean-pooled over the think span (a forward hook on the
   decoder's final norm, so TRL's own multimodal batching is reused),
3. gathers those features across processes (groups are consecutive blocks of G and may
   span ranks) and calls `care.objective` identically on every rank,
4. with RGR on, repairs each group's nearest hard negative and splices the repair into the
   batch in place (`care.trainer.repair`) before the subgroup is scored,
5. hands back the local slice as per-token advantages (region credit) and masks every
   rollout outside the subgroup out of the loss and the token normaliser (`tool_mask`).
Every algorithm logs the same signal metrics, computed on its own advantages.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer

from care.config import RGRConfig
from care.objective import (
    CareConfig,
    grpo_advantages,
    score_subgroups,
    select_subgroups,
    signal_metrics,
    think_len_for_ranking,
    token_advantages,
)
from care.trainer.repair import ReflectionResampler, forward_kwargs
from care.trainer.spans import SpanFinder, Spans

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


class CareGRPOTrainer(ReflectionResampler, GRPOTrainer):
    """GRPOTrainer whose advantages come from `care.objective` when `algorithm == "care"`."""

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
        self.last_objective = None  # the most recent batch's objective result (gathered), for tests and RGR

    # TRL gathers rewards across processes inside this call; keep them for the objective.
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        self._last_inputs = inputs  # RGR re-scores repairs with the same reward columns
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output
        return self.apply_objective(output)

    # ------------------------------------------------------------------ objective
    def apply_objective(self, output: dict) -> dict:
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        spans = self.span_finder.find(completion_ids, completion_mask)
        rewards, correct = self._gathered_rewards()
        group = self.num_generations
        think_rank = think_len_for_ranking(spans.think_len, spans.response_len)

        if self.algorithm == "care":
            embeddings, logprob_sum = self._rollout_features(output, spans)
            gathered = self._gather(think_rank, spans.answer_len, embeddings, logprob_sum)
            think_all, answer_all, emb_all, logp_all = (t.view(-1, group, *t.shape[1:]) for t in gathered)
            generator = torch.Generator().manual_seed(self.care_seed * 1_000_003 + self.state.global_step)
            selection = select_subgroups(correct.view(-1, group), rewards.view(-1, group), think_all, answer_all,
                                         emb_all.float(), logp_all.float(), self.care_config, generator=generator)
            outcome = repair_reward = None
            if self.rgr.enabled:
                repairs = self._repair(output, selection, group)
                outcome, repair_reward = repairs.outcome, repairs.reward
                spans = self.span_finder.find(output["completion_ids"], output["completion_mask"])
            result = score_subgroups(selection, rewards.view(-1, group), self.care_config, outcome, repair_reward)
            self._hand_back(output, result, spans)
        else:
            (think_all,) = self._gather(think_rank)
            think_all = think_all.view(-1, group)
            result = grpo_advantages(rewards.view(-1, group), correct.view(-1, group))
        self.last_objective = result
        metrics = signal_metrics(result, correct.view(-1, group), think_len=think_all.view(-1, group),
                                 k_hist=self.care_config.k)
        self._log_signal(metrics)
        return output

    def _gathered_rewards(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted total reward, accuracy-correct) for every rollout of every process."""
        per_func = self._rewards_per_func
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

    def _hand_back(self, output: dict, result, spans: Spans) -> None:
        """Local per-token advantages; rollouts outside the subgroup leave the loss and its normaliser."""
        completion_mask = output["completion_mask"]
        local = self._process_slice(completion_mask.size(0))
        advantages = result.advantages.reshape(-1)[local].to(completion_mask.device)
        in_subgroup = result.in_subgroup.reshape(-1)[local].to(completion_mask.device)
        positive = result.verifier_positive.reshape(-1)[local].to(completion_mask.device)
        tool_mask = output.get("tool_mask")  # RGR's with_prefix rows: the repair context is not trained
        trained = completion_mask if tool_mask is None else completion_mask * tool_mask
        output["advantages"] = token_advantages(advantages, spans.think, spans.answer, trained, positive,
                                                mode=self.care_config.token_credit, tau_pos=self.care_config.tau_pos)
        keep = in_subgroup.long().unsqueeze(1).expand_as(completion_mask)
        output["tool_mask"] = keep if tool_mask is None else tool_mask * keep
        output["num_items_in_batch"] = self.accelerator.gather((completion_mask * output["tool_mask"]).sum()).sum()

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def _rollout_features(self, output: dict, spans: Spans) -> tuple[torch.Tensor, torch.Tensor]:
        """Old-policy summed log-prob and think-span mean-pooled last hidden state, from one forward."""
        prompt_ids, completion_ids = output["prompt_ids"], output["completion_ids"]
        completion_mask = output["completion_mask"]
        width = completion_ids.size(1)
        # pool over the think span; a rollout without one pools over its whole response (spec section 2)
        has_think = spans.think.any(dim=1, keepdim=True)
        weights = torch.where(has_think, spans.think, completion_mask.bool()).float()
        pooled: list[torch.Tensor] = []
        done_rows = [0]  # TRL forwards in chunks; each call of the hook is the next chunk of rows

        def pool_hook(module, args, hidden):
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            start, done_rows[0] = done_rows[0], done_rows[0] + hidden.size(0)
            w = weights[start:done_rows[0]].to(hidden.device)
            summed = (hidden[:, -width:].float() * w.unsqueeze(-1)).sum(dim=1)
            pooled.append(summed / w.sum(dim=1, keepdim=True).clamp(min=1.0))

        norm = self.accelerator.unwrap_model(self.model).get_decoder().norm
        handle = norm.register_forward_hook(pool_hook)
        try:
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model, torch.cat([prompt_ids, completion_ids], dim=1),
                torch.cat([output["prompt_mask"], completion_mask], dim=1), width,
                batch_size=self.args.per_device_train_batch_size, **forward_kwargs(output),
            )
        finally:
            handle.remove()
        embeddings = torch.nn.functional.normalize(torch.cat(pooled), dim=-1)
        return embeddings, (logps * completion_mask).sum(dim=1)

    def _log_signal(self, metrics: dict[str, float]) -> None:
        mode = "train"
        for key, value in metrics.items():
            name = LOGGED_NAMES.get(key)
            if name is None and key.startswith("k_prime_hist/"):
                name = f"care/{key}"
            if name is not None:
                self._metrics[mode][name].append(float(value))
