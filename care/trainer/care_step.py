"""One CARE step on one generation batch, top to bottom: `CareStep.run`.

CareGRPOTrainer's `_generate_and_score_completions` hands each training batch of dataset rows
(G copies of each prompt) to `run`, and TRL shuffles, splits and trains on what it returns:

1. rollouts: TRL generates G responses per prompt, sampling seeded by (seed, step, rank);
2. verification: TRL's reward functions score them; CARE reads (total reward, correct);
3. features: think-span hidden states and summed log-probs, read from TRL's old-log-prob
   forward where it runs one (several updates per rollout batch, vLLM), else from one no-grad
   forward of ours (care.trainer.features);
4. subgroups: `care.objective.select_subgroups` on the batch gathered over processes, the same
   on every rank (anchor, hard negatives, RGR's repair candidate per group);
5. RGR: one repair per group, spliced into the batch in place (care.trainer.repair);
6. advantages: `care.objective.score_subgroups`;
7. token credit: this process's per-token advantages (region credit), and CARE's loss mask
   narrowed to the subgroup, so rollouts outside it leave the loss and its token normaliser;
8. loss inputs: that mask folded into the `tool_mask` TRL's loss reads (`trl_surface.loss_inputs`).

With `algorithm.dynamic_sampling` (DAPO's; any algorithm), step 2 goes on sampling rounds of
fresh prompts until every group of the batch has rewards that differ, or the rounds run out
(care.trainer.dynamic_sampling). GRPO, DAPO and GSPO stop after step 2: TRL's advantages stand,
and the same signal metrics are logged on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from care.config import AlgorithmConfig, RGRConfig
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
from care.trainer.dynamic_sampling import DynamicSampler, groups_with_signal
from care.trainer.features import FeatureReader, Features
from care.trainer.kl_clamp import clamp_reference_kl
from care.trainer.repair import ReflectionResampler
from care.trainer.spans import SpanFinder
from care.trainer.trl_surface import LOSS_MASK, forward_inputs, forward_kwargs, loss_inputs, trained_tokens

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
class Rollouts:
    """One round of TRL's generate-and-score, and what CARE records during it (CareGRPOTrainer.sample)."""

    inputs: list[dict]  # this process's dataset rows; their reward columns also score RGR's repairs
    read_features: bool  # read `features` from TRL's old-log-prob forward inside the call
    batch: dict | None = None  # TRL's output: ids, masks, its advantages, old / reference log-probs, images
    prompts: list | None = None  # the prompts as TRL prepared them for generation (multimodal messages)
    rewards_per_func: torch.Tensor | None = None  # [all processes' rows, reward funcs], gathered by TRL
    features: Features | None = None


def reward_verdicts(per_func: torch.Tensor, weights: torch.Tensor,
                    accuracy_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted total reward, accuracy-correct) per row of TRL's per-function rewards (CPU)."""
    rewards = torch.nan_to_num((per_func * weights.to(per_func.device)).nansum(dim=1), nan=0.0).float().cpu()
    accuracy = torch.nan_to_num(per_func[:, accuracy_index], nan=0.0).cpu()
    return rewards, accuracy > 0.5


class CareStep:
    """The step for every algorithm; `run` is the whole of it. `trainer` is the CareGRPOTrainer."""

    def __init__(self, trainer, algorithm: AlgorithmConfig, care_config: CareConfig, rgr: RGRConfig, seed: int,
                 accuracy_reward_index: int):
        self.trainer = trainer
        self.algorithm = algorithm.name
        self.kl_clamp = algorithm.kl_clamp if algorithm.beta > 0 else None
        self.care_config = care_config
        self.seed = seed
        self.accuracy_reward_index = accuracy_reward_index
        self.span_finder = SpanFinder(trainer._tokenizer)

        def final_norm():  # the decoder's last module, where the feature hook sits
            return trainer.accelerator.unwrap_model(trainer.model).get_decoder().norm
        self.feature_reader = FeatureReader(self.span_finder, final_norm)
        self.resampler = ReflectionResampler(trainer, rgr, self.repair_verdicts) if rgr.enabled else None
        self.dynamic_sampler = None
        if algorithm.dynamic_sampling:
            self.dynamic_sampler = DynamicSampler(
                algorithm.max_sampling_rounds, trainer.num_generations, self.span_finder, trainer._tokenizer.pad_token_id,
                signal=lambda per_func: groups_with_signal(self.verdicts(per_func)[0].view(-1, trainer.num_generations)))
        self.last_objective = None  # the latest batch's objective result (all processes), for tests

    def run(self, inputs: list[dict]) -> dict:
        """The batch TRL trains on, from this process's rows of one generation batch."""
        trainer, cfg, group = self.trainer, self.care_config, self.trainer.num_generations
        # 1-2. rollouts and verification: TRL generates and scores, CARE records what it reads;
        # with dynamic sampling, more rounds fill the slots of groups whose rewards are all equal
        self.seed_sampling()
        rollouts = trainer.sample(inputs, read_features=self.reads_features_in_sampling())
        if self.dynamic_sampler is not None:
            rollouts, metrics = self.dynamic_sampler.fill(rollouts, self.sample_round,
                                                          trainer.accelerator.process_index,
                                                          trainer.accelerator.num_processes)
            for name, value in metrics.items():  # dynamic/rounds, kept_fraction, filled_fraction
                trainer._metrics["train"][name].append(value)
        batch = rollouts.batch
        rewards, correct = self.verdicts(rollouts.rewards_per_func)
        if self.algorithm != "care":
            return self.baseline_signal(batch, rewards, correct)

        # 3. features, from the forward TRL ran anyway or, where it ran none, from one of ours
        features = rollouts.features or self.features_forward(batch)
        spans = features.spans
        think_len = think_len_for_ranking(spans.think_len, spans.response_len)
        think_all, answer_all, emb_all, logp_all = (
            t.view(-1, group, *t.shape[1:])
            for t in self.gather(think_len, spans.answer_len, features.embeddings, features.logprob_sum))

        # 4. subgroups: the same decision on every rank, tie-breaks seeded by (seed, step)
        generator = torch.Generator().manual_seed(self.step_key())
        selection = select_subgroups(correct.view(-1, group), rewards.view(-1, group), think_all, answer_all,
                                     emb_all.float(), logp_all.float(), cfg, generator=generator)

        # 5. RGR: repaired rows replace their negatives in the batch
        outcome = repair_reward = None
        if self.resampler is not None:
            repairs = self.resampler.repair(batch, rollouts.prompts, rollouts.inputs, selection, group)
            outcome, repair_reward = repairs.outcome, repairs.reward
            spans = self.span_finder.find(batch["completion_ids"], batch["completion_mask"])

        # 6. advantages, and the signal metrics logged on them (docs/method.md §8)
        result = score_subgroups(selection, rewards.view(-1, group), cfg, outcome, repair_reward)
        self.last_objective = result
        self.log_signal(signal_metrics(result, correct.view(-1, group), think_len=think_all, k_hist=cfg.k))

        # 7. token credit, on this process's rows; rollouts outside the subgroup leave the loss (docs/method.md §3)
        completion_mask = batch["completion_mask"]
        local = self.process_slice(completion_mask.size(0))
        advantages, in_subgroup, positive = (
            t.reshape(-1)[local].to(completion_mask.device)
            for t in (result.advantages, result.in_subgroup, result.verifier_positive))
        trained = trained_tokens(batch)  # RGR's with_prefix rows: the repair context is not trained
        batch["advantages"] = token_advantages(advantages, spans.think, spans.answer, trained, positive,
                                               mode=cfg.token_credit, tau_pos=cfg.tau_pos)
        batch[LOSS_MASK] = subgroup_loss_mask(trained, in_subgroup).to(completion_mask.dtype)
        batch["num_items_in_batch"] = trainer.accelerator.gather(trained_tokens(batch).sum()).sum()

        # 8. loss inputs: TRL's loss sees CARE's mask through tool_mask (and the reference's KL clamp, if set)
        return self.loss_batch(batch)

    # ------------------------------------------------------------------ steps 1-3
    def seed_sampling(self, round_index: int = 0) -> None:
        """Sampling depends on (seed, step, round, rank) only, not on how the process got here: a
        run resumed from a checkpoint draws exactly the rollouts an uninterrupted run draws,
        whatever else consumed random numbers before this step in either process."""
        trainer = self.trainer
        torch.manual_seed(self.step_key() * 1_009
                          + trainer.accelerator.process_index + 1 + round_index * 7_919_000_003)

    def step_key(self) -> int:
        """(seed, optimizer step) as one integer: every random draw of a step is seeded from it."""
        return self.seed * 1_000_003 + self.trainer.state.global_step

    def reads_features_in_sampling(self) -> bool:
        return self.algorithm == "care" and self.trl_runs_old_logp_forward()

    def sample_round(self, round_index: int) -> Rollouts:
        """Dynamic sampling's round `round_index` (1, 2, ...): fresh prompts drawn by (seed, step,
        round), the same on every process, G rows each, laid out over processes as TRL lays out
        a generation batch; then generated and scored as round 1 is."""
        trainer = self.trainer
        accelerator, group = trainer.accelerator, trainer.num_generations
        local_rows = trainer.args.per_device_train_batch_size * trainer.args.steps_per_generation
        n_prompts = local_rows * accelerator.num_processes // group
        dataset = trainer.train_dataset
        generator = torch.Generator().manual_seed(self.step_key() * 1_009
                                                  + round_index)
        if n_prompts <= len(dataset):
            prompts = torch.randperm(len(dataset), generator=generator)[:n_prompts]
        else:
            prompts = torch.randint(len(dataset), (n_prompts,), generator=generator)
        rows = prompts.repeat_interleave(group)[self.process_slice(local_rows)]
        self.seed_sampling(round_index)
        return trainer.sample([dataset[int(row)] for row in rows], read_features=self.reads_features_in_sampling())

    def trl_runs_old_logp_forward(self) -> bool:
        """Whether TRL's generate-and-score runs an old-policy forward (several updates per rollout batch, vLLM)."""
        trainer = self.trainer
        generate_every = trainer.args.steps_per_generation * trainer.num_iterations
        return (trainer.args.gradient_accumulation_steps % generate_every != 0
                or (trainer.use_vllm and trainer.vllm_importance_sampling_correction))

    def verdicts(self, per_func: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted total reward, accuracy-correct) for every row of every process."""
        return reward_verdicts(per_func, self.trainer.reward_weights, self.accuracy_reward_index)

    def repair_verdicts(self, per_func: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(success, total reward) per repair, by the rule the objective applies to rollouts."""
        total, correct = self.verdicts(per_func)
        return (correct if self.care_config.positive_by == "accuracy" else total > 0), total

    @torch.no_grad()
    def features_forward(self, batch: dict) -> Features:
        """One no-grad old-policy forward: where TRL runs none, the loss forward comes after the
        batch must be final (RGR splices by the subgroup), so none other can carry the features."""
        trainer = self.trainer
        _, features = self.feature_reader.read(
            trainer._get_per_token_logps_and_entropies, trainer.model, *forward_inputs(batch),
            batch_size=trainer.args.per_device_train_batch_size, **forward_kwargs(batch))
        return features

    # ------------------------------------------------------------------ baselines and logging
    def baseline_signal(self, batch: dict, rewards: torch.Tensor, correct: torch.Tensor) -> dict:
        """GRPO / DAPO / GSPO keep TRL's advantages; log the same signal metrics on them."""
        group = self.trainer.num_generations
        spans = self.span_finder.find(batch["completion_ids"], batch["completion_mask"])
        (think_all,) = self.gather(think_len_for_ranking(spans.think_len, spans.response_len))
        result = grpo_advantages(rewards.view(-1, group), correct.view(-1, group))
        self.last_objective = result
        self.log_signal(signal_metrics(result, correct.view(-1, group), think_len=think_all.view(-1, group),
                                       k_hist=self.care_config.k))
        # TRL counted the tokens of the first round; dynamic sampling may have merged rows of others
        batch["num_items_in_batch"] = self.trainer.accelerator.gather(trained_tokens(batch).sum()).sum()
        return self.loss_batch(batch)

    # ------------------------------------------------------------------ step 8
    def loss_batch(self, batch: dict) -> dict:
        """The batch TRL's loss reads: CARE's mask folded into tool_mask, and with `algorithm.kl_clamp`
        the reference log-probs of over-limit tokens set to the policy's (care.trainer.kl_clamp)."""
        if self.kl_clamp is not None and "ref_per_token_logps" in batch:
            trained = trained_tokens(batch)
            policy = batch.get("old_per_token_logps")
            if policy is None:  # one update per rollout batch: the policy at the loss is the one that sampled
                policy = self.policy_logps(batch)
            clamped = clamp_reference_kl(batch, self.kl_clamp, policy, trained)
            counts = self.trainer.accelerator.gather(torch.stack([clamped.sum(), trained.sum()]).view(1, 2).float())
            counts = counts.view(-1, 2).sum(dim=0)
            self.trainer._metrics["train"]["kl/clamped_fraction"].append((counts[0] / counts[1].clamp(min=1)).item())
        return loss_inputs(batch)

    @torch.no_grad()
    def policy_logps(self, batch: dict) -> torch.Tensor:
        """Per-token log-probs of the batch's completions under the current policy (one no-grad forward)."""
        trainer = self.trainer
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, *forward_inputs(batch), batch_size=trainer.args.per_device_train_batch_size, **forward_kwargs(batch))
        return logps

    def log_signal(self, metrics: dict[str, float]) -> None:
        logged = self.trainer._metrics["train"]
        for key, value in metrics.items():
            name = LOGGED_NAMES.get(key)
            if name is None and key.startswith("k_prime_hist/"):
                name = f"care/{key}"
            if name is not None:
                logged[name].append(float(value))

    def gather(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Each tensor gathered over processes (groups may span ranks), on the CPU."""
        accelerator = self.trainer.accelerator
        return [accelerator.gather(t.to(accelerator.device).contiguous()).cpu() for t in tensors]

    def process_slice(self, rows: int) -> slice:
        start = self.trainer.accelerator.process_index * rows
        return slice(start, start + rows)
