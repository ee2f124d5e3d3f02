"""Evaluation: one prompt template, one pass, greedy (or seeded sampling), same verifier.

Generation goes through HF `generate` in left-padded batches. Per-sample results carry
everything needed to audit a score (response, parsed answer, gold, correct).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

from care.config import EvalConfig
from care.data.schema import Record, prompt_text


def _messages(record: Record) -> list[dict]:
    content = [{"type": "image"} for _ in record.images] + [{"type": "text", "text": prompt_text(record)}]
    return [{"role": "user", "content": content}]


@torch.no_grad()
def generate_responses(model, processor, records: list[Record], cfg: EvalConfig, seed: int = 0) -> list[str]:
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    responses: list[str] = []
    for start in range(0, len(records), cfg.batch_size):
        batch = records[start:start + cfg.batch_size]
        texts = [processor.apply_chat_template(_messages(r), add_generation_prompt=True, tokenize=False)
                 for r in batch]
        images = [r.images for r in batch] if any(r.images for r in batch) else None
        inputs = processor(text=texts, images=images, return_tensors="pt", padding=True).to(model.device)
        sampling = {"do_sample": True, "temperature": cfg.temperature} if cfg.do_sample else {"do_sample": False}
        output = model.generate(**inputs, max_new_tokens=cfg.max_new_tokens, **sampling)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        responses += processor.batch_decode(new_tokens, skip_special_tokens=True)
    model.train(was_training)
    return responses


def summarize(samples: list[dict]) -> dict:
    """Per-benchmark accuracy (percent) and their unweighted mean, `macro`."""
    by_benchmark: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        by_benchmark[s["benchmark"]].append(bool(s["correct"]))
    accuracy = {name: 100.0 * sum(v) / len(v) for name, v in sorted(by_benchmark.items())}
    return {"accuracy": accuracy, "macro": sum(accuracy.values()) / len(accuracy), "n": len(samples)}


def evaluate(model, processor, records: list[Record], cfg: EvalConfig, out_path: Path | None = None,
             seed: int = 0) -> dict:
    from care.verifiers import verify_batch

    responses = generate_responses(model, processor, records, cfg, seed=seed)
    verdicts = verify_batch(responses, [r.answer for r in records], [r.answer_type for r in records],
                            [r.choices for r in records])
    samples = [{"id": r.id, "benchmark": r.source, "response": resp, "parsed": v.parsed, "gold": r.answer,
                "correct": bool(v.correct), "formatted": bool(v.formatted)}
               for r, resp, v in zip(records, responses, verdicts, strict=True)]
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(out_path, "w") as f:
            for s in samples:
                f.write(json.dumps(s) + "\n")
    return summarize(samples)
