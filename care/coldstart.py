"""Cold start: the policy RL starts from, chosen by the `cold_start=` group (conf/cold_start/).

- `synthetic`: SFT on demonstrations of the synthetic task. A fraction of them are reflection traces
  (the structured repair cue before </think>, then the verified answer), so that repairing a failed
  attempt is something the policy has seen when RGR asks for it. `cold_start.reflection_loss=after_cue`
  trains only what follows the cue in those traces.
- `sft`: SFT on `cold_start.path` (TRL conversational or LLaVA/ShareGPT files, care.sft_files), the
  paper's cold start on Vision-R1-cold.
- `checkpoint`: `cold_start.checkpoint`, a cold-started policy made elsewhere, used as is.
- `none`: RL starts from the backbone.

A built cold start is cached under a hash of everything that shapes it (the backbone's content,
settings, its own `cold_start.seed` and, for `sft`, the bytes of the data files and of the images they
name), so every RL run of a sweep reuses one: the RL `seed` is not part of it (cold start once, RL many times). A file lock makes the first
job build it while the others wait and then reuse it, instead of all building the same thing.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import torch

from care.cache import build_once
from care.config import Config
from care.data.schema import prompt_text
from care.data.synthetic import demonstration
from care.hashing import config_hash
from care.models import load_backbone
from care.repair import CUE_TEMPLATES

log = logging.getLogger(__name__)

# the settings that shape each kind of cold start (the others do not enter its cache key)
TRAINING_KEYS = ("epochs", "learning_rate", "batch_size", "micro_batch_size", "warmup_ratio", "max_length")
SYNTHETIC_KEYS = ("num_demos", "reflection_fraction", "answer_slip", "reflection_trace", "reflection_loss")


def cold_start_key(cfg: Config, backbone_id, data_digest: str | None = None) -> str:
    """Hash of what shapes the cold start: backbone, training settings, `cold_start.seed`, and its data
    (never the RL seed: every RL seed of a sweep starts from the same cold start).

    `backbone_id` is `backbone_identity`'s (the weights' content, never where they lie, so a copied or
    read-only cache keeps its keys). `synthetic`: the synthetic task's generator settings; `sft`:
    `data_digest`, the digest of the SFT files and the images they reference (care.sft_files.content_digest).
    """
    cs = cfg.cold_start
    settings = {key: getattr(cs, key) for key in TRAINING_KEYS}
    if cs.name == "synthetic":
        settings |= {key: getattr(cs, key) for key in SYNTHETIC_KEYS}
        data = (cfg.data.name, cfg.data.seed, cfg.data.grid, cfg.data.cell_px)
    else:
        data = data_digest
    pixels = (cfg.backbone.min_pixels, cfg.backbone.max_pixels)  # the image tokens it trains on
    return config_hash("cold_start/v6", cs.name, cfg.backbone.name, backbone_id, pixels, data, settings, cs.seed)


def backbone_identity(cfg: Config, backbone_dir: str):
    """What identifies the backbone's weights wherever they lie: a tiny build by its builder's key (its
    architecture and BUILD_VERSION; the weights come from a fixed seed), real weights (`backbone.path`,
    a hub snapshot) by their files' content digests (care.hashing.tree_digest, memoised per machine)."""
    if cfg.backbone.tiny is not None and not cfg.backbone.path:
        from care.models.tiny import build_key
        return ("tiny", build_key(cfg.backbone))
    from care.hashing import tree_digest
    return tree_digest(backbone_dir)


def cold_start_dir(cfg: Config, backbone_dir: str, cache_dir: Path) -> Path | None:
    """Where this config's cold start is (or will be) built in the cache; None when nothing is built
    (`cold_start=none` or `checkpoint`). Digests the SFT files, their images and the backbone's files
    (memoised), loads no weights."""
    name = cfg.cold_start.name
    if name in ("none", "checkpoint"):
        return None
    data_digest = None
    if name == "sft":
        from care.sft_files import content_digest
        data_digest = content_digest(cfg.cold_start.path)
    key = cold_start_key(cfg, backbone_identity(cfg, backbone_dir), data_digest)
    return Path(cache_dir) / "cold_start" / f"{cfg.backbone.name}-{name}-{key}"


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


def check_cold_start(cfg: Config) -> None:
    """Cheap checks that fail before any work is queued (the full SFT data check runs before its build).

    A choice without its key is refused here, not at composition, so task=plan composes without data.
    """
    cs = cfg.cold_start
    if cs.name == "synthetic" and cfg.data.name != "synthetic":
        raise ValueError(f"cold_start=synthetic builds demonstrations of the synthetic task, but data.name="
                         f"{cfg.data.name!r}; choose cold_start=sft (with cold_start.path), checkpoint or none")
    if cs.name == "sft" and not cs.path:
        raise ValueError("cold_start=sft needs cold_start.path (a file or folder of SFT conversations, e.g. a "
                         "local copy of Vision-R1-cold), or data_root=DIR holding DIR/vision_r1_cold; "
                         "got cold_start.path=None")
    if cs.name == "checkpoint" and not cs.checkpoint:
        raise ValueError("cold_start=checkpoint needs cold_start.checkpoint=/dir/of/a/cold-started/policy; "
                         "got cold_start.checkpoint=None")
    if cs.name == "sft":
        from care.sft_files import data_files
        data_files(cs.path)
    if cs.name == "checkpoint" and not (Path(cs.checkpoint).expanduser() / "config.json").is_file():
        raise ValueError(f"cold_start.checkpoint={cs.checkpoint!r} holds no model (no config.json there); "
                         "point it at a saved cold-started policy (weights + processor)")


def cold_start_policy(cfg: Config, train_records, backbone_dir: str, cache_dir: Path) -> str:
    """The directory RL starts from, as `cold_start.name` says; builds (once per key) what needs building."""
    from care.distributed import is_main_process

    check_cold_start(cfg)
    if cfg.cold_start.name == "none":
        return backbone_dir
    if cfg.cold_start.name == "checkpoint":
        return str(Path(cfg.cold_start.checkpoint).expanduser().resolve())
    out_dir = cold_start_dir(cfg, backbone_dir, cache_dir)
    built = build_once(out_dir, lambda: sft_trainer(cfg, train_records, backbone_dir, cache_dir, out_dir), publish)
    if is_main_process():  # a kill between publish's rename and its clean-up left them (tens of GB at 7B)
        shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)
    return str(built)


def checkpoint_dir(out_dir: Path) -> Path:
    """Where the cold start being built into `out_dir` keeps its Trainer checkpoints: beside it, in the cache,
    so a killed or requeued build of the same key resumes from them."""
    return out_dir.parent / f".{out_dir.name}.checkpoints"


def publish(out_dir: Path, staging: Path) -> None:
    """Rank 0: the folder every rank saved into (weights and processor) becomes `out_dir` whole; its
    checkpoints are not needed any more."""
    os.rename(staging, out_dir)
    shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)


def sft_trainer(cfg: Config, train_records, backbone_dir: str, cache_dir: Path, out_dir: Path):
    """Fine-tune the backbone on the cold start's rows, sharded as `parallel=` says (a 7B model's
    AdamW state does not fit one GPU); every rank saves the whole model into a staging folder beside
    `out_dir` (rank 0 writes, the processor with the weights). Returns the staging folder.

    Checkpoints every `cold_start.save_steps` optimizer steps into `checkpoint_dir(out_dir)` (the last
    two kept), and resumes from the newest complete one there: a build killed, preempted or requeued at
    its time limit (submitit requeues the job, which starts over and comes back here) loses at most
    `save_steps` steps, as RL does.
    """
    from datasets import Dataset, Image, List
    from trl import SFTConfig, SFTTrainer

    from care.checkpoints import ResumableTrainer, resume_point
    from care.console import SFT_FIELDS, quiet_trainer
    from care.distributed import is_main_process, world_size
    from care.sharding import ShardingCheck, save_whole_model
    from care.trainer.build import device_args, parallel_args

    class ColdStartTrainer(ResumableTrainer, SFTTrainer):
        """TRL's SFTTrainer, resuming every weight of a checkpoint (care.checkpoints.ResumableTrainer)."""

    cs = cfg.cold_start
    if cs.name == "sft":  # read and check every record and image before loading any weights
        from care.sft_files import load_sft_rows
        dataset = Dataset.from_list(load_sft_rows(cs.path)).cast_column("images", List(Image()))
    else:
        dataset = Dataset.from_list(demonstration_rows(train_records, cs.num_demos, cs.reflection_fraction,
                                                       cs.answer_slip, cs.seed, cs.reflection_trace))
    model, processor, _ = load_backbone(cfg.backbone, cache_dir, source=backbone_dir)
    per_device, accumulation = batch_layout(cs.batch_size, cs.micro_batch_size, world_size())
    checkpoints = checkpoint_dir(out_dir)
    args = SFTConfig(  # the batch is split over processes, so its size does not depend on the job's layout
        output_dir=str(checkpoints), per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation,
        num_train_epochs=cs.epochs, learning_rate=cs.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=cs.warmup_ratio, logging_steps=10, report_to=[],
        save_strategy="steps", save_steps=cs.save_steps, save_total_limit=2, save_only_model=False,
        **device_args(cfg), seed=cs.seed, completion_only_loss=True, max_length=cs.max_length,
        dataloader_num_workers=0, disable_tqdm=True, **parallel_args(cfg),
    )
    sharding_check = ShardingCheck(cfg.parallel.strategy, world_size(), cfg.parallel.activation_checkpointing)
    trainer = quiet_trainer(ColdStartTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                                             callbacks=[sharding_check]), "cold start", SFT_FIELDS)
    if cs.name == "synthetic" and cs.reflection_loss == "after_cue":  # else TRL's collator trains the whole completion
        trainer.data_collator = mask_after_cue(trainer.data_collator, processor.tokenizer, CUE_TEMPLATES["structured"])
    resume_from = resume_point(checkpoints)  # rank 0 picks; every rank resumes the same one
    if resume_from is not None:
        log.info("resuming the cold start from %s", resume_from)
    trainer.train(resume_from_checkpoint=resume_from)
    log.info("the cold start trained %d optimizer steps", trainer.state.global_step)
    staging = out_dir.parent / f".{out_dir.name}.staging"
    if is_main_process():  # what a builder killed mid-save left
        shutil.rmtree(staging, ignore_errors=True)
    save_whole_model(trainer, staging)
    return staging


def batch_layout(batch_size: int, micro_batch_size: int | None, processes: int) -> tuple[int, int]:
    """(per-process batch, gradient accumulation steps) for a global batch of `batch_size`.

    Without `micro_batch_size` the batch is split over processes in one step (as the toy always did);
    with it, accumulation makes up the rest: Vision-R1's 32 = 8 GPUs x 1 x 4 steps.
    """
    if micro_batch_size is None:
        return max(1, batch_size // processes), 1
    accumulation, left = divmod(batch_size, micro_batch_size * processes)
    if left or not accumulation:
        raise ValueError(f"cold_start.batch_size={batch_size} is not a multiple of cold_start.micro_batch_size="
                         f"{micro_batch_size} x {processes} processes")
    return micro_batch_size, accumulation
