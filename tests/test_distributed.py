"""Two CPU processes (torch.distributed, gloo) take the same CARE decisions as one process.

3 prompts x G=4 over 2 ranks puts the middle group across both ranks, so this checks the
gather, that every rank decides identically (RGR outcomes included), that both ranks make the
same generate calls, and that each keeps its own slice.
"""

import socket
from dataclasses import asdict

import pytest
import torch
import torch.multiprocessing as mp

from care.objective import CareConfig, care_advantages
from tests.dist_worker import run_rank


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_decide_like_one(cache_dir, tmp_path):
    # build the tiny backbone once here so the ranks do not race to build it
    from care.config import BackboneConfig
    from care.models import resolve_backbone
    resolve_backbone(BackboneConfig(), cache_dir)

    mp.spawn(run_rank, args=(2, _free_port(), str(cache_dir), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # both ranks saw the same gathered batch and took the same decisions
    for key in ("advantages", "in_subgroup", "negative_index", "anchor_index", "repair_outcome", "repair_reward"):
        assert torch.equal(ranks[0]["recorded"][key], ranks[1]["recorded"][key]), key
    for a, b in zip(ranks[0]["args"], ranks[1]["args"], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    # one process on that same gathered batch decides the same
    from tests.trainer_helpers import tiny_config
    cfg = tiny_config(cache_dir, "care")
    recorded = ranks[0]["recorded"]
    single = care_advantages(*ranks[0]["args"], CareConfig(**asdict(cfg.care)),
                             repair_outcome=recorded["repair_outcome"], repair_reward=recorded["repair_reward"],
                             generator=torch.Generator().manual_seed(cfg.seed * 1_000_003))
    assert torch.equal(single.advantages, ranks[0]["recorded"]["advantages"])
    assert torch.equal(single.in_subgroup, ranks[0]["recorded"]["in_subgroup"])
    # RGR: the same number of generate calls, with the same number of rows, on both ranks
    assert ranks[0]["generate_calls"] == ranks[1]["generate_calls"]
    attempts = int((recorded["repair_outcome"] >= 0).sum())
    assert len(ranks[0]["generate_calls"]) == (2 if attempts else 1)
    # each rank trained on its own slice: rows 0-5 and 6-11 of the 12 rollouts
    assert [r["local_rows"] for r in ranks] == [6, 6]
    flat_in = single.in_subgroup.reshape(-1)
    for rank, data in enumerate(ranks):
        rows = slice(6 * rank, 6 * rank + 6)
        assert torch.equal(data["loss_mask"].amax(dim=1).bool(), flat_in[rows])
        sums = data["local_advantages"].sum(dim=1)
        assert torch.allclose(sums, single.advantages.reshape(-1)[rows].float(), atol=1e-5)


@pytest.mark.slow
def test_two_processes_fill_dynamic_sampling_slots_without_moving_rollouts(cache_dir, tmp_path):
    """Both ranks draw the same rounds and make the same fill; each trains rows its own rounds made,
    the straddling middle group only from the middle slot of a round."""
    from care.config import BackboneConfig
    from care.models import resolve_backbone
    from tests.dist_worker import run_dynamic_rank
    resolve_backbone(BackboneConfig(), cache_dir)

    mp.spawn(run_dynamic_rank, args=(2, _free_port(), str(cache_dir), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["logged"] == ranks[1]["logged"] and ranks[0]["logged"]["dynamic/rounds"] >= 2
    assert len(ranks[0]["rounds"]) == len(ranks[1]["rounds"]) == ranks[0]["logged"]["dynamic/rounds"]
    for a, b in zip(ranks[0]["rounds"], ranks[1]["rounds"], strict=True):  # same gathered rewards, same prompts
        assert torch.equal(a["rewards"], b["rewards"])
        assert a["ids"][-2:] == b["ids"][:2]  # the middle group: rows 4-7, two on each rank
    assert ranks[0]["num_items"] == ranks[1]["num_items"] == sum(int(r["trained"].sum()) for r in ranks)
    for rank, data in enumerate(ranks):
        made = {}  # every row this rank generated: tokens -> (round, local row)
        for index, batch in enumerate(data["rounds"]):
            for row, (ids, mask) in enumerate(zip(batch["completion_ids"], batch["completion_mask"], strict=True)):
                made[tuple(ids[mask.bool()].tolist())] = (index, row)
        sources = [made[tuple(ids[mask.bool()].tolist())]
                   for ids, mask in zip(data["completion_ids"], data["completion_mask"], strict=True)]
        straddling = [4, 5] if rank == 0 else [0, 1]
        assert all(sources[row][1] == row for row in straddling)  # the middle group never moves
        for row, (index, source_row) in enumerate(sources):  # trained rows come from groups with signal
            if data["trained"][row].any():
                first = (rank * 6 + source_row) // 4 * 4
                rewards = data["rounds"][index]["rewards"][first:first + 4]
                assert rewards.max() > rewards.min()
