"""How much TRL's loss normalisation differs from the reference's, on a real tiny CARE trainer.

Why (issue 25, item 2): the suite trains with TRL's `loss_type="dapo"`, whose per-token loss is
summed over a micro-batch's trained tokens and divided by the trained tokens of the whole
optimizer update (gathered over processes): one token mean over the update. The authors' code
(EasyR1 / verl, `loss_agg_mode=token-mean`) takes the token mean per micro-batch and averages the
micro-batches. The two agree when micro-batches hold equal token counts and weight tokens
differently otherwise (docs/method.md §6).

What it does: trains a tiny CARE trainer (as tests/trainer_helpers.py builds it, from the default
run's cold start) at a geometry with several micro-batches per update (the default CPU run has one,
so there the two coincide), captures the micro-batches TRL trains on, and at each update computes,
with the same parameters, the gradient of (a) TRL's loss as is and (b) the reference's, through
TRL's own `_compute_loss` with each micro-batch's `num_items_in_batch` set so that TRL's normaliser
`N / P * C / S` is that micro-batch's trained tokens times C (N = n_mb * P * S; P processes, C
accumulation steps, S steps per generation). A hand-written token mean checks (b) on one micro-batch.

Run: HF_HUB_OFFLINE=1 WANDB_MODE=disabled python benchmarks/loss_normalisation.py [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["WANDB_MODE"] = "disabled"

import torch  # noqa: E402


def trl_loss(trainer, model, mb: dict) -> torch.Tensor:
    """TRL's own `_compute_loss` (the class's: the instance's is wrapped to capture micro-batches)."""
    return type(trainer)._compute_loss(trainer, model, mb)


def trained_mask(mb: dict) -> torch.Tensor:
    """The mask TRL's `_compute_loss` trains: completion_mask x tool_mask (CARE's loss mask is folded in)."""
    return mb["completion_mask"] * mb["tool_mask"] if "tool_mask" in mb else mb["completion_mask"]


def trl_normaliser(trainer, mb: dict) -> torch.Tensor:
    """TRL 1.16's dapo normaliser in training (grpo_trainer.py, `_compute_loss`)."""
    return (mb["num_items_in_batch"].clamp(min=1.0) / trainer.accelerator.num_processes
            * trainer.current_gradient_accumulation_steps / trainer.args.steps_per_generation)


def as_reference(trainer, mb: dict) -> dict:
    """`mb` with the `num_items_in_batch` that makes TRL's normaliser n_mb x C: the reference's token mean / C."""
    n = trained_mask(mb).sum().float()
    items = n * trainer.accelerator.num_processes * trainer.args.steps_per_generation
    return {**mb, "num_items_in_batch": items.to(mb["num_items_in_batch"])}


def hand_loss(trainer, model, mb: dict) -> torch.Tensor:
    """The reference's micro-batch loss written out: clipped surrogate + k3 KL, token mean / C."""
    from care.trainer.trl_surface import forward_kwargs

    ids = torch.cat([mb["prompt_ids"], mb["completion_ids"]], dim=1)
    attention = torch.cat([mb["prompt_mask"], mb["completion_mask"]], dim=1)
    logp, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, attention, mb["completion_ids"].size(1),
                                                            **forward_kwargs(mb))
    old = mb.get("old_per_token_logps")
    ratio = torch.exp(logp - (logp.detach() if old is None else old))
    adv = mb["advantages"] if mb["advantages"].dim() == 2 else mb["advantages"].unsqueeze(1)
    clipped = torch.clamp(ratio, 1 - trainer.epsilon_low, 1 + trainer.epsilon_high)
    if trainer.args.delta is not None:
        ratio = torch.clamp(ratio, max=trainer.args.delta)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if trainer.beta != 0.0:
        log_ref = mb["ref_per_token_logps"] - logp
        per_token = per_token + trainer.beta * (torch.exp(log_ref) - log_ref - 1)
    mask = trained_mask(mb)
    return (per_token * mask).sum() / (mask.sum() * trainer.current_gradient_accumulation_steps)


def flat_grad(loss: torch.Tensor, model) -> torch.Tensor:
    """d loss / d parameters, flattened (float64); leaves .grad, which TRL accumulates, alone."""
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], materialize_grads=True)
    return torch.cat([g.reshape(-1).double() for g in grads])


def gradient(trainer, model, micro_batches: list[dict]) -> torch.Tensor:
    """The gradient of the update's loss: the sum of TRL's `_compute_loss` over its micro-batches."""
    return sum(flat_grad(trl_loss(trainer, model, mb), model) for mb in micro_batches)


def compare(trainer, model, micro_batches: list[dict]) -> dict:
    """One update: token counts, per-token weight ratios (reference / TRL), and the two gradients compared."""
    accumulation = trainer.current_gradient_accumulation_steps
    tokens = [int(trained_mask(mb).sum()) for mb in micro_batches]
    rows = [int((trained_mask(mb).sum(1) > 0).sum()) for mb in micro_batches]  # rollouts CARE trains (subgroup)
    ratios = [float(trl_normaliser(trainer, mb)) / (n * accumulation) for mb, n in zip(micro_batches, tokens, strict=True) if n]
    g_trl = gradient(trainer, model, micro_batches)
    g_ref = gradient(trainer, model, [as_reference(trainer, mb) for mb in micro_batches])
    return {"tokens": tokens, "rows": rows, "ratio_min": min(ratios), "ratio_max": max(ratios),
            "cosine": float(torch.nn.functional.cosine_similarity(g_trl, g_ref, dim=0)),
            "rel_diff": float((g_trl - g_ref).norm() / g_trl.norm()), "norm_ratio": float(g_ref.norm() / g_trl.norm())}


def check_by_hand(trainer, model, mb: dict) -> str:
    """(b) on one micro-batch equals the per-micro-batch token mean computed by hand (value and gradient)."""
    via_trl, by_hand = trl_loss(trainer, model, as_reference(trainer, mb)), hand_loss(trainer, model, mb)
    g_trl, g_hand = flat_grad(via_trl, model), flat_grad(by_hand, model)
    grad_err = float((g_trl - g_hand).norm() / g_hand.norm().clamp(min=1e-30))
    assert torch.allclose(via_trl, by_hand, rtol=1e-5, atol=1e-7) and grad_err < 1e-5, (via_trl, by_hand, grad_err)
    return (f"hand check (first micro-batch): TRL loss with replaced num_items_in_batch {via_trl.item():.8f}, "
            f"hand-written token mean / C {by_hand.item():.8f}; gradient relative difference {grad_err:.1e}")


def build(cfg, out: Path, reward: str, start: str):
    """tests/trainer_helpers.build_tiny_trainer, from the default run's cold start unless `start` is backbone."""
    from tests.trainer_helpers import build_tiny_trainer, parity_reward

    rewards = (parity_reward,) if reward == "parity" else ()  # () = the verifier rewards, as run.py trains
    if start == "backbone":
        return build_tiny_trainer(cfg, out, reward_funcs=rewards)
    from datasets import Dataset

    from care.coldstart import cold_start_policy
    from care.data.schema import to_prompt_row
    from care.data.synthetic import splits_from_config
    from care.models import load_processor, resolve_backbone
    from care.seeding import seed_everything
    from care.trainer import build_trainer

    records, _ = splits_from_config(cfg.data)
    backbone = resolve_backbone(cfg.backbone, Path(cfg.cache_dir))
    policy = cold_start_policy(cfg, records, backbone, Path(cfg.cache_dir))  # cached, or built once (minutes)
    print(f"policy: {policy}")
    seed_everything(cfg.seed, cfg.threads)
    processor = load_processor(policy, cfg.backbone.family, cfg.backbone.min_pixels, cfg.backbone.max_pixels)
    dataset = Dataset.from_list([to_prompt_row(r) for r in records])
    return build_trainer(cfg, policy, processor, dataset, out, reward_funcs=list(rewards) or None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="optimizer updates")
    parser.add_argument("--prompts", type=int, default=4, help="rl.prompts_per_rollout (= prompts per update)")
    parser.add_argument("--generations", type=int, default=4, help="rl.num_generations")
    parser.add_argument("--micro", type=int, default=4, help="rl.micro_batch_size")
    parser.add_argument("--reward", choices=("verifier", "parity"), default="verifier")
    parser.add_argument("--start", choices=("cold_start", "backbone"), default="cold_start",
                        help="the default run's synthetic cold start (what its RL starts from), or the bare backbone")
    parser.add_argument("--rgr", action="store_true", help="RGR on, as the default run (tiny_config: off)")
    args = parser.parse_args()

    from transformers.trainer_callback import PrinterCallback

    from care.config import Config, RGRConfig, batch_geometry
    from tests.trainer_helpers import tiny_config

    torch.set_num_threads(2)
    started = time.perf_counter()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    print(f"commit: {commit.stdout.strip()}")
    default = batch_geometry(Config().rl, 1)
    print(f"default CPU run (run.py): {default.gradient_accumulation_steps} micro-batch(es) per update of "
          f"{default.micro_batch_size} sequences")
    # the default run's rl keys (tiny_config's shorter completions and higher rate are for speed), but the geometry
    cfg = tiny_config(ROOT / ".cache" / "care", "care", rgr=RGRConfig() if args.rgr else None, steps=args.steps,
                      prompts_per_rollout=args.prompts, num_generations=args.generations, micro_batch_size=args.micro,
                      max_completion_length=Config().rl.max_completion_length, learning_rate=Config().rl.learning_rate)
    print(f"config: rl={json.dumps(asdict(cfg.rl))}")
    print(f"config: algorithm={json.dumps(asdict(cfg.algorithm))} rgr.enabled={cfg.rgr.enabled} reward={args.reward} start={args.start} "
          f"geometry={batch_geometry(cfg.rl, 1)}")

    with tempfile.TemporaryDirectory() as out:
        trainer = build(cfg, Path(out), args.reward, args.start)
        trainer.remove_callback(PrinterCallback)  # TRL's per-step log dicts: not what this measures
        assert trainer.loss_type == "dapo" and not trainer.use_vllm and trainer.top_entropy_quantile == 1.0
        train_loss, pending, results, notes = trainer._compute_loss, [], [], []

        def capture(model, inputs):
            pending.append(inputs)
            if len(pending) == trainer.current_gradient_accumulation_steps:  # the update's last micro-batch
                if not notes:
                    notes.append(check_by_hand(trainer, model, pending[0]))
                results.append(compare(trainer, model, pending))
                pending.clear()
            return train_loss(model, inputs)

        trainer._compute_loss = capture
        trainer.train()

    print(notes[0])
    for step, r in enumerate(results, 1):
        print(f"update {step}: trained tokens per micro-batch {r['tokens']} (min {min(r['tokens'])}, max "
              f"{max(r['tokens'])}; trained rollouts {r['rows']}); per-token weight reference/TRL min {r['ratio_min']:.3f} max "
              f"{r['ratio_max']:.3f}; cosine(g_TRL, g_ref) {r['cosine']:.6f}; "
              f"||g_TRL - g_ref|| / ||g_TRL|| {r['rel_diff']:.4f}; ||g_ref|| / ||g_TRL|| {r['norm_ratio']:.4f}")
    cosines, diffs = [r["cosine"] for r in results], [r["rel_diff"] for r in results]
    print(f"summary over {len(results)} updates: cosine median {statistics.median(cosines):.6f} worst "
          f"{min(cosines):.6f}; relative norm difference median {statistics.median(diffs):.4f} worst {max(diffs):.4f}")
    print(f"wall time (this process, after imports): {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
