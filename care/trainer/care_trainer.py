"""One trainer for every algorithm: TRL's GRPOTrainer, each training batch run through `CareStep`.

TRL generates, scores and (for GRPO, DAPO, GSPO) computes group z-score advantages; the loss
itself is TRL's, configured per algorithm. For `care`, the step (care.trainer.care_step, read it
first) replaces the advantages and the set of trained rollouts. This class only connects the
step to TRL. The TRL internals both rely on are listed, and checked against the installed TRL,
in `care.trainer.trl_surface`.
"""

from __future__ import annotations

from trl import GRPOTrainer

from care.checkpoints import ResumableTrainer
from care.config import AlgorithmConfig, RGRConfig
from care.objective import CareConfig
from care.trainer.care_step import CareStep, Rollouts


class CareGRPOTrainer(ResumableTrainer, GRPOTrainer):
    """GRPOTrainer whose training batches come from `CareStep.run`.

    TRL overrides, each a thin adapter:
    - `_generate_and_score_completions`: in training, returns `care_step.run(rows)`;
    - `_generate`, `_calculate_rewards`: while `sample` runs TRL's generate-and-score, record the
      prompts as TRL prepared them and the gathered per-function rewards;
    - `_get_per_token_logps_and_entropies`: in that call's old-log-prob forward, when the step
      asks for it, also reads CARE's features (care.trainer.features).
    """

    def __init__(self, *args, algorithm: AlgorithmConfig, care_config: CareConfig, seed: int = 0,
                 accuracy_reward_index: int = 0, rgr: RGRConfig | None = None, **kwargs):
        """`algorithm`: what the step does beyond TRL's loss settings (its name, dynamic sampling, KL clamp)."""
        super().__init__(*args, **kwargs)
        rgr = rgr if rgr is not None else RGRConfig(enabled=False)
        self.care_step = CareStep(self, algorithm, care_config, rgr, seed, accuracy_reward_index)
        self._sampling: Rollouts | None = None  # the round `sample` is running, while it runs

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        return self.care_step.run(inputs)

    def sample(self, inputs: list[dict], read_features: bool) -> Rollouts:
        """TRL's generate-and-score of `inputs` (rollouts, rewards, old and reference log-probs),
        with what CARE reads on the way; `read_features`: from TRL's old-log-prob forward."""
        rollouts = Rollouts(inputs, read_features)
        self._sampling = rollouts
        try:
            rollouts.batch = super()._generate_and_score_completions(inputs)
        finally:
            self._sampling = None
        return rollouts

    def _generate(self, prompts):
        if self._sampling is not None:
            self._sampling.prompts = prompts
        return super()._generate(prompts)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self._sampling is not None:
            self._sampling.rewards_per_func = rewards_per_func
        return rewards_per_func

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        forward = super()._get_per_token_logps_and_entropies
        rollouts = self._sampling
        # the first forward of generate-and-score is the old-policy one (the reference forward follows)
        if rollouts is None or not rollouts.read_features or rollouts.features is not None:
            return forward(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        result, rollouts.features = self.care_step.feature_reader.read(
            forward, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        return result

