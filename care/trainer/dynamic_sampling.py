"""DAPO's dynamic sampling (Yu et al. 2025, arXiv:2503.14476; docs/method.md §6), for every algorithm.

A group whose G rollouts all earn the same reward has zero group-relative advantage: it costs a
rollout batch's share of compute and teaches nothing. With `algorithm.dynamic_sampling` on,
step 2 of care.trainer.care_step does not stop at the step's own generation batch (round 1):
while a slot of that batch holds a group without signal and fewer than
`algorithm.max_sampling_rounds` rounds were drawn, it draws another round of fresh prompts
(`draw`), G rollouts each, verified, and puts the groups with signal into the empty slots.

Where a group may go. TRL hands each process a fixed slice of the generation batch, and a group
can straddle two processes. A group that lies within one process may fill any empty slot of
that process; a straddling group only its own slot. So no rollout moves between processes:
every rank makes the same decision from the gathered rewards and takes rows of its own rounds.
(At paper scale, 64 groups per process, every group lies within one process.)

After the last round, slots still empty keep their round-1 group, masked out of the loss
(`LOSS_MASK`, as CARE masks rollouts outside its subgroup): the step trains on the groups that
were kept, its token normaliser counts only their tokens, and it never fails. With nothing
kept the loss is zero (AdamW's momentum still moves the weights a little).
Logged per step: `dynamic/rounds`, `dynamic/kept_fraction` (groups with signal among all groups
drawn) and `dynamic/filled_fraction` (slots trained; 1.0 unless the rounds ran out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from care.trainer.batch_rows import moved, take_rows
from care.trainer.features import Features
from care.trainer.spans import SpanFinder
from care.trainer.trl_surface import LOSS_MASK


def groups_with_signal(rewards: torch.Tensor) -> torch.Tensor:
    """[N, G] rewards -> [N] bool: the group's rewards are not all equal (DAPO's filter)."""
    return rewards.amax(dim=1) > rewards.amin(dim=1)


class SlotFiller:
    """Which round's group fills each of the N group slots of the generation batch.

    The same on every process: it sees only the gathered signal. `source[g]` is (round, group)
    or None while slot g is empty.
    """

    def __init__(self, n_groups: int, group_size: int, rows_per_process: int):
        self.group_size, self.rows_per_process = group_size, rows_per_process
        self.pools = [self.pool(group) for group in range(n_groups)]
        self.source: list[tuple[int, int] | None] = [None] * n_groups

    def pool(self, group: int) -> tuple[str, int]:
        """Slots a group may fill: ("process", p) when it lies within process p, else only ("slot", itself)."""
        first = group * self.group_size // self.rows_per_process
        last = ((group + 1) * self.group_size - 1) // self.rows_per_process
        return ("process", first) if first == last else ("slot", group)

    def empty(self) -> list[int]:
        return [group for group, source in enumerate(self.source) if source is None]

    def offer(self, round_index: int, signal: list[bool]) -> int:
        """Place this round's groups with signal: each in its own slot if empty, else in the first
        empty slot of its pool; the rest are dropped. Returns how many slots were filled."""
        waiting = []
        for group, has_signal in enumerate(signal):
            if not has_signal:
                continue
            if self.source[group] is None:
                self.source[group] = (round_index, group)
            else:
                waiting.append(group)
        filled = sum(1 for source in self.source if source is not None and source[0] == round_index)
        open_slots: dict[tuple[str, int], list[int]] = {}
        for slot in self.empty():
            open_slots.setdefault(self.pools[slot], []).append(slot)
        for group in waiting:
            slots = open_slots.get(self.pools[group])
            if slots:
                self.source[slots.pop(0)] = (round_index, group)
                filled += 1
        return filled


class DynamicSampler:
    """Fills a generation batch with groups that carry signal, over at most `max_rounds` rounds.

    Rounds are care.trainer.care_step.Rollouts: this process's rows, and every process's
    per-function rewards (`rewards_per_func`, gathered by TRL).
    """

    def __init__(self, max_rounds: int, group_size: int, span_finder: SpanFinder, pad_token_id: int,
                 signal: Callable[[torch.Tensor], torch.Tensor]):
        self.max_rounds, self.group_size = max_rounds, group_size
        self.span_finder, self.pad_token_id = span_finder, pad_token_id
        self.signal = signal  # gathered per-function rewards [rows, funcs] -> [groups] bool

    def fill(self, first, draw: Callable[[int], object], process_index: int, num_processes: int):
        """(the rollouts to train on, the step's `dynamic/` metrics); round 1 itself when it is full.

        `draw(round_index)` samples and scores round `round_index` (1, 2, ...) on every process.
        """
        rows, device = first.rewards_per_func.size(0), first.batch["completion_ids"].device
        local_rows = rows // num_processes
        filler = SlotFiller(rows // self.group_size, self.group_size, local_rows)
        rounds, row_maps, kept = [first], [None], 0
        while True:
            signal = self.signal(rounds[-1].rewards_per_func)
            kept += int(signal.sum())
            round_index = len(rounds) - 1
            filler.offer(round_index, signal.tolist())
            if round_index > 0:  # keep only the rows it gave, so rounds do not pile up in memory
                rounds[-1], row_maps[-1] = self._rows_given(rounds[-1], filler, round_index, process_index,
                                                            local_rows)
            if not filler.empty() or len(rounds) == self.max_rounds:
                break
            # while later rounds are drawn, what is kept waits in host memory: the accelerator holds one
            # round's buffer at a time, as without dynamic sampling (docs/plan.md)
            self._offload(rounds[-1])
            rounds.append(draw(len(rounds)))
            row_maps.append(None)
        n_groups = len(filler.source)
        metrics = {"dynamic/rounds": float(len(rounds)), "dynamic/kept_fraction": kept / (n_groups * len(rounds)),
                   "dynamic/filled_fraction": 1.0 - len(filler.empty()) / n_groups}
        if len(rounds) == 1 and not filler.empty():
            return first, metrics
        self._offload(rounds[-1])  # rows are merged in host memory, then moved back
        assembled = self._assemble(rounds, row_maps, filler, process_index, local_rows)
        assembled.batch = moved(assembled.batch, device)
        return assembled, metrics

    @staticmethod
    def _offload(rollouts) -> None:
        """Move the round's batch and features to host memory, in place (the caller's reference to round 1
        must not keep its accelerator copy alive); the rewards stay, every rank's and small."""
        if rollouts.batch is not None:
            rollouts.batch = moved(rollouts.batch, "cpu")
        if rollouts.features is not None:
            features = rollouts.features
            rollouts.features = Features(features.spans, features.embeddings.cpu(), features.logprob_sum.cpu())

    def _rows_given(self, rollouts, filler: SlotFiller, round_index: int, process_index: int, local_rows: int):
        """Round `round_index` cut to this process's rows that fill slots, and {its local row: row in the cut}."""
        group, start = self.group_size, process_index * local_rows
        given = [row - start for source in filler.source if source is not None and source[0] == round_index
                 for row in range(source[1] * group, (source[1] + 1) * group) if start <= row < start + local_rows]
        features = rollouts.features
        if features is not None:
            features = Features(None, features.embeddings[given], features.logprob_sum[given])
        cut = replace(rollouts, inputs=[rollouts.inputs[row] for row in given],
                      prompts=[rollouts.prompts[row] for row in given], features=features,
                      batch=take_rows([rollouts.batch], [(0, row) for row in given], self.pad_token_id) if given else None)
        return cut, {row: index for index, row in enumerate(given)}

    def _assemble(self, rounds: list, row_maps: list, filler: SlotFiller, process_index: int, local_rows: int):
        """This process's rollouts: each slot's rows from the round that filled it; empty slots keep
        round 1's rows, out of the loss. `rewards_per_func` stays every process's."""
        group, start = self.group_size, process_index * local_rows
        everyone, mine, empty_rows = [], [], []
        for row in range(rounds[0].rewards_per_func.size(0)):
            slot, column = divmod(row, group)
            round_index, source_group = filler.source[slot] or (0, slot)
            source_row = source_group * group + column
            everyone.append((round_index, source_row))
            if start <= row < start + local_rows:
                row_map = row_maps[round_index]
                mine.append((round_index, source_row - start if row_map is None else row_map[source_row - start]))
                if filler.source[slot] is None:
                    empty_rows.append(row - start)

        batch = take_rows([r.batch for r in rounds], mine, self.pad_token_id)
        if empty_rows:
            mask = batch[LOSS_MASK] if LOSS_MASK in batch else torch.ones_like(batch["completion_mask"])
            mask[empty_rows] = 0
            batch[LOSS_MASK] = mask
        features = None
        if rounds[0].features is not None:
            features = Features(self.span_finder.find(batch["completion_ids"], batch["completion_mask"]),
                                torch.stack([rounds[i].features.embeddings[row] for i, row in mine]),
                                torch.stack([rounds[i].features.logprob_sum[row] for i, row in mine]))
        return replace(rounds[0], batch=batch, features=features,
                       inputs=[rounds[i].inputs[row] for i, row in mine],
                       prompts=[rounds[i].prompts[row] for i, row in mine],
                       rewards_per_func=torch.stack([rounds[i].rewards_per_func[row] for i, row in everyone]))
