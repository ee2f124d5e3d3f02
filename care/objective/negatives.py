"""Hard-negative selection (docs/method.md §2) and rescue pseudo-negatives (§4), batched over groups.

Everything works on an [N, G, G] cosine-distance tensor per group, so the only pass over the
[N, G, D] embeddings is one batched Gram product. Selections are [N, K] index tensors padded with -1;
row n holds `count[n]` valid indices first. Ties are broken towards the lowest rollout index.
"""

from __future__ import annotations

import torch

from .anchors import NO_INDEX


def pairwise_cosine_distance(embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine distance 1 - cos between every pair of rollouts in a group: [N, G, D] -> [N, G, G].

    Normalising a [N, G, D] tensor costs several full passes; the Gram matrix of the raw vectors
    needs one, and its diagonal already holds the squared norms. A zero vector gets distance 1 to
    everything (cosine 0), so it is neither near nor far.
    """
    if embeddings.dtype in (torch.float16, torch.bfloat16):
        embeddings = embeddings.float()
    gram = torch.bmm(embeddings, embeddings.transpose(1, 2))
    gram = 0.5 * (gram + gram.transpose(1, 2))  # exact symmetry, so d(i, j) == d(j, i)
    if not bool(torch.isfinite(gram).all()):
        raise ValueError("embeddings must be finite (their Gram matrix has NaN or inf)")
    inverse_norms = gram.diagonal(dim1=1, dim2=2).clamp_min(torch.finfo(gram.dtype).tiny).rsqrt()
    cosine = gram * inverse_norms.unsqueeze(2) * inverse_norms.unsqueeze(1)
    return 1.0 - cosine.clamp(-1.0, 1.0)


def rows_of(distances: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row `index[n]` of each group's [G, G] distance matrix: [N, G].

    gather rather than fancy indexing (and rsqrt rather than sqrt above): on these small tensors the
    latter open a parallel region, which costs milliseconds per call on a busy 2-core machine.
    """
    n_groups, group_size, _ = distances.shape
    return distances.gather(1, index.view(n_groups, 1, 1).expand(n_groups, 1, group_size)).squeeze(1)


def ranked_order(keys: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Rollout indices [N, G] sorted by ascending key, candidates first, ties by lowest index."""
    masked = keys.masked_fill(~candidates, torch.inf)
    return torch.sort(masked, dim=1, stable=True).indices


def first_of(order: torch.Tensor, count: torch.Tensor, k: int) -> torch.Tensor:
    """The first `count[n]` entries of each row of `order`, as [N, k] padded with -1."""
    n_groups, group_size = order.shape
    if k > group_size:
        order = torch.cat([order, order.new_full((n_groups, k - group_size), NO_INDEX)], dim=1)
    taken = order[:, :k]
    column = torch.arange(k, device=order.device)
    return torch.where(column.unsqueeze(0) < count.unsqueeze(1), taken, NO_INDEX)


def farthest_first(
    distances: torch.Tensor, pool: torch.Tensor, first: torch.Tensor, count: torch.Tensor, k: int
) -> torch.Tensor:
    """Greedy max-min selection inside `pool` [N, G], starting from `first` [N]: [N, k], -1 padded.

    Each step adds the pool member whose distance to its closest already-selected member is largest
    (the reference code measures only against selected members, not the anchor). Loops over k, not N.
    """
    rows = torch.arange(pool.shape[0], device=pool.device)
    start = first.clamp_min(0)
    selected = torch.zeros_like(pool)
    selected[rows, start] = count > 0
    chosen = [torch.where(count > 0, first, NO_INDEX)]
    closest = rows_of(distances, start)  # distance of every rollout to its nearest selected one
    for step in range(1, k):
        score = closest.masked_fill(~pool | selected, -torch.inf)
        pick = score.argmax(dim=1)  # first maximum: lowest index wins ties
        active = count > step
        chosen.append(torch.where(active, pick, NO_INDEX))
        selected[rows, pick] |= active
        closest = torch.minimum(closest, rows_of(distances, pick))
    return torch.stack(chosen, dim=1)


def select_negatives(
    selector: str,
    to_anchor: torch.Tensor | None,
    distances: torch.Tensor | None,
    candidates: torch.Tensor,
    count: torch.Tensor,
    k: int,
    m: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick `count[n]` of each group's `candidates` (failures, [N, G]) as hard negatives: [N, k].

    `to_anchor` [N, G] is each rollout's cosine distance to its group's anchor; `distances` the
    [N, G, G] pairwise ones. Only selector "random" works without them (uniform, from `generator`).
    cosine: the M nearest, then farthest-first from the nearest. nearest / farthest: plain top-K'.
    mixed: the ceil(K'/2) nearest, then the floor(K'/2) farthest of the remaining candidates.
    """
    if selector == "random":
        draws = torch.rand(candidates.shape, generator=generator, device=candidates.device)
        return first_of(ranked_order(draws, candidates), count, k)
    if to_anchor is None or distances is None:
        raise ValueError(f"selector={selector!r} needs embeddings to measure distances; got embeddings=None")
    nearest_order = ranked_order(to_anchor, candidates)
    if selector == "nearest":
        return first_of(nearest_order, count, k)
    if selector == "farthest":
        return first_of(ranked_order(-to_anchor, candidates), count, k)
    if selector == "cosine":
        rank = torch.empty_like(nearest_order).scatter_(1, nearest_order, _columns(nearest_order))
        pool = candidates & (rank < m)
        return farthest_first(distances, pool, nearest_order[:, 0], count, k)
    if selector == "mixed":
        n_near = (count + 1) // 2
        near = first_of(nearest_order, n_near, k)
        taken = index_mask(near, candidates.shape[1])
        far_order = ranked_order(-to_anchor, candidates & ~taken)
        far = first_of(far_order, count - n_near, k)
        column = torch.arange(k, device=count.device).unsqueeze(0)
        shifted = (column - n_near.unsqueeze(1)).clamp_min(0)
        return torch.where(column < n_near.unsqueeze(1), near, far.gather(1, shifted))
    raise ValueError(f"unknown selector {selector!r}")


def select_rescue_negatives(
    to_anchor: torch.Tensor | None,
    distances: torch.Tensor | None,
    candidates: torch.Tensor,
    count: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rescue pseudo-negatives: farthest-first from the candidate farthest from the pseudo-anchor.

    Without embeddings (only allowed with selector "random") they are drawn uniformly instead.
    """
    if to_anchor is None or distances is None:
        return select_negatives("random", None, None, candidates, count, k, k, generator)
    farthest = ranked_order(-to_anchor, candidates)[:, 0]
    return farthest_first(distances, candidates, farthest, count, k)


def _columns(order: torch.Tensor) -> torch.Tensor:
    return torch.arange(order.shape[1], device=order.device).expand_as(order)


def index_mask(indices: torch.Tensor, group_size: int) -> torch.Tensor:
    """[N, K] indices (-1 = none) -> [N, G] bool membership mask."""
    padded = torch.zeros(indices.shape[0], group_size + 1, dtype=torch.bool, device=indices.device)
    padded.scatter_(1, torch.where(indices < 0, group_size, indices), True)
    return padded[:, :group_size]
