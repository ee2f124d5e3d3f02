"""Cold start: which parts of a reflection trace the SFT loss sees."""

import torch

from care.coldstart import demonstration_rows, mask_after_cue, mask_through_cue
from care.config import Config
from care.data.synthetic import make_splits
from care.models import load_backbone
from care.repair import CUE_TEMPLATES

BLANK = 0  # the token id that stands for whitespace in the hand-made rows below


def test_mask_through_cue_hides_up_to_the_last_cue_and_its_trailing_blanks():
    ids = torch.tensor([[5, 7, 8, 9, 0, 0, 3, 4],     # cue [8, 9], two blanks, then the answer
                        [5, 8, 9, 6, 8, 9, 3, 4],     # two cues: the last one counts
                        [5, 6, 7, 3, 4, 4, 4, 4]])    # no cue: a plain demonstration
    labels = ids.clone()
    masked = mask_through_cue(labels, ids, [8, 9], is_blank=lambda t: t == BLANK)
    assert masked[0].tolist() == [-100] * 6 + [3, 4]
    assert masked[1].tolist() == [-100] * 6 + [3, 4]
    assert masked[2].tolist() == ids[2].tolist()
    assert labels.tolist() == ids.tolist()  # the input is not modified


def test_after_cue_collator_trains_only_the_repair_of_a_reflection_trace(cache_dir):
    cfg = Config()
    _, processor, _ = load_backbone(cfg.backbone, cache_dir)
    train, _ = make_splits(seed=0, train_size=40, eval_size=2)
    rows = demonstration_rows(train, 16, reflection_fraction=0.5, answer_slip=0.0, seed=0,
                              reflection_trace="mislocate")
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    trls = DataCollatorForVisionLanguageModeling(processor=processor, max_length=None, completion_only_loss=True)
    whole = _trained_text(processor, rows, trls)
    after = _trained_text(processor, rows, mask_after_cue(trls, processor.tokenizer, CUE_TEMPLATES["structured"]))
    reflections = 0
    for row, full, kept in zip(rows, whole, after, strict=True):
        response = row["completion"][0]["content"]
        answer = response.split("<answer>")[1]
        if "<repair>" in response:
            reflections += 1
            assert full.startswith(response)  # TRL's default trains the failed attempt too
            assert kept.startswith(f"</think><answer>{answer}") and "marked" not in kept
        else:
            assert kept == full and kept.startswith(response)
    assert 0 < reflections < len(rows)


def _trained_text(processor, rows, collator):
    batch = collator([dict(row) for row in rows])
    return [processor.tokenizer.decode(ids[labels != -100]) for ids, labels in zip(batch["input_ids"], batch["labels"],
                                                                                   strict=True)]


def test_the_reflection_loss_is_part_of_the_cold_start_cache_key():
    from dataclasses import replace

    from care.coldstart import cold_start_key

    cfg = Config()
    after = replace(cfg, cold_start=replace(cfg.cold_start, reflection_loss="after_cue"))
    whole = replace(cfg, cold_start=replace(cfg.cold_start, reflection_loss="whole"))
    assert cold_start_key(after, "src") != cold_start_key(whole, "src")
