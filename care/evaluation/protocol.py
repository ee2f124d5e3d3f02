"""Evaluation: one prompt template, one pass, greedy (or seeded sampling), same verifier.

Generation goes through HF `generate` in left-padded batches, or through vLLM's offline
engine on GPU machines (`eval.engine=vllm`, `VllmEngine`) with the same chat-templated
prompts and images. Per-sample results carry everything needed to audit a score (response,
parsed answer, gold, correct).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

from care.config import Config, EvalConfig
from care.data.schema import Record, render_prompt


def prompt_texts(processor, records: list[Record]) -> list[str]:
    """The training prompt of each record (`care.data.schema.prompt_messages`), chat-templated."""
    return [render_prompt(processor, r) for r in records]


class VllmEngine:
    """vLLM's offline engine over a saved model directory (GPU machines, the `vllm` extra).

    Takes the place of the HF model in `evaluate`: same prompt text, same images, sampled at
    `cfg.temperature` with the pass's seed, or greedy (temperature 0) when `do_sample` is off.
    """

    def __init__(self, model_path: str, dtype: str = "bfloat16", max_images: int = 1,
                 gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1,
                 mm_processor_kwargs: dict | None = None):
        from vllm import LLM  # lazy: CPU installs never need vllm

        # the backbone's pixel caps (care.models.loading.vllm_mm_processor_kwargs): the same image
        # tokens as the HF processor that rendered the prompt text
        self.llm = LLM(model=str(model_path), dtype=dtype, limit_mm_per_prompt={"image": max_images},
                       gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                       mm_processor_kwargs=mm_processor_kwargs)

    def generate(self, texts: list[str], images: list[list], cfg: EvalConfig, seed: int) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=cfg.temperature if cfg.do_sample else 0.0, max_tokens=cfg.max_new_tokens,
                                seed=seed)
        requests = [{"prompt": text, **({"multi_modal_data": {"image": list(imgs)}} if imgs else {})}
                    for text, imgs in zip(texts, images, strict=True)]
        return [output.outputs[0].text for output in self.llm.generate(requests, params, use_tqdm=False)]


def load_engine(cfg: Config, source: str, max_images: int = 1):
    """(model, processor) for the protocol on the policy in `source`: the HF model, or vLLM's offline
    engine (`eval.engine=vllm`) for prompts of up to `max_images` images."""
    from care.models import load_backbone, load_processor

    if cfg.eval.engine != "vllm":
        model, processor, _ = load_backbone(cfg.backbone, cfg.cache_dir, source=source)
        return model, processor
    from care.models.loading import vllm_mm_processor_kwargs

    caps = (cfg.backbone.min_pixels, cfg.backbone.max_pixels)  # the prompt text and vLLM's images agree
    processor = load_processor(source, cfg.backbone.family, *caps)
    model = VllmEngine(source, dtype=cfg.rl.compute_dtype, max_images=max(1, max_images),
                       gpu_memory_utilization=cfg.eval.vllm_gpu_memory_utilization,
                       tensor_parallel_size=cfg.eval.vllm_tensor_parallel_size,
                       mm_processor_kwargs=vllm_mm_processor_kwargs(*caps))
    return model, processor


@torch.no_grad()
def generate_responses(model, processor, records: list[Record], cfg: EvalConfig, seed: int = 0) -> list[str]:
    if isinstance(model, VllmEngine):
        return model.generate(prompt_texts(processor, records), [r.images for r in records], cfg, seed)
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    responses: list[str] = []
    for start in range(0, len(records), cfg.batch_size):
        batch = records[start:start + cfg.batch_size]
        texts = prompt_texts(processor, batch)
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


def sample(model, processor, records: list[Record], cfg: EvalConfig, seed: int = 0,
           benchmark: str | None = None) -> list[dict]:
    """One pass over `records` under the protocol: a verified sample per record, counted toward
    `benchmark` (default: each record's source). The sample carries what auditing it needs."""
    from care.verifiers import verify_batch

    responses = generate_responses(model, processor, records, cfg, seed=seed)
    verdicts = verify_batch(responses, [r.answer for r in records], [r.answer_type for r in records],
                            [r.choices for r in records], extraction=cfg.extraction)
    return [{"id": r.id, "benchmark": benchmark or r.source, "source": r.source, "response": resp,
             "parsed": v.parsed, "gold": r.answer, "correct": bool(v.correct), "formatted": bool(v.formatted)}
            for r, resp, v in zip(records, responses, verdicts, strict=True)]


def write_samples(path: Path, samples: list[dict]) -> None:
    """One JSON line per sample, written atomically: a file that exists holds its whole pass (an
    evaluation resumed after a kill reads finished passes back, care.evaluation.harness)."""
    from care.atomic import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(s) + "\n" for s in samples))


def read_samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
