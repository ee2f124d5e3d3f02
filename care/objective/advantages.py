"""CARE sequence-level advantages (docs/method.md §1-§4, and §7 for how a repair outcome enters).

Two stages, both vectorised over the N groups:
  select_subgroups  -> anchor, hard negatives, rescue, RGR repair candidate (no rewards turned into
                       advantages yet, so a trainer can run RGR in between);
  score_subgroups   -> z-score inside S = {anchor} + negatives, negative-only scaling, equalisation.
`care_advantages` runs both for callers without RGR (or that already know the repair outcomes).
"""

from __future__ import annotations

import torch

from .anchors import NO_INDEX, choose_anchor
from .checks import check_nonnegative, check_tensor
from .config import CareConfig
from .negatives import (
    index_mask,
    pairwise_cosine_distance,
    rows_of,
    select_negatives,
    select_rescue_negatives,
)
from .result import CareAdvantages, SubgroupSelection


def care_advantages(
    correct: torch.Tensor,
    rewards: torch.Tensor,
    think_len: torch.Tensor,
    answer_len: torch.Tensor,
    embeddings: torch.Tensor | None,
    logprob_sum: torch.Tensor | None,
    cfg: CareConfig,
    repair_outcome: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    repair_reward: torch.Tensor | None = None,
) -> CareAdvantages:
    """CARE advantages for N prompts x G rollouts; see `select_subgroups` and `score_subgroups`."""
    selection = select_subgroups(
        correct, rewards, think_len, answer_len, embeddings, logprob_sum, cfg, generator
    )
    return score_subgroups(selection, rewards, cfg, repair_outcome, repair_reward)


def select_subgroups(
    correct: torch.Tensor,
    rewards: torch.Tensor,
    think_len: torch.Tensor,
    answer_len: torch.Tensor,
    embeddings: torch.Tensor | None,
    logprob_sum: torch.Tensor | None,
    cfg: CareConfig,
    generator: torch.Generator | None = None,
) -> SubgroupSelection:
    """Choose each group's subgroup S.

    correct [N, G] bool, rewards [N, G] float, think_len / answer_len [N, G] int token counts
    (think_len: the whole response length where there is no think span, see `think_len_for_ranking`),
    embeddings [N, G, D] (mean-pooled think-span hidden states; None only with selector "random"),
    logprob_sum [N, G] summed old-policy log-probs (needed by anchor "max_logprob"; rescue falls back
    to the shortest-think failure without it). Groups with a success and a failure get an anchor and
    K' = min(K, |F|) negatives; groups with no success and >= 2 failures get the rescue; all others
    (all correct, a single failure, rescue off) get no subgroup and, later, zero advantages.
    """
    group_size = _check_inputs(correct, rewards, think_len, answer_len, embeddings, logprob_sum, cfg)
    positive = correct if cfg.positive_by == "accuracy" else rewards > 0
    failure = ~positive
    n_failures = failure.sum(dim=1)
    has_positive = positive.any(dim=1)
    regular = has_positive & (n_failures > 0)
    rescued = ~has_positive & (n_failures >= 2) & cfg.rescue

    anchor = choose_anchor(
        positive & regular.unsqueeze(1), think_len, answer_len, logprob_sum, cfg.anchor, generator
    )
    pseudo_rule = "max_logprob" if logprob_sum is not None else "shortest_think"
    pseudo_anchor = choose_anchor(
        failure & rescued.unsqueeze(1), think_len, answer_len, logprob_sum, pseudo_rule
    )
    anchor = torch.where(regular, anchor, torch.where(rescued, pseudo_anchor, NO_INDEX))

    distances = pairwise_cosine_distance(embeddings) if embeddings is not None else None
    to_anchor = rows_of(distances, anchor.clamp_min(0)) if distances is not None else None
    candidates = failure & ~index_mask(anchor.unsqueeze(1), group_size)
    regular_count = torch.where(regular, n_failures.clamp(max=cfg.k), 0)
    rescue_count = torch.where(rescued, (n_failures - 1).clamp(max=cfg.k), 0)

    negatives = select_negatives(
        cfg.selector,
        to_anchor,
        distances,
        candidates & regular.unsqueeze(1),
        regular_count,
        cfg.k,
        cfg.m,
        generator,
    )
    rescue_negatives = select_rescue_negatives(
        to_anchor, distances, candidates & rescued.unsqueeze(1), rescue_count, cfg.k, generator
    )
    negatives = torch.where(rescued.unsqueeze(1), rescue_negatives, negatives)
    return SubgroupSelection(
        positive=positive,
        anchor_index=anchor,
        negative_index=negatives,
        k_prime=regular_count + rescue_count,
        rescued=rescued,
        repair_candidate=_nearest_negative(negatives, to_anchor, regular),
        k=cfg.k,
    )


def score_subgroups(
    selection: SubgroupSelection,
    rewards: torch.Tensor,
    cfg: CareConfig,
    repair_outcome: torch.Tensor | None = None,
    repair_reward: torch.Tensor | None = None,
) -> CareAdvantages:
    """Turn rewards into advantages inside each subgroup S (zero outside).

    repair_outcome [N] int: -1 no repair, 0 the repair of `selection.repair_candidate` failed, 1 it
    succeeded. repair_reward [N] float: the repaired sample's verifier reward; if None a success
    takes the anchor's reward and a failure keeps the original negative's reward.
    """
    n_groups, group_size = selection.positive.shape
    check_tensor("rewards", rewards, (n_groups, group_size), "float", "[N, G]")
    outcome = _check_repair(selection, repair_outcome, repair_reward, n_groups)
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    rewards = rewards.to(dtype)

    anchor_mask = index_mask(selection.anchor_index.unsqueeze(1), group_size)
    negative_mask = index_mask(selection.negative_index, group_size)
    in_subgroup = anchor_mask | negative_mask
    repaired_index = torch.where(outcome >= 0, selection.repair_candidate, NO_INDEX)
    repaired_mask = index_mask(repaired_index.unsqueeze(1), group_size)
    repair_succeeded = repaired_mask & (outcome == 1).unsqueeze(1)
    repair_failed = repaired_mask & (outcome == 0).unsqueeze(1)

    subgroup_rewards = _subgroup_rewards(
        selection, rewards, repaired_mask, outcome, repair_reward, anchor_mask, cfg
    )
    z = _subgroup_z(subgroup_rewards, in_subgroup, cfg.eps)
    if not cfg.rescue_normalize:  # keep rescue at gamma scale: centre, do not divide by the std
        centred = _subgroup_z(subgroup_rewards, in_subgroup, eps=None)
        z = torch.where(selection.rescued.unsqueeze(1), centred, z)

    positive_role = anchor_mask | repair_succeeded
    negative_scale = torch.where(repair_failed, cfg.s_refl, cfg.s)
    advantages = torch.where(positive_role, z, -negative_scale * z.abs())
    k_prime = selection.k_prime.to(dtype)
    if cfg.equalize:
        eq_factor = torch.where(selection.k_prime > 0, (k_prime.clamp_min(1) / selection.k).rsqrt(), 1.0)
    else:
        eq_factor = torch.ones_like(k_prime)
    advantages = torch.where(in_subgroup, advantages * eq_factor.unsqueeze(1), 0.0)

    regular = (selection.anchor_index >= 0) & ~selection.rescued
    return CareAdvantages(
        advantages=advantages,
        in_subgroup=in_subgroup,
        is_positive=positive_role,
        verifier_positive=torch.where(repaired_mask, repair_succeeded, selection.positive),
        fail_derived=(negative_mask & regular.unsqueeze(1)) | (in_subgroup & selection.rescued.unsqueeze(1)),
        anchor_index=selection.anchor_index,
        negative_index=selection.negative_index,
        k_prime=selection.k_prime,
        eq_factor=eq_factor,
        rescued=selection.rescued,
        repair_candidate=selection.repair_candidate,
        repaired_index=repaired_index,
        repair_outcome=torch.where(repaired_index >= 0, outcome, NO_INDEX),
        k=selection.k,
    )


def _subgroup_rewards(
    selection: SubgroupSelection,
    rewards: torch.Tensor,
    repaired_mask: torch.Tensor,
    outcome: torch.Tensor,
    repair_reward: torch.Tensor | None,
    anchor_mask: torch.Tensor,
    cfg: CareConfig,
) -> torch.Tensor:
    """Rewards the z-score sees: repaired rows take their repair's reward, rescue rows pseudo rewards."""
    if repair_reward is not None:
        repaired_value = repair_reward.to(rewards.dtype).unsqueeze(1).expand_as(rewards)
    else:
        anchor_reward = rewards.gather(1, selection.anchor_index.clamp_min(0).unsqueeze(1))
        repaired_value = torch.where((outcome == 1).unsqueeze(1), anchor_reward, rewards)
    rewards = torch.where(repaired_mask, repaired_value, rewards)
    k_prime = selection.k_prime.to(rewards.dtype).clamp_min(1).unsqueeze(1)
    pseudo = torch.where(anchor_mask, cfg.rescue_gamma, -cfg.rescue_gamma / k_prime)
    return torch.where(selection.rescued.unsqueeze(1), pseudo, rewards)


def _subgroup_z(rewards: torch.Tensor, members: torch.Tensor, eps: float | None) -> torch.Tensor:
    """Population z-score of `rewards` over `members` of each row; centred only when eps is None.

    A row whose member rewards are all equal gets exactly 0: centring by a rounded mean would leave
    ~1e-8 residues that dividing by (0 + eps) blows up into a spurious signal.
    """
    weight = members.to(rewards.dtype)
    size = weight.sum(dim=1, keepdim=True).clamp_min(1)
    mean = (rewards * weight).sum(dim=1, keepdim=True) / size
    centred = (rewards - mean) * weight
    highest = rewards.masked_fill(~members, -torch.inf).amax(dim=1, keepdim=True)
    lowest = rewards.masked_fill(~members, torch.inf).amin(dim=1, keepdim=True)
    centred = torch.where(highest == lowest, 0.0, centred)
    if eps is None:
        return centred
    std = torch.linalg.vector_norm(centred, dim=1, keepdim=True) * size.rsqrt()
    return centred / (std + eps)


def _nearest_negative(
    negatives: torch.Tensor, to_anchor: torch.Tensor | None, eligible: torch.Tensor
) -> torch.Tensor:
    """The selected negative closest to the anchor (RGR's target); the first selected without embeddings."""
    if to_anchor is None:
        column = torch.zeros_like(eligible, dtype=torch.long)
    else:
        distance = to_anchor.gather(1, negatives.clamp_min(0)).masked_fill(negatives < 0, torch.inf)
        column = distance.argmin(dim=1)
    nearest = negatives.gather(1, column.unsqueeze(1)).squeeze(1)
    return torch.where(eligible & (nearest >= 0), nearest, NO_INDEX)


def _check_inputs(
    correct: torch.Tensor,
    rewards: torch.Tensor,
    think_len: torch.Tensor,
    answer_len: torch.Tensor,
    embeddings: torch.Tensor | None,
    logprob_sum: torch.Tensor | None,
    cfg: CareConfig,
) -> int:
    """Validate `care_advantages` inputs; returns G."""
    if not isinstance(cfg, CareConfig):
        raise TypeError(f"cfg must be a CareConfig, got {type(cfg).__name__}")
    check_tensor("correct", correct, (None, None), "bool", "[N, G]")
    n_groups, group_size = correct.shape
    if group_size < 1:
        raise ValueError("correct must have at least one rollout per group (G >= 1)")
    group_shape = (n_groups, group_size)
    check_tensor("rewards", rewards, group_shape, "float", "[N, G]")
    check_tensor("think_len", think_len, group_shape, "int", "[N, G]")
    check_tensor("answer_len", answer_len, group_shape, "int", "[N, G]")
    check_nonnegative(
        "think_len", think_len, " (no think span: pass the response length, see think_len_for_ranking)"
    )
    check_nonnegative("answer_len", answer_len)
    if embeddings is None:
        if cfg.selector != "random":
            raise ValueError(
                f"embeddings=None only works with selector='random'; selector={cfg.selector!r} needs embeddings [N, G, D]"
            )
    else:
        check_tensor(
            "embeddings", embeddings, (n_groups, group_size, None), "float", "[N, G, D]", finite=False
        )
        if embeddings.shape[2] < 1:
            raise ValueError("embeddings must have a feature dimension D >= 1, got D = 0")
    if logprob_sum is not None:
        check_tensor("logprob_sum", logprob_sum, group_shape, "float", "[N, G]")
    elif cfg.anchor == "max_logprob":
        raise ValueError("anchor='max_logprob' needs logprob_sum (summed old-policy log-probs), got None")
    return group_size


def _check_repair(
    selection: SubgroupSelection,
    repair_outcome: torch.Tensor | None,
    repair_reward: torch.Tensor | None,
    n_groups: int,
) -> torch.Tensor:
    """Validated repair outcomes [N] (all -1 when none were given)."""
    if repair_outcome is None:
        if repair_reward is not None:
            raise ValueError("repair_reward was given without repair_outcome")
        return torch.full((n_groups,), NO_INDEX, dtype=torch.long, device=selection.positive.device)
    check_tensor("repair_outcome", repair_outcome, (n_groups,), "int", "[N]")
    outcome = repair_outcome.long()
    if bool(((outcome < -1) | (outcome > 1)).any()):
        raise ValueError("repair_outcome values must be -1 (no repair), 0 (repair failed) or 1 (succeeded)")
    orphan = (outcome >= 0) & (selection.repair_candidate < 0)
    if bool(orphan.any()):
        groups = orphan.nonzero().flatten().tolist()[:8]
        raise ValueError(
            f"repair_outcome reports a repair for groups {groups} that have no repair candidate "
            "(RGR needs an anchor and at least one hard negative; rescued groups get none)"
        )
    if repair_reward is not None:
        check_tensor("repair_reward", repair_reward, (n_groups,), "float", "[N]")
    return outcome
