"""Measure, on whatever device is present, the constants task=plan (care/plan/figures.py) assumes, with a random-init
model of a real backbone's architecture (no download, no weights: the hub config's shapes, built here).

What it measures (peak bytes above what was resident before each run; one JSON line at the end):
  - the CUDA context (driver, context and cuBLAS workspaces, outside torch's allocator);
  - weights + gradients + AdamW state in float32, bytes per parameter, and the optimizer step's transient peak;
  - one training micro-batch in bf16 (params in bf16 as FSDP2's mixed precision computes, autocast, gradient
    checkpointing, TRL's fused LM head when trl is installed): at `--layers` N and at 1 decoder layer, so the
    slope is the checkpointed input per token per layer and the rest the recomputed layer; at 0 layers (the LM
    head); the vision tower alone at its depth and at 1 block; a no-grad scoring forward;
  - HF generate's KV cache per token per layer and its decode rate;
  - the step time of the micro-batch: achieved TFLOP/s (6N per token) and MFU against the GPU's dense bf16 peak.

Every measurement that runs out of memory is reported as an error and the rest still run.

  .venv/bin/python benchmarks/gpu_calibrate.py --backbone qwen2_5_vl_7b --layers 4          # a GPU, ~2 min
  .venv/bin/python benchmarks/gpu_calibrate.py --device cpu --layers 1 --tiny-seq           # CPU smoke, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GIB = 2 ** 30

# The hub config.json shapes (text and vision) of each backbone; special-token ids are Qwen's.
ARCH = {
    "qwen2_5_vl_3b": {"family": "qwen2_5_vl", "tied": True, "text": dict(
        hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
        vocab_size=151936, rope_theta=1_000_000.0, mrope_section=[16, 24, 24]), "vision": dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048, patch_size=14,
        window_size=112, fullatt_block_indexes=[7, 15, 23, 31])},
    "qwen2_5_vl_7b": {"family": "qwen2_5_vl", "tied": False, "text": dict(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
        vocab_size=152064, rope_theta=1_000_000.0, mrope_section=[16, 24, 24]), "vision": dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584, patch_size=14,
        window_size=112, fullatt_block_indexes=[7, 15, 23, 31])},
    "qwen3_vl_8b": {"family": "qwen3_vl", "tied": False, "text": dict(
        hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
        head_dim=128, vocab_size=151936, rope_theta=5_000_000.0, mrope_section=[24, 20, 20]), "vision": dict(
        depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096, patch_size=16,
        num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24])},
}
SPECIAL = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
           "vision_end_token_id": 151653}
DENSE_BF16 = {"A100": 312e12, "H100": 989e12, "H200": 989e12}  # NVIDIA datasheets, as care.plan.GPUS
# the autocast dtype of every run (bf16: as the recipe computes); None runs in the weights' dtype (the CPU settings)
COMPUTE: torch.dtype | None = torch.bfloat16


def compute(device: str):
    return torch.autocast(device, dtype=COMPUTE) if COMPUTE is not None else contextlib.nullcontext()


def warm_up(device: str, run) -> None:
    """GPU runs once before measuring (kernels, allocator, lazy init); a CPU measurement needs none."""
    if device == "cuda":
        run()


def model_config(arch: dict, layers: int | None = None, vision_layers: int | None = None, vocab: int | None = None):
    """A transformers config for `arch` with fewer decoder layers / vision blocks / a cut vocabulary if asked."""
    text, vision = dict(arch["text"]), dict(arch["vision"])
    mrope = text.pop("mrope_section")
    if layers is not None:
        text["num_hidden_layers"] = layers
    if vocab is not None:
        text["vocab_size"] = vocab
    special = dict(SPECIAL) if text["vocab_size"] > max(SPECIAL.values()) else \
        {key: text["vocab_size"] - 1 - i for i, key in enumerate(SPECIAL)}
    depth = vision["depth"] if vision_layers is None else vision_layers
    vision.update(depth=depth, spatial_merge_size=2, temporal_patch_size=2)
    rope = {"rope_type": "default", "rope_theta": text.pop("rope_theta"), "mrope_section": mrope}
    if arch["family"] == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        vision["fullatt_block_indexes"] = [i for i in vision["fullatt_block_indexes"] if i < depth] or [depth - 1]
        return Qwen2_5_VLConfig(text_config={**text, "rope_parameters": rope, "tie_word_embeddings": arch["tied"]},
                                vision_config=vision, tie_word_embeddings=arch["tied"], **special), \
            Qwen2_5_VLForConditionalGeneration
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    rope["mrope_interleaved"] = True
    vision["deepstack_visual_indexes"] = [i for i in vision["deepstack_visual_indexes"] if i < depth]
    return Qwen3VLConfig(text_config={**text, "rope_parameters": rope, "tie_word_embeddings": arch["tied"]},
                         vision_config=vision, tie_word_embeddings=arch["tied"], **special), \
        Qwen3VLForConditionalGeneration


def build(arch: dict, device: str, dtype=torch.float32, **shape):
    config, cls = model_config(arch, **shape)
    with torch.device(device):
        model = cls._from_config(config, dtype=dtype)
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    return model


def text_layers(model):
    return model.model.language_model


def vision_tower(model):
    return model.model.visual


class Meter:
    """Peak bytes allocated above the start of the block: torch's CUDA allocator statistics, or on a CPU the
    profiler's memory events (their running "Total Allocated", which spans profiler sessions, so relative to
    the total just before the block's first event)."""

    def __init__(self, device: str):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            from torch.profiler import ProfilerActivity, profile
            self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self.prof.__enter__()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.t0
            self.peak = torch.cuda.max_memory_allocated() - self.start
            return False
        self.seconds = time.perf_counter() - self.t0
        self.prof.__exit__(*exc)
        if exc[0] is None:
            with tempfile.TemporaryDirectory() as tmp:
                trace = Path(tmp) / "trace.json"
                self.prof.export_chrome_trace(str(trace))
                events = json.loads(trace.read_text())["traceEvents"]
            memory = sorted((e for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0),
                            key=lambda e: e["ts"])
            if memory:  # the running total spans profiler sessions: measure from the total before the first event
                start = memory[0]["args"]["Total Allocated"] - memory[0]["args"]["Bytes"]
                self.peak = max(0, max(e["args"]["Total Allocated"] for e in memory) - start)
        return False


def timed(device: str, fn) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def batch(model, micro: int, prompt: int, image_tokens: int, response: int, device: str) -> dict:
    """TRL-like inputs: left padding on the first sequence, one image of `image_tokens` merged tokens in each
    prompt (fp32 pixel_values as the HF processor stores them), labels on the response only."""
    cfg = model.config
    patch = cfg.vision_config.patch_size
    side = 2 * int(math.isqrt(image_tokens))  # patches per side (even, a square image)
    image_tokens = (side // 2) ** 2
    text = prompt - image_tokens - 2
    if text < 2:
        raise ValueError(f"prompt={prompt} tokens cannot hold an image of {image_tokens} tokens")
    vocab = cfg.text_config.vocab_size
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(micro):
        words = torch.randint(10, min(vocab, 100_000) - 10, (text + response,), generator=g)
        rows.append(torch.cat([words[:1], torch.tensor([cfg.vision_start_token_id]),
                               torch.full((image_tokens,), cfg.image_token_id), torch.tensor([cfg.vision_end_token_id]),
                               words[1:]]))
    ids = torch.stack(rows)
    mask = torch.ones_like(ids)
    mask[0, 0] = 0  # one left-padded position: the padding mask keeps SDPA on its masked path, as in TRL
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-response] = -100
    pixels = torch.randn(micro * side * side, 3 * 2 * patch * patch, generator=g)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device),
            "pixel_values": pixels.to(device), "image_grid_thw": torch.tensor([[1, side, side]] * micro).to(device),
            "mm_token_type_ids": (ids == cfg.image_token_id).int().to(device)}


def loss_fn(model, inputs: dict) -> torch.Tensor:
    """The RL loss's shape: per-token log-probs of the response through TRL's fused LM head (what GRPOTrainer
    uses; without trl, full logits and a log-softmax)."""
    if getattr(model, "_fused_head", False):
        out = model(**inputs, fused_lm_head=True)
        return -out.log_probs.sum() / max(1, int((inputs["labels"] != -100).sum()))
    labels = inputs["labels"]
    logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), -1).gather(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(logps * (labels[:, 1:] != -100)).sum() / max(1, int((labels != -100).sum()))


def fuse_lm_head(model) -> str:
    try:
        from trl.trainer.utils import add_fused_lm_head
    except Exception:  # trl not installed: full logits (more memory than the plan counts)
        return "naive (trl not installed)"
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    model._fused_head = True
    return "trl fused (add_fused_lm_head)"


@contextlib.contextmanager
def only_layers(module, name: str, k: int):
    """Run with the first `k` of `module.<name>` (an nn.ModuleList) only."""
    full = getattr(module, name)
    setattr(module, name, full[:k])
    try:
        yield
    finally:
        setattr(module, name, full)


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def guarded(results: dict, key: str, fn):
    """Run one measurement; an OOM (or any error) is recorded under `key` and the others still run."""
    try:
        results[key] = fn()
    except Exception as err:  # noqa: BLE001 - a calibration run reports what failed and goes on
        results[key] = {"error": f"{'OOM' if is_oom(err) else type(err).__name__}: {str(err)[:300]}"}
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def context_bytes(device: str) -> float:
    """CUDA: device memory in use that torch's allocator does not hold (context, cuBLAS); CPU: the process's
    peak RSS so far (what the runtime itself takes)."""
    if device != "cuda":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
    a = torch.ones(1024, 1024, device="cuda", dtype=torch.bfloat16)
    (a @ a).sum().item()  # cuBLAS handle and workspace
    free, total = torch.cuda.mem_get_info()
    return float(total - free - torch.cuda.memory_reserved())


ADAMW_FRESH = 2  # the first step allocates exp_avg and exp_avg_sq (counted in bytes_per_param, not as transient)


def state_run(model, device: str) -> dict:
    """Weights + gradients + AdamW state (float32) after a real step, and the step's own transient peak."""
    params = list(model.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    with Meter(device) as meter:
        optimizer.step()
    held = sum(t.numel() * t.element_size() for p in params for t in (p, p.grad))
    held += sum(t.numel() * t.element_size() for s in optimizer.state.values() for k, t in s.items() if k != "step")
    n = count(model)
    out = {"params": n, "bytes_per_param": held / n,
           "optimizer_step_transient_gib": max(0.0, meter.peak - ADAMW_FRESH * n * 4) / GIB}
    optimizer.state.clear()
    for p in params:
        p.grad = None
    del optimizer
    return out


def train_run(model, inputs: dict, device: str, grad: bool = True) -> dict:
    """Peak bytes above the resident state of one forward (+ backward) under bf16 autocast; gradients are
    preallocated (as FSDP keeps its sharded ones) so they are not counted."""
    for p in model.parameters():
        if grad and p.grad is None:
            p.grad = torch.zeros_like(p)
    def run():
        with compute(device), (contextlib.nullcontext() if grad else torch.no_grad()):
            loss = loss_fn(model, inputs)
        if grad:
            loss.backward()
    warm_up(device, run)
    with Meter(device) as meter:
        run()
    return {"peak_bytes": float(meter.peak), "seconds": meter.seconds}


def vision_run(model, inputs: dict, device: str) -> dict:
    tower = vision_tower(model)
    def run():
        with compute(device):
            out = tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
            out = out.pooler_output if hasattr(out, "pooler_output") else out
            out = out[0] if isinstance(out, tuple) else out
        out.float().sum().backward()
    warm_up(device, run)
    with Meter(device) as meter:
        run()
    return {"peak_bytes": float(meter.peak), "patches": int(inputs["pixel_values"].shape[0])}


def cache_bytes(cache) -> int:
    """Bytes of the key/value tensors a generate() returned cache holds (transformers' DynamicCache layers)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values)
                   if torch.is_tensor(t))
    return sum(t.numel() * t.element_size() for pair in cache for t in pair if torch.is_tensor(t))


def generate_run(model, device: str, batch_size: int, prompt: int, new: int) -> dict:
    """HF generate: its KV cache (the returned cache's bytes, per token) and its decode rate (the time of `new`
    tokens less the time of one, which is mostly the prefill)."""
    vocab = model.config.text_config.vocab_size
    ids = torch.randint(10, min(vocab, 100_000) - 10, (batch_size, prompt), generator=torch.Generator().manual_seed(1))
    ids = ids.to(device)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = vocab - 1
    kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=False, use_cache=True)
    with torch.no_grad(), compute(device):
        warm_up(device, lambda: model.generate(ids, max_new_tokens=2, min_new_tokens=2, **kwargs))
        one = timed(device, lambda: model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kwargs))
        with Meter(device) as meter:
            out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, return_dict_in_generate=True, **kwargs)
    kv = cache_bytes(out.past_key_values)
    decode_s = max(meter.seconds - one, 1e-9)
    return {"peak_bytes": float(meter.peak), "kv_cache_bytes": float(kv), "cached_tokens": batch_size * (prompt + new - 1),
            "decode_tokens_per_s": batch_size * (new - 1) / decode_s}


def capture(modules: dict, run) -> dict:
    """The (detached) arguments each of `modules` is first called with while `run()` runs."""
    seen, handles = {}, []

    def detach(v):
        if torch.is_tensor(v):
            return v.detach()
        if isinstance(v, tuple) and v and all(torch.is_tensor(t) for t in v):
            return tuple(t.detach() for t in v)
        return v

    for name, module in modules.items():
        def hook(_, args, kwargs, name=name):
            seen.setdefault(name, (tuple(detach(a) for a in args), {k: detach(v) for k, v in kwargs.items()}))
        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def replay_run(module, args: tuple, kwargs: dict, device: str, grad: bool = True) -> dict:
    """One layer (or block) forward and backward, nothing checkpointed: what the recomputed layer holds in
    backward (its saved tensors, its output's gradient, the transients) above its input; with `grad=False`,
    what one layer's no-grad forward holds at once (the scoring forwards)."""
    x = args[0].clone().requires_grad_(grad)
    params = [p for p in module.parameters()]
    for p in params:
        p.grad = torch.zeros_like(p) if grad else None
    def run():
        with compute(device), (contextlib.nullcontext() if grad else torch.no_grad()):
            out = module(x, *args[1:], **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        if grad:
            out.backward(torch.ones_like(out))
            x.grad = None
    warm_up(device, run)
    with Meter(device) as meter:
        run()
    for p in params:
        p.grad = None
    # each weight's gradient is made whole, then added into .grad (FSDP: the unsharded gradient, fsdp_layers)
    weight_grad = max(p.numel() for p in params) * params[0].element_size() if grad else 0
    rows = int(x.shape[:-1].numel())
    return {"peak_bytes": float(meter.peak), "rows": rows, "weight_grad_bytes": float(weight_grad),
            "bytes_per_row": (meter.peak - weight_grad) / rows}


def lm_head_run(model, hidden: torch.Tensor, labels: torch.Tensor, device: str) -> dict:
    """TRL's fused LM head alone (GPU layout: only the scored positions), forward and backward."""
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    weight = model.get_output_embeddings().weight
    h = hidden.clone().requires_grad_(True)
    def run():
        with compute(device):
            logps, _, _, _, _ = ChunkedLogProbFunction.apply(h, weight, None, labels, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE,
                                                             None, 1.0, ("log_probs", "entropy"))
        (-logps.sum()).backward()
        h.grad = None
        weight.grad = None
    warm_up(device, run)
    with Meter(device) as meter:
        run()
    return {"peak_bytes": float(meter.peak), "rows": int(h.shape[0])}


def calibrate(args) -> dict:
    tiny = args.tiny_seq
    shape = dict(layers=args.layers, vision_layers=args.vision_layers or (1 if tiny else None),
                 vocab=args.vocab or (4096 if tiny else None))
    sizes = (64, 16, 16) if tiny else (args.prompt, args.image_tokens, args.response)
    gen = (2, 16, 8) if tiny else (args.gen_batch, args.gen_prompt, args.gen_new)
    results = measure(ARCH[args.backbone], args.device, shape, args.micro_batch, *sizes, gen)
    results["backbone"] = args.backbone
    return derive(results)


def measure(arch: dict, device: str, shape: dict, micro: int, prompt: int, image: int, response: int,
            gen: tuple[int, int, int]) -> dict:
    """Every raw measurement for one architecture (`shape`: layers, vision_layers, vocab cuts)."""
    torch.manual_seed(0)
    results: dict = {"device": device, "layers": shape["layers"], "full_layers": arch["text"]["num_hidden_layers"],
                     "name": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
                     "compute": str(COMPUTE).removeprefix("torch.") if COMPUTE is not None else "weights' dtype"}
    import transformers
    results["transformers"] = transformers.__version__
    if device == "cuda":
        results["total_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / GIB
    results["context_gib"] = context_bytes(device) / GIB

    model = build(arch, device, torch.float32, **shape)
    cfg = model.config
    text_cfg, vis_cfg = cfg.text_config, cfg.vision_config
    h, inter, vocab = text_cfg.hidden_size, text_cfg.intermediate_size, text_cfg.vocab_size
    head_dim = getattr(text_cfg, "head_dim", None) or h // text_cfg.num_attention_heads
    kv = text_cfg.num_key_value_heads * head_dim
    layer_params = sum(p.numel() for p in text_layers(model).layers[0].parameters())
    block_params = sum(p.numel() for p in vision_tower(model).blocks[0].parameters())
    results.update(params=count(model), layer_params=layer_params, vision_block_params=block_params,
                   hidden=h, intermediate=inter, vocab=vocab, kv_dim=kv, vision_hidden=vis_cfg.hidden_size,
                   vision_intermediate=vis_cfg.intermediate_size, vision_depth=vis_cfg.depth,
                   patch=vis_cfg.patch_size)
    guarded(results, "state", lambda: state_run(model, device))

    if COMPUTE is not None:
        model.to(COMPUTE)  # the compute copy FSDP2's mixed precision gathers
    model.train()
    inputs = batch(model, micro, prompt, image, response, device)
    tokens = micro * (prompt + response)
    patches = int(inputs["pixel_values"].shape[0])
    results.update(micro_batch=micro, prompt=prompt, response=response, tokens=tokens, patches=patches,
                   pixel_values_bytes_per_image=inputs["pixel_values"].numel() * 4 / micro)
    lm, tower = text_layers(model), vision_tower(model)
    captured = {}

    def grab():  # the inputs of decoder layer 0, vision block 0 and the LM head, from one no-grad forward
        def run():
            with torch.no_grad(), compute(device):
                out = model.model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
            captured["hidden"] = out.last_hidden_state[:, :-1][inputs["labels"][:, 1:] != -100].detach()
        captured.update(capture({"layer": lm.layers[0], "block": tower.blocks[0]}, run))
        return {"ok": True}
    guarded(results, "capture", grab)
    if ok(results, "capture"):
        guarded(results, "layer_replay", lambda: replay_run(lm.layers[0], *captured["layer"], device))
        guarded(results, "layer_forward_replay", lambda: replay_run(lm.layers[0], *captured["layer"], device, False))
        guarded(results, "vision_block_replay", lambda: replay_run(tower.blocks[0], *captured["block"], device))
        scored = inputs["labels"][:, 1:][inputs["labels"][:, 1:] != -100]
        try:
            import trl.kernels.chunked_logprob  # noqa: F401
            guarded(results, "lm_head_replay", lambda: lm_head_run(model, captured["hidden"], scored, device))
        except ImportError:
            results["lm_head_replay"] = {"error": "trl not installed"}
        captured.clear()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    results["lm_head"] = fuse_lm_head(model)
    n = shape["layers"]
    guarded(results, "train_full", lambda: train_run(model, inputs, device))
    if n >= 2:
        def one_layer():
            with only_layers(lm, "layers", 1):
                return train_run(model, inputs, device)
        guarded(results, "train_one_layer", one_layer)
    guarded(results, "vision", lambda: vision_run(model, inputs, device))
    if vis_cfg.depth >= 2:
        def one_block():
            with only_layers(tower, "blocks", 1):
                return vision_run(model, inputs, device)
        guarded(results, "vision_one_block", one_block)
    guarded(results, "scoring", lambda: train_run(model, inputs, device, grad=False))
    for p in model.parameters():
        p.grad = None
    model.gradient_checkpointing_disable()
    model.eval()
    guarded(results, "generate", lambda: generate_run(model, device, *gen))
    return results


def ok(results: dict, key: str) -> bool:
    return isinstance(results.get(key), dict) and "error" not in results[key]


def derive(r: dict) -> dict:
    """The plan's constants from the raw measurements (left out where a measurement failed or cannot separate
    them), as `r["constants"]`."""
    c = 2 if COMPUTE is not None else 4
    n, tokens, h, kv = r["layers"], r["tokens"], r["hidden"], r["kv_dim"]
    const = {}
    if ok(r, "state"):
        const["state_bytes_per_param"] = r["state"]["bytes_per_param"]
        const["optimizer_step_transient_gib"] = r["state"]["optimizer_step_transient_gib"]
    if ok(r, "train_full") and ok(r, "train_one_layer") and n >= 2:
        per_layer = (r["train_full"]["peak_bytes"] - r["train_one_layer"]["peak_bytes"]) / (n - 1) / tokens
        const["activation_bytes_per_token_per_layer"] = per_layer
        const["activation_bytes_per_token_per_layer_over_hidden"] = per_layer / h
    if ok(r, "vision") and ok(r, "vision_one_block") and r["vision_depth"] >= 2:
        slope = (r["vision"]["peak_bytes"] - r["vision_one_block"]["peak_bytes"]) / (r["vision_depth"] - 1) / r["patches"]
        const["vision_bytes_per_patch_per_block"] = slope
    if ok(r, "layer_replay"):
        const["recompute_bytes_per_token"] = r["layer_replay"]["bytes_per_row"]
        const["recompute_bytes_per_token_over_hidden"] = const["recompute_bytes_per_token"] / h
    if ok(r, "layer_forward_replay"):
        const["forward_bytes_per_token"] = r["layer_forward_replay"]["bytes_per_row"]
    if ok(r, "vision_block_replay"):
        const["vision_recompute_bytes_per_patch"] = r["vision_block_replay"]["bytes_per_row"]
    if ok(r, "lm_head_replay"):
        const["lm_head_gib"] = r["lm_head_replay"]["peak_bytes"] / GIB
        const["lm_head_scored_tokens"] = r["lm_head_replay"]["rows"]
    if ok(r, "scoring"):
        const["scoring_bytes_per_token"] = r["scoring"]["peak_bytes"] / tokens
    if ok(r, "generate"):
        g = r["generate"]
        const["kv_bytes_per_token_per_layer"] = g["kv_cache_bytes"] / g["cached_tokens"] / n
        const["generate_peak_over_kv"] = g["peak_bytes"] / max(g["kv_cache_bytes"], 1.0)
        const["kv_bytes_plan"] = 2 * kv * c
        const["hf_decode_tokens_per_s"] = g["decode_tokens_per_s"]
        # decode is bound by reading the weights: full depth reads (L / n) times the decoder layers' bytes
        full = r["full_layers"]
        lm_head = r["vocab"] * h
        const["hf_decode_tokens_per_s_full_depth"] = g["decode_tokens_per_s"] * (n * r["layer_params"] + lm_head) \
            / (full * r["layer_params"] + lm_head)
    if ok(r, "train_full"):
        flops = 6 * (tokens * n * r["layer_params"] + r["micro_batch"] * r["response"] * r["vocab"] * h
                     + r["patches"] * r["vision_depth"] * r["vision_block_params"])
        const["achieved_tflops"] = flops / r["train_full"]["seconds"] / 1e12
        if ok(r, "train_one_layer") and n >= 2:
            per_layer_s = (r["train_full"]["seconds"] - r["train_one_layer"]["seconds"]) / (n - 1)
            const["decoder_layer_tflops"] = 6 * tokens * r["layer_params"] / max(per_layer_s, 1e-9) / 1e12
        peak = next((v for k, v in DENSE_BF16.items() if k in r["name"]), None)
        const["mfu"] = const["achieved_tflops"] * 1e12 / peak if peak else None
        if peak and "decoder_layer_tflops" in const:
            const["decoder_layer_mfu"] = const["decoder_layer_tflops"] * 1e12 / peak
    const["context_gib"] = r["context_gib"]
    const["pixel_values_bytes_per_image"] = r["pixel_values_bytes_per_image"]
    r["constants"] = const
    return r


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=sorted(ARCH), default="qwen2_5_vl_7b")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers built (per-layer figures extrapolate)")
    parser.add_argument("--vision-layers", type=int, default=None, help="vision blocks built (default: all)")
    parser.add_argument("--vocab", type=int, default=None, help="cut the vocabulary (default: the real one)")
    parser.add_argument("--micro-batch", type=int, default=4,
                        help="sequences per micro-batch (the recipe's rl.micro_batch_size)")
    parser.add_argument("--prompt", type=int, default=2048, help="prompt tokens, image included")
    parser.add_argument("--image-tokens", type=int, default=1024, help="merged image tokens per prompt")
    parser.add_argument("--response", type=int, default=2048, help="response tokens (scored by the loss)")
    parser.add_argument("--gen-batch", type=int, default=64)
    parser.add_argument("--gen-prompt", type=int, default=512)
    parser.add_argument("--gen-new", type=int, default=256)
    parser.add_argument("--tiny-seq", action="store_true",
                        help="a CPU smoke run: 64-token prompts (16 image tokens), 16-token responses, vocab 4096, "
                             "one vision block; the figures only show the script works")
    args = parser.parse_args(argv)
    if args.layers < 1:
        parser.error("--layers must be at least 1")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 16)))
    results = calibrate(args)
    print(json.dumps(results, default=float), flush=True)


if __name__ == "__main__":
    sys.exit(main())
