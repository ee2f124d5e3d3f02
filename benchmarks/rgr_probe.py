"""Which failures can RGR repair? An offline probe of a (cold-started or trained) policy.

    python benchmarks/rgr_probe.py POLICY_DIR [--prompts 96] [--group 8] [--grid 3]

Samples a group per training prompt of the default synthetic task, as RL does (temperature
rl.temperature). In every mixed group (a success and a failure) it takes the first failure and
classifies it: a *slip* concludes its reading rightly and then answers wrongly; anything else
is a *misread*. It then draws three continuations at RGR's sampling settings: the cue repair
context, the cue-less cut, and a fresh sample from the prompt (the `random` variant). It prints
the success rate of each, by failure kind and by question (color | count); the last line is
a JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict

import torch

from care.config import Config, EvalConfig
from care.data.synthetic import make_splits
from care.evaluation.protocol import generate_responses, prompt_texts
from care.models import load_backbone
from care.repair import cue_text, repair_context
from care.verifiers import verify


def continue_texts(model, processor, texts: list[str], images: list, cfg: Config, batch_size: int = 16) -> list[str]:
    """Sampled continuations of already-templated texts, at RGR's own settings."""
    out = []
    for start in range(0, len(texts), batch_size):
        inputs = processor(text=texts[start:start + batch_size], images=images[start:start + batch_size],
                           return_tensors="pt", padding=True)
        # a repair writes only the answer after <answer>; a fresh sample a whole response
        generated = model.generate(**inputs, max_new_tokens=cfg.rl.max_completion_length, do_sample=True,
                                   temperature=cfg.rgr.temperature, top_p=cfg.rgr.top_p)
        out += processor.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def failure_kind(response: str, gold: str) -> str:
    conclusion = response.split("</think>")[0].rstrip().rsplit(" ", 1)[-1]
    return "slip" if conclusion == gold else "misread"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policy_dir")
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--grid", type=int, default=Config().data.grid, help="data.grid the policy was trained on")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = Config()
    cfg.data.grid = args.grid
    train, _ = make_splits(cfg.data.seed, cfg.data.train_size, cfg.data.eval_size, cfg.data.grid, cfg.data.cell_px)
    records = random.Random(1).sample(train, args.prompts)
    model, processor, _ = load_backbone(cfg.backbone, cfg.cache_dir, source=args.policy_dir)
    model.eval()

    sampling = EvalConfig(do_sample=True, temperature=cfg.rl.temperature,
                          max_new_tokens=cfg.rl.max_completion_length, batch_size=64)
    groups = [generate_responses(model, processor, records, sampling, seed=g) for g in range(args.group)]
    cue = cue_text(cfg.rgr.cue)
    texts, images, attempts, accuracies = [], [], [], []
    for i, record in enumerate(records):
        responses = [group[i] for group in groups]
        correct = [verify(r, record.answer, record.answer_type).correct for r in responses]
        if all(correct) or not any(correct):
            continue
        accuracies.append(sum(correct) / len(correct))
        failed = responses[correct.index(False)]
        prompt = prompt_texts(processor, [record])[0]
        for variant, context in (("cue", repair_context(failed, cue)), ("no_cue", repair_context(failed, "")),
                                 ("random", "")):
            texts.append(prompt + context)
            images.append(record.images)
            attempts.append((record, context, failure_kind(failed, record.answer), variant))

    with torch.no_grad():
        continuations = continue_texts(model, processor, texts, images, cfg)
    outcomes = defaultdict(list)
    for (record, context, kind, variant), continuation in zip(attempts, continuations, strict=True):
        success = verify(context + continuation, record.answer, record.answer_type).correct
        outcomes[(kind, variant)].append(success)
        outcomes[(record.meta["kind"], variant)].append(success)  # the question: color | count
        outcomes[("all", variant)].append(success)

    result = {"mixed_groups": len(accuracies),
              "mixed_group_accuracy": round(sum(accuracies) / max(1, len(accuracies)), 3)}
    for (kind, variant), successes in sorted(outcomes.items()):
        rate = sum(successes) / len(successes)
        print(f"{kind:8s} {variant:7s} {sum(successes):3d}/{len(successes):3d}  {100 * rate:5.1f} %")
        result[f"{kind}/{variant}"] = round(rate, 3)
        result[f"{kind}/n"] = len(successes)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
