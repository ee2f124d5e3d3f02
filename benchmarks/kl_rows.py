"""Which rows make the logged k3 KL spike? A per-row decomposition of `train/kl` (issue 25, item 4).

    flock /tmp/care-torch.lock .venv/bin/python benchmarks/kl_rows.py RUN_DIR [run.py overrides ...]

Runs `python run.py hydra.run.dir=RUN_DIR <overrides>` (cold start reused from the cache, RL, evaluation)
with three wrappers installed in this process only (no product code changes):
- `CareStep.run` tags every row of the trained batch with its index and records what it is:
  RGR-spliced repair (`repaired_index`, cross-checked against `ReflectionResampler._splice`) and its
  outcome, anchor, hard negative, in CARE's subgroup, advantage sign;
- `_compute_loss` captures the policy's per-token log-probs of TRL's own loss forward and recomputes
  TRL's k3 KL, exp(ref - logp) - (ref - logp) - 1, over TRL's mask (completion_mask * tool_mask, where
  CARE folds its loss mask), per row: trained tokens, mean, max (and the token), and the row's share of
  the step's KL mass. It also re-derives the reference log-probs of every row with the reference model
  on the loss inputs, to check that RGR's rescored rows carry the right ones (`ref_err`);
- at the end, the per-step token mean is compared with the logged `train/kl` of RUN_DIR/metrics.jsonl.

Writes RUN_DIR/kl_rows.jsonl (one line per row and step) and prints one table row per step.
"""

from __future__ import annotations

import json
import runpy
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from care.trainer.care_step import CareStep  # noqa: E402
from care.trainer.care_trainer import CareGRPOTrainer  # noqa: E402
from care.trainer.repair import ReflectionResampler  # noqa: E402
from care.trainer.trl_surface import forward_kwargs  # noqa: E402

TAG = "kl_rows_index"  # an extra [B] tensor: TRL shuffles and splits it with the batch, its loss ignores it
ROWS: list[dict] = []  # one dict per trained row and step
META: dict[int, dict] = {}  # row index -> what the row is, for the batch being trained
SPLICED: list[int] = []  # rows ReflectionResampler._splice replaced this step


def row_kinds(step: CareStep, batch_size: int) -> dict[int, dict]:
    """What each row of the step's batch is, from the objective's result (one process: global = local)."""
    result, group = step.last_objective, step.trainer.num_generations
    meta = {}
    for row in range(batch_size):
        g, col = divmod(row, group)
        spliced = int(result.repaired_index[g]) == col
        if spliced:
            kind = "repair+" if int(result.repair_outcome[g]) == 1 else "repair-"
        elif int(result.anchor_index[g]) == col:
            kind = "anchor"
        elif col in result.negative_index[g].tolist():
            kind = "negative"
        else:
            kind = "subgroup" if bool(result.in_subgroup[g, col]) else "out"
        adv = float(result.advantages[g, col])
        meta[row] = {"kind": kind, "spliced": spliced, "in_subgroup": bool(result.in_subgroup[g, col]),
                     "rescued": bool(result.rescued[g]), "adv_sign": (adv > 0) - (adv < 0), "adv": adv}
    return meta


def install() -> None:
    run, splice, compute_loss = CareStep.run, ReflectionResampler._splice, CareGRPOTrainer._compute_loss

    def traced_splice(self, batch, rows, *args, **kwargs):
        SPLICED.extend(rows)
        return splice(self, batch, rows, *args, **kwargs)

    def traced_run(self, inputs):
        SPLICED.clear()
        batch = run(self, inputs)
        size = batch["completion_ids"].size(0)
        META.clear()
        META.update(row_kinds(self, size) if self.last_objective is not None else {})
        assert sorted(SPLICED) == sorted(r for r, m in META.items() if m["spliced"]), (SPLICED, META)
        return {**batch, TAG: torch.arange(size, device=batch["completion_ids"].device)}

    def traced_loss(self, model, inputs):
        rows = inputs.pop(TAG).tolist()
        captured = []
        forward = self._get_per_token_logps_and_entropies

        def capture(*args, **kwargs):  # TRL's loss forward: the log-probs its KL uses, exactly
            out = forward(*args, **kwargs)
            captured.append(out[0].detach())
            return out

        self._get_per_token_logps_and_entropies = capture
        try:
            loss = compute_loss(self, model, inputs)
        finally:
            del self._get_per_token_logps_and_entropies
        record(self, inputs, rows, captured[0], self._metrics["train"]["kl"][-1])
        return loss

    CareStep.run, ReflectionResampler._splice, CareGRPOTrainer._compute_loss = traced_run, traced_splice, traced_loss


@torch.no_grad()
def record(trainer, inputs: dict, rows: list[int], logps: torch.Tensor, trl_kl: float) -> None:
    mask = inputs["completion_mask"] * inputs["tool_mask"] if "tool_mask" in inputs else inputs["completion_mask"]
    ref = inputs["ref_per_token_logps"]
    diff = ref - logps
    kl = torch.exp(diff) - diff - 1  # TRL's per-token k3
    # the reference model's log-probs of exactly these inputs: do RGR's rescored rows carry the right ones?
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    ref_again, _, _ = trainer._get_per_token_logps_and_entropies(
        trainer.ref_model, ids, attention, inputs["completion_ids"].size(1), **forward_kwargs(inputs))
    total, count = float((kl * mask).sum()), float(mask.sum())
    step = trainer.state.global_step + 1  # the step metrics.jsonl logs after this update
    tokenizer = trainer._tokenizer
    for i, row in enumerate(rows):
        m = mask[i].bool()
        n = int(m.sum())
        entry = {"step": step, "row": row, **META.get(row, {}), "tokens": n, "trl_kl": trl_kl,
                 "step_kl": total / max(count, 1.0)}
        if n:
            row_kl = kl[i][m]
            at = int(torch.nonzero(m)[int(row_kl.argmax())])
            entry.update(kl_sum=float(row_kl.sum()), kl_mean=float(row_kl.mean()), kl_max=float(row_kl.max()),
                         max_pos=at, max_token=tokenizer.decode([int(inputs["completion_ids"][i, at])]),
                         logp_at_max=float(logps[i, at]), ref_at_max=float(ref[i, at]),
                         share=float(row_kl.sum()) / total if total > 0 else 0.0,
                         contrib=float(row_kl.sum()) / count,
                         ref_err=float((ref_again[i][m] - ref[i][m]).abs().max()))
            if entry.get("spliced"):  # what a repair trains, as text
                entry["text"] = tokenizer.decode(inputs["completion_ids"][i][m].tolist())
        ROWS.append(entry)


def summarise(run_dir: Path) -> None:
    logged = {}
    with open(run_dir / "metrics.jsonl") as fh:
        for line in fh:
            metrics = json.loads(line)
            if "train/kl" in metrics:
                logged[metrics["global_step"]] = metrics["train/kl"]
    by_step = defaultdict(list)
    for entry in ROWS:
        by_step[entry["step"]].append(entry)
    print(f"{'step':>4} {'logged':>9} {'script':>9} {'|diff|':>8} {'spl.share':>9} {'n_spl':>5} {'spl.tok':>7} "
          f"{'tok':>5} {'max_row':>8} {'kind':>8} {'adv':>6} {'max_tok_kl':>10} {'token':>10} {'ref_err':>8}")
    worst_diff = worst_ref = 0.0
    for step in sorted(by_step):
        trained = [e for e in by_step[step] if e["tokens"]]
        spliced = [e for e in trained if e.get("spliced")]
        script = by_step[step][0]["step_kl"]
        diff = abs(script - logged.get(step, float("nan")))
        worst_diff = max(worst_diff, diff)
        worst_ref = max([worst_ref] + [e["ref_err"] for e in trained])
        top = max(trained, key=lambda e: e["kl_mean"])
        peak = max(trained, key=lambda e: e["kl_max"])
        print(f"{step:>4} {logged.get(step, float('nan')):>9.4f} {script:>9.4f} {diff:>8.1e} "
              f"{sum(e['share'] for e in spliced):>9.3f} {len(spliced):>5} {sum(e['tokens'] for e in spliced):>7} "
              f"{sum(e['tokens'] for e in trained):>5} {top['kl_mean']:>8.3f} {top['kind']:>8} {top['adv']:>6.2f} "
              f"{peak['kl_max']:>10.2f} {peak['max_token']!r:>10} {max(e['ref_err'] for e in trained):>8.1e}")
    print(json.dumps({"steps": len(by_step), "max_abs_diff_logged": worst_diff, "max_ref_err": worst_ref}))


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    run_dir = Path(sys.argv[1]).resolve()
    install()
    entry = Path(__file__).resolve().parents[1] / "run.py"
    sys.argv = [str(entry), f"hydra.run.dir={run_dir}", *sys.argv[2:]]
    try:
        runpy.run_path(str(entry), run_name="__main__")  # exactly as `python run.py` runs it
    except SystemExit as err:  # Hydra exits through sys.exit; keep the rows either way
        if err.code not in (None, 0):
            raise
    finally:
        if ROWS:
            with open(run_dir / "kl_rows.jsonl", "w") as fh:
                fh.writelines(json.dumps(entry) + "\n" for entry in ROWS)
    summarise(run_dir)


if __name__ == "__main__":
    main()
