"""Configuration of the CARE objective: one flat, validated dataclass.

Flat on purpose: the objective must stay importable without Hydra, so the run config maps its
nested groups (e.g. ``rescue.normalize``) onto these fields. Defaults follow the project spec
(docs/method.md); validation fails early with the field name and the accepted values, because a
typo in an ablation name would otherwise silently run the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ANCHOR_STRATEGIES = ("shortest_think", "random", "longest_think", "max_logprob")
SELECTORS = ("cosine", "nearest", "farthest", "mixed", "random")
POSITIVE_BY = ("accuracy", "reward")
TOKEN_CREDIT_MODES = ("region", "uniform")


@dataclass(frozen=True)
class CareConfig:
    """Knobs of the CARE advantage estimator (docs/method.md §1-§5)."""

    k: int = 4  # K: negatives per subgroup
    m: int = 6  # M: nearest-failure pool that farthest-first picks from (selector "cosine")
    s: float = 0.5  # negative-only scale
    s_refl: float = 0.25  # scale of a repaired negative whose repair failed
    equalize: bool = True  # multiply the subgroup by sqrt(K / K')
    rescue: bool = True  # all-negative rescue for groups without a success
    rescue_gamma: float = 0.1  # pseudo reward of the rescue pseudo-anchor
    rescue_normalize: bool = True  # z-score rescue rewards (False keeps them at gamma scale)
    anchor: str = "shortest_think"
    selector: str = "cosine"
    positive_by: str = "accuracy"
    eps: float = 1e-6  # added to the subgroup's population std
    token_credit: str = "region"
    tau_pos: float = 0.005  # think-token weight of verifier-positive rollouts

    def __post_init__(self) -> None:
        _require_int("k", self.k, minimum=1)
        _require_int("m", self.m, minimum=self.k, minimum_text="k")
        _require_unit_interval("s", self.s)
        _require_unit_interval("s_refl", self.s_refl)
        _require_positive("rescue_gamma", self.rescue_gamma)
        _require_positive("eps", self.eps)
        if (
            isinstance(self.tau_pos, bool)
            or not isinstance(self.tau_pos, (int, float))
            or not 0 <= self.tau_pos <= 1
        ):
            raise ValueError(f"tau_pos must be a number in [0, 1], got {self.tau_pos!r}")
        for name in ("equalize", "rescue", "rescue_normalize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        _require_choice("anchor", self.anchor, ANCHOR_STRATEGIES)
        _require_choice("selector", self.selector, SELECTORS)
        _require_choice("positive_by", self.positive_by, POSITIVE_BY)
        _require_choice("token_credit", self.token_credit, TOKEN_CREDIT_MODES)


def _require_int(name: str, value: object, minimum: int, minimum_text: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = f"{minimum_text} ({minimum})" if minimum_text else str(minimum)
        raise ValueError(f"{name} must be an integer >= {bound}, got {value!r}")


def _require_unit_interval(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")


def _require_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _require_choice(name: str, value: object, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(accepted)}; got {value!r}")
