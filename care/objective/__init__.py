"""The CARE objective as a pure-torch library: advantages, token credit, baselines, signal metrics.

Imports only torch, so any trainer (TRL, a custom loop, a test) can use it. Entry point:
`care_advantages(...)`; trainers that run RGR call `select_subgroups`, repair
`selection.repair_candidate`, then `score_subgroups`. See docs/method.md §1-§5 and §8.
"""

from .advantages import care_advantages, score_subgroups, select_subgroups
from .anchors import choose_anchor, think_len_for_ranking
from .baselines import grpo_advantages
from .config import CareConfig
from .metrics import signal_metrics
from .negatives import pairwise_cosine_distance
from .result import CareAdvantages, SubgroupSelection
from .token_credit import subgroup_loss_mask, token_advantages

__all__ = [
    "CareAdvantages",
    "CareConfig",
    "SubgroupSelection",
    "care_advantages",
    "choose_anchor",
    "grpo_advantages",
    "pairwise_cosine_distance",
    "score_subgroups",
    "select_subgroups",
    "signal_metrics",
    "subgroup_loss_mask",
    "think_len_for_ranking",
    "token_advantages",
]
