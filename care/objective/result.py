"""Result types shared by CARE and the baselines, so both feed the same logging and loss code."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SubgroupSelection:
    """Who is in each group's subgroup, before any reward is turned into an advantage.

    Split from scoring so a trainer can run RGR on `repair_candidate` in between without redrawing
    random anchors or negatives (a second selection call would need the same generator state).
    """

    positive: torch.Tensor  # [N, G] bool: rollouts counted as successes (per cfg.positive_by)
    anchor_index: torch.Tensor  # [N] long: anchor (pseudo-anchor when rescued); -1 where no subgroup
    negative_index: torch.Tensor  # [N, K] long: selected negatives, valid ones first, -1 padded
    k_prime: torch.Tensor  # [N] long: number of valid negatives (0: no subgroup)
    rescued: torch.Tensor  # [N] bool: subgroup built by the all-negative rescue
    repair_candidate: torch.Tensor  # [N] long: negative RGR should repair (nearest to anchor); -1 none
    k: int  # K the selection was capped at (width of negative_index)


@dataclass
class CareAdvantages:
    """Sequence-level advantages plus everything section 8 logs about how they came about."""

    advantages: torch.Tensor  # [N, G] float; exactly 0 outside the subgroup
    in_subgroup: torch.Tensor  # [N, G] bool: counts towards the loss normaliser
    is_positive: torch.Tensor  # [N, G] bool: positive role in S (anchor, pseudo-anchor, repaired success)
    verifier_positive: torch.Tensor  # [N, G] bool: success for token credit (repaired rows: their repair)
    fail_derived: torch.Tensor  # [N, G] bool: hard negatives, RGR repairs, all of a rescue subgroup
    anchor_index: torch.Tensor  # [N] long, -1 none
    negative_index: torch.Tensor  # [N, K] long, -1 padded
    k_prime: torch.Tensor  # [N] long
    eq_factor: torch.Tensor  # [N] float: multiplier applied to S (1.0 where none or no subgroup)
    rescued: torch.Tensor  # [N] bool
    repair_candidate: torch.Tensor  # [N] long, -1 none
    repaired_index: torch.Tensor  # [N] long: rollout replaced by an RGR repair, -1 none
    repair_outcome: torch.Tensor  # [N] long: -1 no repair, 0 failed, 1 succeeded
    k: int  # histogram cap for K' (cfg.k for CARE, G for the baselines)
