"""Cold-start SFT: teach the response format and the task's reasoning before RL.

As in the paper's cold start, the policy first imitates demonstrations. A fraction of them
are reflection traces (the structured repair cue before </think>, then the verified answer)
so that repairing a failed attempt is something the policy has seen when RGR asks for it.
`cold_start.reflection_loss=after_cue` trains only what follows the cue in those traces.
The result is cached under a hash of everything that shapes it; later runs reuse it.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
from pathlib import Path

import torch

from care.atomic import save_pretrained_atomic
from care.config import Config
from care.data.schema import prompt_text
from care.data.synthetic import demonstration
from care.hashing import config_hash
from care.models import load_backbone
from care.repair import CUE_TEMPLATES

log = logging.getLogger(__name__)


def cold_start_key(cfg: Config, backbone_source: str) -> str:
    data = (cfg.data.name, cfg.data.seed, cfg.data.grid, cfg.data.cell_px)
    return config_hash("cold_start/v3", cfg.backbone.name, backbone_source, data, cfg.cold_start, cfg.seed)


def demonstration_rows(records, num_demos: int, reflection_fraction: float, answer_slip: float,
                       seed: int, reflection_trace: str = "rederive") -> list[dict]:
    rng = random.Random(f"care-cold-start/{seed}")
    rows = []
    for i in range(num_demos):
        record = records[i % len(records)]
        reflect = rng.random() < reflection_fraction
        slip = not reflect and rng.random() < answer_slip
        response = demonstration(record, rng, reflect=reflect, slip=slip, trace=reflection_trace)
        rows.append({"images": record.images,
                     "prompt": [{"role": "user", "content": prompt_text(record)}],
                     "completion": [{"role": "assistant", "content": response}]})
    return rows


def mask_through_cue(labels: torch.Tensor, input_ids: torch.Tensor, cue_end: list[int], is_blank) -> torch.Tensor:
    """`labels` with everything up to the last `cue_end` token run (and the blanks after it) set to -100.

    Rows without the cue are left as they are; `is_blank(token_id)` says which tokens after the
    cue are its own trailing whitespace.
    """
    labels = labels.clone()
    width, n = input_ids.size(1), len(cue_end)
    if width < n:
        return labels
    pattern = torch.tensor(cue_end, dtype=input_ids.dtype)
    for row in range(input_ids.size(0)):
        hits = (input_ids[row].unfold(0, n, 1) == pattern).all(dim=1).nonzero()
        if not hits.numel():
            continue
        end = int(hits[-1]) + n
        while end < width and is_blank(int(input_ids[row, end])):
            end += 1
        labels[row, :end] = -100
    return labels


def mask_after_cue(collator, tokenizer, cue: str):
    """`collator` (TRL's), with the failed attempt and cue of reflection traces out of the loss.

    A reflection trace is a failed response, the repair cue, then the verified answer. Training on
    the failed part would teach the policy to fail; only what follows the cue is the repair.
    """
    cue_end = tokenizer.encode(cue.rstrip().rsplit("\n", 1)[-1], add_special_tokens=False)

    def is_blank(token_id: int) -> bool:
        return not tokenizer.decode([token_id]).strip()

    def collate(examples):
        batch = collator(examples)
        batch["labels"] = mask_through_cue(batch["labels"], batch["input_ids"], cue_end, is_blank)
        return batch

    return collate


def run_cold_start(cfg: Config, train_records, backbone_source: str, cache_dir: Path) -> Path:
    """A directory with the cold-started policy (weights + processor); built once per key."""
    from care.distributed import is_main_process, main_process_decides, wait_for_everyone, world_size

    out_dir = cache_dir / "cold_start" / f"{cfg.backbone.name}-{cold_start_key(cfg, backbone_source)}"
    # every process must agree: they either all reuse the cache or all train (DDP) together
    if main_process_decides((out_dir / "config.json").exists()):
        log.info("cold start: reusing %s", out_dir)
        return out_dir
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from care.trainer.build import device_args

    model, processor, _ = load_backbone(cfg.backbone, cache_dir, source=backbone_source)
    rows = demonstration_rows(train_records, cfg.cold_start.num_demos, cfg.cold_start.reflection_fraction,
                              cfg.cold_start.answer_slip, cfg.seed, cfg.cold_start.reflection_trace)
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".cold-start-"))
    args = SFTConfig(  # the batch is split over processes, so its size does not depend on the job's layout
        output_dir=str(scratch), per_device_train_batch_size=max(1, cfg.cold_start.batch_size // world_size()),
        num_train_epochs=cfg.cold_start.epochs, learning_rate=cfg.cold_start.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=10, save_strategy="no", report_to=[],
        **device_args(cfg), seed=cfg.seed, completion_only_loss=True, max_length=None,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor)
    if cfg.cold_start.reflection_loss == "after_cue":  # otherwise TRL's collator trains the whole completion
        trainer.data_collator = mask_after_cue(trainer.data_collator, processor.tokenizer, CUE_TEMPLATES["structured"])
    trainer.train()
    if is_main_process():
        save_pretrained_atomic(out_dir, trainer.model, processor)
    wait_for_everyone()  # the others read what rank 0 saved
    shutil.rmtree(scratch, ignore_errors=True)
    return out_dir
