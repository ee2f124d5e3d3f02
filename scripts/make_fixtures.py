"""Write the tiny dataset copies under tests/fixtures/, in each dataset's real schema and file layout.

    python scripts/make_fixtures.py            # rewrites tests/fixtures/<dataset>/...

Deterministic: images are 32x32 PNGs drawn from a fixed seed, rows are literals below. Layouts follow
the hub releases: parquet shards "data/<split>-00000-of-00001.parquet" with embedded image bytes for
most; ViRL39K as its release parquet naming images by relative path plus an images/ folder; MathVerse as
its testmini.json plus an image folder; MMMU and MMMU-Pro with one folder per hub config.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from datasets import ClassLabel, Dataset, Features, Image, List, Value, disable_progress_bars
from PIL import Image as PILImage
from PIL import ImageDraw

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
MMMU_IMAGES = {f"image_{i}": Image() for i in range(1, 8)}


def picture(seed: int) -> PILImage.Image:
    """A 32x32 picture that differs per seed: a coloured background with a shape on it."""
    rng = random.Random(seed)
    image = PILImage.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    x0, y0 = rng.randrange(4, 14), rng.randrange(4, 14)
    box = (x0, y0, x0 + rng.randrange(8, 16), y0 + rng.randrange(8, 16))
    fill = tuple(rng.randrange(256) for _ in range(3))
    (draw.ellipse if seed % 2 else draw.rectangle)(box, fill=fill)
    return image


def write_parquet(path: Path, rows: list[dict], features: Features) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [row.get(name) for row in rows] for name in features}
    Dataset.from_dict(columns, features=features).to_parquet(str(path))


def save_png(folder: Path, name: str, seed: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    picture(seed).save(folder / name, format="PNG")
    return f"{folder.name}/{name}"


# ------------------------------------------------------------------------------------------- training

GEOMETRY3K = Features({"images": List(Image()), "problem": Value("string"), "answer": Value("string")})
GEOMETRY3K_ROWS = [
    {"images": [picture(1)], "problem": "<image>Find x.", "answer": "3"},
    {"images": [picture(2)], "problem": "<image>Find the area of the triangle. Round to the nearest tenth.",
     "answer": "12.5"},
    {"images": [picture(3)], "problem": "<image>Find m \\angle 2.", "answer": "34"},
    {"images": [picture(4)], "problem": "<image>Find the perimeter of the figure.", "answer": "4+2\\sqrt{3}"},
]
CHARTQA = Features({"image": Image(), "query": Value("string"), "label": List(Value("string")),
                    "human_or_machine": ClassLabel(names=["human", "machine"])})
CHARTQA_ROWS = [
    {"image": picture(11), "query": "What is the value of the highest bar?", "label": ["62"], "human_or_machine": 0},
    {"image": picture(12), "query": "Is the value of Japan more than that of China?", "label": ["Yes"],
     "human_or_machine": 0},
    {"image": picture(13), "query": "Which party had the most seats in 2019?", "label": ["Democrats"],
     "human_or_machine": 1},
    {"image": picture(14), "query": "What's the average of the two smallest bars?", "label": ["17.5"],
     "human_or_machine": 1},
]
VIRL39K = Features({"question": Value("string"), "answer": Value("string"),
                    "PassRate_32BTrained": Value("float64"), "PassRate_7BBase": Value("float64"),
                    "category": Value("string"), "source": Value("string"), "qid": Value("string"),
                    "image": List(Value("string"))})


def virl39k_rows(folder: Path) -> list[dict]:
    images = folder / "images"
    shutil.rmtree(images, ignore_errors=True)

    def img(seed: int, n: int = 0) -> str:
        return save_png(images, f"Processed-fixture-{seed:04d}-{n}.png", seed)

    common = {"PassRate_32BTrained": 0.5, "PassRate_7BBase": 0.25, "source": "fixture"}
    return [
        {**common, "qid": "virl-mc-1", "category": "Spatial Reasoning", "image": [img(21)], "answer": "\\boxed{B}",
         "question": "<image>Which shape covers the largest area?\nChoices:\nA: the circle\nB: the square\n"
                     "C: the triangle\nD: they are equal"},
        {**common, "qid": "virl-num-2", "category": "(GradeSchool) Non-Geo Math", "image": [img(22)],
         "question": "<image>How many dots are there in the picture?", "answer": "\\boxed{7}"},
        {**common, "qid": "virl-expr-3", "category": "(GradeSchool) Geometric", "image": [img(23)],
         "question": "<image>In the figure, find the length of AB.", "answer": "\\boxed{2\\sqrt{3}}"},
        {**common, "qid": "virl-two-4", "category": "Spatial Reasoning", "image": [img(24), img(25, 1)],
         "question": "<image><image>Which of the two figures is symmetric? Answer left or right.",
         "answer": "\\boxed{left}"},
        # The same problem and picture as Geometry3K's first row: care_mix must keep only one.
        {**common, "qid": "virl-dup-5", "category": "(GradeSchool) Geometric", "image": [img(1)],
         "question": "<image>\nFind  x.", "answer": "\\boxed{3}"},
        {**common, "qid": "virl-imgmc-6", "category": "Tables/Diagrams/Charts", "image": [img(26)],
         "question": "<image>Which option in the diagram matches the description?", "answer": "\\boxed{C}"},
    ]


# care_mix's copy is larger than the single-source fixtures, so a toy run (scale=toy holds out 16 prompts)
# still trains on every source; one ChartQA question is far over data.max_prompt_tokens (2,048).
MIX_GEOMETRY3K_EXTRA = [{"images": [picture(100 + i)], "problem": f"<image>Find the length of side {chr(97 + i)}.",
                         "answer": str(i + 2)} for i in range(10)]
MIX_CHARTQA_EXTRA = [{"image": picture(150 + i), "query": f"What is the value of bar {i + 1} in the chart?",
                      "label": [str(10 * i + 5)], "human_or_machine": i % 2} for i in range(10)]
OVERLONG_QUESTION = ("The chart lists, region by region and year by year, the values that the survey recorded; "
                     "read every entry before answering. ") * 160 + "What is the largest value?"
MIX_CHARTQA_OVERLONG = {"image": picture(170), "query": OVERLONG_QUESTION, "label": ["95"], "human_or_machine": 0}
# ChartQA's val split (the release's "data/val-*.parquet"): 5 human-written + 3 machine-augmented questions, so
# the default data.chartqa_subset=human over data.chartqa_splits=[train,val] keeps 8 + 5 = 13 ChartQA rows, as
# many as the train split alone held before the key existed (the toy run's counts stay put).
MIX_CHARTQA_VAL = [{"image": picture(180 + i), "query": f"What was the share in year {2010 + i}?",
                    "label": [str(20 + 3 * i)], "human_or_machine": int(i >= 5)}
                   for i in range(8)]


def mix_virl39k_extra(folder: Path) -> list[dict]:
    common = {"PassRate_32BTrained": 0.5, "PassRate_7BBase": 0.25, "source": "fixture",
              "category": "(GradeSchool) Non-Geo Math"}
    return [{**common, "qid": f"virl-count-{i}", "answer": f"\\boxed{{{i + 1}}}",
             "image": [save_png(folder / "images", f"Processed-fixture-{40 + i:04d}-0.png", 40 + i)],
             "question": f"<image>How many shapes are in panel {i + 1}?"} for i in range(8)]


# ------------------------------------------------------------------------------------------ benchmarks

MATHVISTA = Features({
    "pid": Value("string"), "question": Value("string"), "image": Value("string"), "decoded_image": Image(),
    "choices": List(Value("string")), "unit": Value("string"), "precision": Value("float64"),
    "answer": Value("string"), "question_type": Value("string"), "answer_type": Value("string"),
    "query": Value("string"),
    "metadata": {"category": Value("string"), "context": Value("string"), "grade": Value("string"),
                 "img_height": Value("int64"), "img_width": Value("int64"), "language": Value("string"),
                 "skills": List(Value("string")), "source": Value("string"), "split": Value("string"),
                 "task": Value("string")},
})


def mathvista_row(pid: str, question: str, answer: str, question_type: str, answer_type: str,
                  choices=None, precision=None, unit=None) -> dict:
    meta = {"category": "math-targeted-vqa", "context": "geometry diagram", "grade": "high school",
            "img_height": 32, "img_width": 32, "language": "english", "skills": ["geometry reasoning"],
            "source": "fixture", "split": "testmini", "task": "geometry problem solving"}
    return {"pid": pid, "question": question, "image": f"images/{pid}.jpg", "decoded_image": picture(100 + int(pid)),
            "choices": choices, "unit": unit, "precision": precision, "answer": answer,
            "question_type": question_type, "answer_type": answer_type, "query": f"Question: {question}",
            "metadata": meta}


MATHVISTA_ROWS = [
    mathvista_row("1", "Find the measure of angle ABC.", "145°", "multi_choice", "text",
                  choices=["35°", "55°", "145°", "155°"]),
    mathvista_row("2", "How many objects are left after removing all red spheres?", "5", "free_form", "integer"),
    mathvista_row("3", "What is the length of the ramp?", "1.2", "free_form", "float", precision=1.0, unit="m"),
    mathvista_row("4", "Which color is the largest slice?", "blue", "free_form", "text"),
    mathvista_row("5", "List the x-intercepts of the graph.", "[-1, 3]", "free_form", "list"),
]


def mathverse_rows(folder: Path) -> list[dict]:
    images = folder / "images"
    shutil.rmtree(images, ignore_errors=True)
    meta = {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Angle"}
    mc_question = ("As shown in the figure, AB is parallel to CD and angle 1 = 50.0. "
                   "What is the size of angle 2?\nChoices:\nA:40°\nB:50°\nC:120°\nD:130°")

    def row(index, problem, version, question, answer, qtype, seed):
        return {"sample_index": str(index), "problem_index": str(problem), "problem_version": version,
                "question": question, "image": save_png(images, f"image_{index}.png", seed), "answer": answer,
                "question_type": qtype, "metadata": meta,
                "query_wo": f"Please directly answer the question.\nQuestion: {question}",
                "query_cot": f"Please first conduct reasoning, and then answer the question.\nQuestion: {question}",
                "question_for_eval": question or mc_question}

    return [
        row(1, 1, "Text Dominant", mc_question, "D", "multi-choice", 201),
        row(2, 1, "Vision Only", "", "D", "multi-choice", 202),
        row(3, 2, "Text Lite", "As shown in the figure, find the length of BC.", "2\\sqrt{5}", "free-form", 203),
        row(4, 3, "Vision Intensive", "Find the area of the shaded region.", "12", "free-form", 204),
    ]


MATHVISION = Features({"id": Value("string"), "question": Value("string"), "options": List(Value("string")),
                       "image": Value("string"), "decoded_image": Image(), "answer": Value("string"),
                       "solution": Value("string"), "level": Value("int64"), "subject": Value("string")})


def mathvision_row(qid: str, question: str, options: list[str], answer: str, subject: str) -> dict:
    return {"id": qid, "question": question, "options": options, "image": f"images/{qid}.jpg",
            "decoded_image": picture(300 + int(qid)), "answer": answer, "solution": None, "level": 2,
            "subject": subject}


MATHVISION_ROWS = [
    mathvision_row("1", "When the ant <image1> walks from home <image2> along the arrows, where does it end?",
                   ["A", "B", "C", "D", "E"], "C", "graph theory"),
    mathvision_row("2", "Which number should replace the question mark?", ["6", "7", "8", "9", "10"], "B",
                   "arithmetic"),
    mathvision_row("3", "How many triangles are in the picture?", [], "11", "counting"),
    mathvision_row("4", "What is the area of the shaded region?", [], "\\frac{\\pi}{4}", "metric geometry - area"),
]

MMMU = Features({"id": Value("string"), "question": Value("string"), "options": Value("string"),
                 "explanation": Value("string"), **MMMU_IMAGES, "img_type": Value("string"),
                 "answer": Value("string"), "topic_difficulty": Value("string"),
                 "question_type": Value("string"), "subfield": Value("string")})


def mmmu_row(row_id, question, options, answer, qtype, images, subfield, img_type="['Tables']"):
    row = {"id": row_id, "question": question, "options": options, "explanation": "", "img_type": img_type,
           "answer": answer, "topic_difficulty": "Medium", "question_type": qtype, "subfield": subfield}
    row.update({f"image_{i}": image for i, image in enumerate(images, start=1)})
    return row


MMMU_ROWS = {
    ("Accounting", "validation"): [
        # Quotes and commas inside options: the string repr must be parsed, not split on commas.
        mmmu_row("validation_Accounting_1", "<image 1> Which company reported the larger profit, in $?",
                 "['$6', \"Smith's, Inc.\", '1,000', 'None of the above']", "B", "multiple-choice",
                 [picture(401)], "Financial Accounting"),
        mmmu_row("validation_Accounting_2", "Using <image 1>, compute the ratio of debt to equity.", "[]",
                 "0.25", "open", [picture(402)], "Managerial Accounting"),
    ],
    ("Accounting", "dev"): [
        mmmu_row("dev_Accounting_1", "<image 1> What is the net income?", "['$1', '$2']", "A",
                 "multiple-choice", [picture(403)], "Financial Accounting"),
    ],
    ("Art_Theory", "validation"): [
        mmmu_row("validation_Art_Theory_1", "Which painting shares the style of <image 1>?",
                 "['<image 2>', '<image 3>']", "B", "multiple-choice",
                 [picture(411), picture(412), picture(413)], "Art History", "['Paintings']"),
        mmmu_row("validation_Art_Theory_2", "In which year was the painting <image 1> finished?",
                 "[]", "['1889', '1890']", "open", [picture(414)], "Art History", "['Paintings']"),
    ],
}

TEN_OPTIONS = "['1', '2', '3', '4', '5', '6', '7', '8', '9', 'It cannot be determined, as \\'x\\' is unknown']"
MMMU_PRO_STANDARD = Features({"id": Value("string"), "question": Value("string"), "options": Value("string"),
                              "explanation": Value("string"), **MMMU_IMAGES, "img_type": Value("string"),
                              "answer": Value("string"), "topic_difficulty": Value("string"),
                              "subject": Value("string")})
MMMU_PRO_STANDARD_ROWS = [
    {"id": "test_Math_1", "question": "How many edges does the solid in <image 1> have?", "options": TEN_OPTIONS,
     "explanation": "", "image_1": picture(501), "img_type": "['Diagrams']", "answer": "J",
     "topic_difficulty": "Hard", "subject": "Math"},
    {"id": "test_Physics_2", "question": "Compare <image 1> and <image 2>: which circuit has more resistors?",
     "options": "['left', 'right', 'same', 'neither', 'both', 'first', 'second', 'none', 'all', 'unknown']",
     "explanation": "", "image_1": picture(502), "image_2": picture(503), "img_type": "['Diagrams']",
     "answer": "A", "topic_difficulty": "Easy", "subject": "Physics"},
    {"id": "test_Economics_3", "question": "<image 1> What is the equilibrium price?",
     "options": "['$1', '$2', '$3', '$4', '$5', '$6', '$7', '$8', '$9', '$10']", "explanation": "",
     "image_1": picture(504), "img_type": "['Plots and Charts']", "answer": "D", "topic_difficulty": "Medium",
     "subject": "Economics"},
]
MMMU_PRO_VISION = Features({"id": Value("string"), "image": Image(), "options": Value("string"),
                            "answer": Value("string"), "subject": Value("string")})
MMMU_PRO_VISION_ROWS = [
    {"id": "test_Math_1", "image": picture(601), "options": TEN_OPTIONS, "answer": "J", "subject": "Math"},
    {"id": "test_History_2", "image": picture(602), "options": "['1914', '1918', '1939', '1945']", "answer": "C",
     "subject": "History"},
    {"id": "test_Biology_3", "image": picture(603), "options": "['mitosis', 'meiosis']", "answer": "A",
     "subject": "Biology"},
]


DATASET_FOLDERS = ("geometry3k", "chartqa", "virl39k", "care_mix", "mathvista", "mathverse", "mathvision", "mmmu",
                   "mmmu_pro")


def main() -> None:
    disable_progress_bars()
    for folder in DATASET_FOLDERS:  # only what this script writes: tests/fixtures/runs/ is another's
        shutil.rmtree(ROOT / folder, ignore_errors=True)
    write_parquet(ROOT / "geometry3k/data/train-00000-of-00001.parquet", GEOMETRY3K_ROWS, GEOMETRY3K)
    write_parquet(ROOT / "geometry3k/data/test-00000-of-00001.parquet",
                  [{"images": [picture(5)], "problem": "<image>Find y.", "answer": "7"}], GEOMETRY3K)
    write_parquet(ROOT / "chartqa/data/train-00000-of-00001.parquet", CHARTQA_ROWS, CHARTQA)
    write_parquet(ROOT / "virl39k/39Krelease.parquet", virl39k_rows(ROOT / "virl39k"), VIRL39K)

    # care_mix: one copy per component; ViRL39K's "virl-dup-5" repeats Geometry3K's first row, and one
    # ChartQA question is over-long. ChartQA: train 8 human + 5 machine rows, val 5 human + 3 machine; the
    # default human subset of train + val reads 12 + 13 + 10 rows: 34 after dedupe, 33 after the length filter.
    mix = ROOT / "care_mix"
    write_parquet(mix / "geometry3k/data/train-00000-of-00001.parquet", GEOMETRY3K_ROWS[:2] + MIX_GEOMETRY3K_EXTRA,
                  GEOMETRY3K)
    write_parquet(mix / "chartqa/data/train-00000-of-00001.parquet",
                  CHARTQA_ROWS[:2] + MIX_CHARTQA_EXTRA + [MIX_CHARTQA_OVERLONG], CHARTQA)
    write_parquet(mix / "chartqa/data/val-00000-of-00001.parquet", MIX_CHARTQA_VAL, CHARTQA)
    mix_virl = [r for r in virl39k_rows(mix / "virl39k") if r["qid"] in ("virl-mc-1", "virl-dup-5")]
    for unused in (mix / "virl39k/images").iterdir():
        if not any(unused.name in path for row in mix_virl for path in row["image"]):
            unused.unlink()
    write_parquet(mix / "virl39k/39Krelease.parquet", mix_virl + mix_virl39k_extra(mix / "virl39k"), VIRL39K)

    write_parquet(ROOT / "mathvista/data/testmini-00000-of-00001.parquet", MATHVISTA_ROWS, MATHVISTA)
    rows = mathverse_rows(ROOT / "mathverse")
    (ROOT / "mathverse/testmini.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    write_parquet(ROOT / "mathvision/data/test-00000-of-00001.parquet", MATHVISION_ROWS, MATHVISION)
    for (subject, split), subject_rows in MMMU_ROWS.items():
        write_parquet(ROOT / f"mmmu/{subject}/{split}-00000-of-00001.parquet", subject_rows, MMMU)
    write_parquet(ROOT / "mmmu_pro/standard (10 options)/test-00000-of-00001.parquet", MMMU_PRO_STANDARD_ROWS,
                  MMMU_PRO_STANDARD)
    write_parquet(ROOT / "mmmu_pro/vision/test-00000-of-00001.parquet", MMMU_PRO_VISION_ROWS, MMMU_PRO_VISION)
    written = [p for folder in DATASET_FOLDERS for p in (ROOT / folder).rglob("*") if p.is_file()]
    print(f"wrote {len(written)} files, {sum(p.stat().st_size for p in written) / 1024:.1f} KiB, under {ROOT}")


if __name__ == "__main__":
    main()
