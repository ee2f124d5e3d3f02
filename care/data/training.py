"""A training run's data: the `data` config group -> training prompts, a held-out slice, and their counts.

Synthetic boards are generated split by split (disjoint by construction). A real training set goes
    load (data.path, else the hub id; ChartQA's data.chartqa_splits, keeping data.chartqa_subset's rows and
    counting the others per source as "subset_filtered"), checking every row (care.data.rows: bad rows are
    counted per source and reason, and more than data.max_dropped_fraction of them fails the run) -> dedupe
    -> drop prompts over rl.max_prompt_length (more than data.max_overlong_fraction fails)
    -> seeded shuffle (data.seed) -> hold out data.eval_size -> train on data.train_size,
and every count in `TrainingData.counts` is taken after its step. Counts are contracts: asking for
more prompts than are left fails (unless data.allow_fewer or data.train_size=null, all of them);
data.max_train_size is a preset's cap (scale=toy), which only ever lowers the count. The synthetic prompts pass the same
prompt-length filter, in generation order, so the default run trains on exactly what it always did.
Any failure names the config key and value that caused it, and comes before a model is touched:
run.py's preflight prepares the data once and `prepare` hands the same object to the training job.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field

from PIL import Image

from care.config import Config, DataConfig
from care.data.rows import DropReport, escape_control_tokens
from care.data.schema import Record, render_prompt

log = logging.getLogger(__name__)


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


def selections(data: DataConfig) -> dict:
    """The rows of each training set the config picks (care.data.adapters.Selection): ChartQA's splits and
    subset; the other sets read their train split whole."""
    from care.data.adapters import Selection

    return {"chartqa": Selection(tuple(data.chartqa_splits), data.chartqa_subset, "data.chartqa_splits",
                                 "data.chartqa_subset")}


def _load_real(data: DataConfig) -> tuple[list[Record], int, DropReport]:
    """(records after dedupe, duplicates removed, what was dropped); raises naming data.path and, when
    more rows are bad than data.max_dropped_fraction allows, the counts and the first bad row of each kind."""
    from care.data.adapters import DatasetUnavailable, dedupe, get_spec
    from care.data.loading import load_records

    report = DropReport()
    try:
        records = load_records(data.name, path=data.path, report=report, selections=selections(data))
        if not get_spec(data.name).components:  # a union is deduplicated as it is loaded
            records = dedupe(records)
    except DatasetUnavailable as err:  # its message already names data.path and the path or hub id
        raise DatasetUnavailable(f"data={data.name}: {err}") from err
    except OSError as err:
        raise ValueError(f"{_where(data)}: cannot use this copy of {data.name}: {err}") from err
    rows, dropped = report.total_rows, report.total_dropped
    if rows == 0:
        filtered = sum(report.filtered.values())
        subset = (f" of data.chartqa_subset={data.chartqa_subset!r} in data.chartqa_splits={list(data.chartqa_splits)}"
                  f" ({filtered} of other subsets)" if filtered else "")
        raise ValueError(f"{_where(data)}: the data holds no rows{subset}")
    if dropped > data.max_dropped_fraction * rows:
        allow = "allows none" if data.max_dropped_fraction == 0 else f"allows {data.max_dropped_fraction:g}"
        raise ValueError(f"{_where(data)}: {dropped} of {rows} rows are bad ({report.summary()}); "
                         f"data.max_dropped_fraction={data.max_dropped_fraction:g} {allow}. Fix those rows, or train "
                         f"without them with data.max_dropped_fraction={_fraction_allowing(dropped, rows)}")
    if dropped:
        log.warning("%s: dropped %d of %d rows (%s)", _where(data), dropped, rows, report.summary())
    duplicates = sum(len(r.meta.get("duplicate_ids", ())) for r in records)
    return records, duplicates, report


def _fraction_allowing(n: int, total: int) -> str:
    """The smallest round fraction >= n / total, as a user would type it."""
    for digits in range(2, 7):
        value = math.ceil(n / total * 10 ** digits) / 10 ** digits
        if value * total >= n:
            return f"{value:g}"
    return "1"


def _train_count(data: DataConfig, available: int) -> int:
    """How many of `available` prompts to train on: all when data.train_size is None, else data.train_size
    (fewer is an error unless data.allow_fewer); a preset's data.max_train_size only ever lowers it."""
    cap = data.max_train_size or available
    if data.train_size is None:
        return min(available, cap)
    wanted = min(data.train_size, cap) if data.max_train_size else data.train_size
    if available < wanted and not data.allow_fewer:
        raise ValueError(f"{_where(data)}: data.train_size={data.train_size} asks for more training prompts than the "
                         f"{available} left after bad rows, deduplication, the length filter and the data.eval_size="
                         f"{data.eval_size} hold-out; set data.train_size={available} (or null: all of them), or "
                         "data.allow_fewer=true to train on what is left")
    return min(wanted, available)


def split_training_data(cfg: Config, processor) -> TrainingData:
    """The train and held-out records the config describes (see the module docstring)."""
    data, backbone, limit = cfg.data, cfg.backbone, cfg.rl.max_prompt_length

    def lengths(records: list[Record]) -> list[int]:
        return prompt_token_counts(processor, records, backbone.min_pixels, backbone.max_pixels)

    quality: dict = {"dropped": {}, "escaped": {}, "loaded_by_source": {}, "subset_filtered": {}}
    if data.name == "synthetic":
        from care.data.synthetic import make_splits

        size = data.train_size if data.max_train_size is None else min(data.train_size, data.max_train_size)
        generated, held_out = make_splits(data.seed, size, data.eval_size, data.grid, data.cell_px)
        train = _fits(generated, lengths(generated), limit)
        held_out = _fits(held_out, lengths(held_out), limit)
        loaded, duplicates, overlong = len(generated) + len(held_out), 0, len(generated) - len(train)
        quality["loaded_by_source"] = _by_source(generated + held_out)
    else:
        records, duplicates, report = _load_real(data)
        # per source: rows read and checked, and rows of another ChartQA subset left out (not bad data)
        quality = {**report.as_counts(), "loaded_by_source": dict(sorted(report.rows.items())),
                   "subset_filtered": dict(sorted(report.filtered.items()))}
        escaped = _escape_tokenizer_controls(records, processor)
        if escaped:
            quality["escaped"].setdefault("all", {})["tokenizer_special_token_escaped"] = escaped
        loaded = report.total_rows
        kept = _fits(records, lengths(records), limit)
        overlong = len(records) - len(kept)
        if overlong > data.max_overlong_fraction * len(records):
            raise ValueError(f"{_where(data)}: {overlong} of {len(records)} prompts are longer than "
                             f"rl.max_prompt_length={limit} tokens (chat template + image tokens at backbone.max_pixels"
                             f"={backbone.max_pixels}), over the data.max_overlong_fraction="
                             f"{data.max_overlong_fraction:g} that may be filtered out; raise rl.max_prompt_length, "
                             f"lower backbone.max_pixels, or raise data.max_overlong_fraction")
        random.Random(f"care-data/{data.seed}").shuffle(kept)
        if len(kept) <= data.eval_size:
            raise ValueError(f"{_where(data)}: data.eval_size={data.eval_size} would hold out all {len(kept)} "
                             f"prompts left of {loaded} rows (after {report.total_dropped} bad rows, {duplicates} "
                             f"duplicates and {overlong} over rl.max_prompt_length), leaving none to train on; lower "
                             "data.eval_size")
        held_out, rest = kept[:data.eval_size], kept[data.eval_size:]
        train = rest[:_train_count(data, len(rest))]
    if not train:
        raise ValueError(f"{_where(data)}: no training prompt is left after the length filter "
                         f"(rl.max_prompt_length={limit})")
    counts = {"train": len(train), "held_out": len(held_out), "duplicates_removed": duplicates,
              "filtered_overlong": overlong, "loaded": loaded, "max_prompt_length": limit,
              "train_by_source": _by_source(train), "held_out_by_source": _by_source(held_out), **quality}
    return TrainingData(train, held_out, counts)


def _escape_tokenizer_controls(records: list[Record], processor) -> int:
    """Escape the tokenizer's own special tokens in user text (care.data.rows escaped the `<|...|>` ones
    at load; a backbone may have others, like `</s>`); returns how many were escaped."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokens = tuple(t for t in getattr(tokenizer, "all_special_tokens", ()) if isinstance(t, str) and len(t) > 1)
    total = 0
    for record in records:
        record.question, n = escape_control_tokens(record.question, tokens)
        total += n
        if record.choices:
            escaped = [escape_control_tokens(choice, tokens) for choice in record.choices]
            record.choices = [choice for choice, _ in escaped]
            total += sum(n for _, n in escaped)
    return total


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
