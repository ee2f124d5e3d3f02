"""Stands in for vLLM in the evaluation child processes of the tests (put on PYTHONPATH).

It records what the suite asks of it, one JSON line per engine and per generate call, in the file
named by FAKE_VLLM_LOG, with the process's view of its GPUs and distributed environment, and
answers every prompt with one fixed, well-formed response.
"""

import json
import os

RESPONSE = "<think>x</think><answer>A</answer>"


def _record(event: dict) -> None:
    with open(os.environ["FAKE_VLLM_LOG"], "a") as log:
        log.write(json.dumps({"pid": os.getpid(), **event}) + "\n")


def SamplingParams(**kwargs):  # noqa: N802 - vLLM's name
    return kwargs


class _Output:
    def __init__(self, text: str):
        self.outputs = [type("Completion", (), {"text": text})()]


class LLM:
    def __init__(self, **kwargs):
        _record({"event": "init", "kwargs": kwargs, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                 "distributed_env": {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "MASTER_PORT") if k in os.environ}})

    def generate(self, requests, params, use_tqdm=True):
        _record({"event": "generate", "prompts": [r["prompt"] for r in requests],
                 "images": [len(r.get("multi_modal_data", {}).get("image", [])) for r in requests], "params": params})
        return [_Output(RESPONSE) for _ in requests]
