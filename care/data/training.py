"""A training run's data: the `data` config group -> training prompts, a held-out slice, and their counts.

Synthetic boards are generated split by split (disjoint by construction). A real training set goes
    load (data.path, else the hub id) -> dedupe -> drop prompts over rl.max_prompt_length
    -> seeded shuffle (data.seed) -> hold out data.eval_size -> cap training at data.train_size,
and every count in `TrainingData.counts` is taken after its step. The synthetic prompts pass the same
prompt-length filter, in generation order, so the default run trains on exactly what it always did.
Any failure names the config key and value that caused it, and comes before a model is touched:
run.py's preflight prepares the data once and `prepare` hands the same object to the training job.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field

from PIL import Image

from care.config import Config, DataConfig
from care.data.schema import Record, render_prompt


@dataclass
class TrainingData:
    train: list[Record]
    held_out: list[Record]
    counts: dict = field(default_factory=dict)  # what final.json and run.json record under "data"


def image_token_count(processor, image: Image.Image, min_pixels: int, max_pixels: int) -> int:
    """Tokens the image becomes after the processor resizes it into [min_pixels, max_pixels]."""
    image_processor = processor.image_processor
    width, height = image.size  # read from the header: no pixels are decoded
    patches = image_processor.get_number_of_image_patches(height, width, {"min_pixels": min_pixels,
                                                                         "max_pixels": max_pixels})
    return patches // image_processor.merge_size ** 2


def prompt_token_counts(processor, records: list[Record], min_pixels: int, max_pixels: int) -> list[int]:
    """Each record's prompt length in tokens as the policy sees it: the chat-templated prompt with every
    image placeholder expanded to its image's tokens at the configured pixel caps."""
    if not records:
        return []
    texts = [render_prompt(processor, record) for record in records]
    ids = processor.tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(tokens) - len(record.images) + sum(image_token_count(processor, image, min_pixels, max_pixels)
                                                    for image in record.images)
            for tokens, record in zip(ids, records, strict=True)]


def _where(data: DataConfig) -> str:
    return f"data={data.name} data.path={data.path!r}" if data.path else f"data={data.name} (hub, data.path unset)"


def _fits(records: list[Record], lengths: list[int], limit: int | None) -> list[Record]:
    return records if limit is None else [r for r, n in zip(records, lengths, strict=True) if n <= limit]


def _by_source(records: list[Record]) -> dict[str, int]:
    return dict(sorted(Counter(r.source for r in records).items()))


def _load_real(data: DataConfig) -> tuple[list[Record], int]:
    """(records after dedupe, duplicates removed); read errors are re-raised naming data.path."""
    from care.data.adapters import DatasetUnavailable, MalformedRow, dedupe, get_spec
    from care.data.loading import load_records

    try:
        records = load_records(data.name, path=data.path)
        if not get_spec(data.name).components:  # a union is deduplicated as it is loaded
            records = dedupe(records)
    except DatasetUnavailable as err:  # its message already names data.path and the path or hub id
        raise DatasetUnavailable(f"data={data.name}: {err}") from err
    except (MalformedRow, OSError) as err:  # a broken row or an image whose pixels do not decode
        raise ValueError(f"{_where(data)}: cannot use this copy of {data.name}: {err}") from err
    duplicates = sum(len(r.meta.get("duplicate_ids", ())) for r in records)
    return records, duplicates


def split_training_data(cfg: Config, processor) -> TrainingData:
    """The train and held-out records the config describes (see the module docstring)."""
    data, backbone, limit = cfg.data, cfg.backbone, cfg.rl.max_prompt_length

    def lengths(records: list[Record]) -> list[int]:
        return prompt_token_counts(processor, records, backbone.min_pixels, backbone.max_pixels)

    if data.name == "synthetic":
        from care.data.synthetic import make_splits

        generated, held_out = make_splits(data.seed, data.train_size, data.eval_size, data.grid, data.cell_px)
        train = _fits(generated, lengths(generated), limit)
        held_out = _fits(held_out, lengths(held_out), limit)
        loaded, duplicates, overlong = len(generated) + len(held_out), 0, len(generated) - len(train)
    else:
        records, duplicates = _load_real(data)
        loaded = len(records) + duplicates
        kept = _fits(records, lengths(records), limit)
        overlong = len(records) - len(kept)
        if not kept:
            raise ValueError(f"{_where(data)}: rl.max_prompt_length={limit} drops all "
                             f"{len(records)} prompts (chat template + image tokens at backbone.max_pixels="
                             f"{backbone.max_pixels}); raise rl.max_prompt_length or lower backbone.max_pixels")
        random.Random(f"care-data/{data.seed}").shuffle(kept)
        if len(kept) <= data.eval_size:
            raise ValueError(f"{_where(data)}: data.eval_size={data.eval_size} would hold out all {len(kept)} "
                             "prompts left after deduplication and the length filter, leaving none to train on; "
                             "lower data.eval_size")
        held_out, rest = kept[:data.eval_size], kept[data.eval_size:]
        train = rest if data.train_size is None else rest[:data.train_size]
    if not train:
        raise ValueError(f"{_where(data)}: no training prompt is left after the length filter "
                         f"(rl.max_prompt_length={limit})")
    counts = {"train": len(train), "held_out": len(held_out), "duplicates_removed": duplicates,
              "filtered_overlong": overlong, "loaded": loaded, "max_prompt_length": limit,
              "train_by_source": _by_source(train), "held_out_by_source": _by_source(held_out)}
    return TrainingData(train, held_out, counts)


_PREPARED: dict[str, TrainingData] = {}


def prepare(cfg: Config, processor=None) -> TrainingData:
    """`split_training_data`, once per process and configuration: preflight prepares it (and fails
    there on bad data), the training job reuses it. Without `processor` the backbone's is loaded."""
    import json

    # everything split_training_data reads: the data, the backbone (processor, pixel caps), the limit
    key = json.dumps([asdict(cfg.data), asdict(cfg.backbone), cfg.cache_dir, cfg.rl.max_prompt_length],
                     sort_keys=True, default=str)
    if key not in _PREPARED:
        if processor is None:
            from pathlib import Path

            from care.models import load_processor, resolve_backbone

            source = resolve_backbone(cfg.backbone, Path(cfg.cache_dir).expanduser().resolve())
            processor = load_processor(source, cfg.backbone.family, cfg.backbone.min_pixels, cfg.backbone.max_pixels)
        _PREPARED.clear()  # one run per process: keep only the newest
        _PREPARED[key] = split_training_data(cfg, processor)
    return _PREPARED[key]
