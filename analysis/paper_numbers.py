"""The paper's published numbers (arXiv 2512.19554), as docs/method.md §9 and §1, §2, §7 quote them.

Accuracies are percent after RL, single pass, mean over 5 seeds, LMMs-Eval protocol. Keys
are this project's names: backbone config names, benchmark names as in final.json, and the
method labels `tables.method_label` gives (GRPO, DAPO, GSPO, CARE, "CARE w/o RGR", Base).
"""

from __future__ import annotations

BENCHMARKS = ("mathvista", "mathverse", "mathvision", "mmmu", "mmmu_pro_standard", "mmmu_pro_vision")
BENCHMARK_LABELS = {
    "mathvista": "MathVista", "mathverse": "MathVerse", "mathvision": "MATH-Vision", "mmmu": "MMMU",
    "mmmu_pro_standard": "MMMU-Pro std", "mmmu_pro_vision": "MMMU-Pro vis", "synthetic": "Synthetic",
    "macro": "Macro",
}
BACKBONE_LABELS = {
    "qwen2_5_vl_3b": "Qwen2.5-VL-3B", "qwen2_5_vl_7b": "Qwen2.5-VL-7B", "qwen3_vl_8b": "Qwen3-VL-8B",
}


def _row(*values: float) -> dict[str, float]:
    """Six per-benchmark values in BENCHMARKS order; macro is their mean, as the paper's is."""
    row = dict(zip(BENCHMARKS, values, strict=True))
    row["macro"] = round(sum(values) / len(values), 2)
    return row


# (backbone, method) -> {benchmark or "macro": accuracy}
MAIN = {
    ("qwen2_5_vl_7b", "Base"): {"macro": 45.10},
    ("qwen2_5_vl_7b", "GRPO"): _row(68.9, 50.8, 25.7, 61.1, 36.4, 32.8),  # macro 45.95 as published
    ("qwen2_5_vl_7b", "DAPO"): _row(72.6, 54.2, 29.4, 61.6, 37.3, 34.7),  # 48.30
    ("qwen2_5_vl_7b", "GSPO"): _row(74.1, 56.0, 31.6, 62.2, 38.9, 36.4),  # 49.87
    ("qwen2_5_vl_7b", "CARE w/o RGR"): {"macro": 49.85},
    ("qwen2_5_vl_7b", "CARE"): _row(74.7, 56.8, 32.6, 62.5, 39.7, 37.1),  # 50.57
    ("qwen2_5_vl_3b", "GRPO"): {"macro": 38.83},
    ("qwen2_5_vl_3b", "CARE w/o RGR"): {"macro": 40.15},
    ("qwen2_5_vl_3b", "CARE"): {"macro": 40.95},
    # The paper gives no macro for this row; this is the mean of its six numbers.
    ("qwen3_vl_8b", "CARE"): _row(82.1, 69.7, 61.7, 71.0, 46.7, 41.7),
}

# Table 1 (sweep table1): the method rows above. Its Base (the Instruct backbone) and cold-start rows have no
# numbers here: the sources give "base 45.10" for 7B without saying which of the two it is, so it is not placed.
TABLE1 = {cell: row for cell, row in MAIN.items() if cell[1] != "Base"}

# Ablations on Qwen2.5-VL-7B (macro accuracy).
SELECTOR_MACRO = {"cosine": 50.6, "random": 43.1}
SELECTOR_ORDER_NOTE = "paper: nearest > mixed > farthest (no numbers given)"
# RGR repair success rate, percent of attempts.
RGR_REPAIR_RATE = {"cue": 76.6, "no_cue": 19.3, "random": 12.8}
# Shortest-Think anchors give reasoning about this many tokens shorter than Random (low-confidence figure).
ANCHOR_THINK_SHORTER_THAN_RANDOM = (15, 20)

EXPECTED_ORDERING = {
    "main": "CARE > GSPO > DAPO > GRPO > Base (macro, 7B)",
    "components": "GRPO < CARE w/o RGR < CARE (7B: +3.90 then +0.72; 3B: +1.32 then +0.80)",
}
