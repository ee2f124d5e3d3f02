"""Write the tiny cold-start SFT sets under tests/fixtures/sft/, one per layout `cold_start=sft` reads.

    python scripts/make_sft_fixtures.py        # rewrites tests/fixtures/sft/

- trl/train.jsonl: TRL's conversational vision format, `messages` + `images` as paths relative to
  the file (one record with structured content blocks, one with a system turn);
- trl_embedded/data/train-00000-of-00001.parquet: the same format as a hub parquet shard, images
  embedded as bytes (what `datasets` writes for an Image column);
- vision_r1_cold/: the Vision-R1-cold release's layout as its authors' README describes it
  (docs/cold_start.md): two ShareGPT files, `conversations` from/value, images under
  llava_cot_images/ (column `image`, tags human/gpt) and mulberry_images/ (column `images`, tags
  user/assistant), and LLaMA-Factory's dataset_info.json beside them.
Deterministic: 32x32 PNGs drawn from fixed seeds, rows are literals below.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from datasets import Dataset, Features, Image, List, Value, disable_progress_bars
from PIL import Image as PILImage
from PIL import ImageDraw

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sft"
QUESTIONS = [("How many circles are in the picture?", "circle", "2"),
             ("What colour is the square?", "square", "red"),
             ("Which shape is larger, the circle or the square?", "compare", "circle"),
             ("How many sides does the shape have?", "sides", "4")]


def picture(seed: int) -> PILImage.Image:
    rng = random.Random(f"sft-fixture/{seed}")
    image = PILImage.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    x0, y0 = rng.randrange(2, 12), rng.randrange(2, 12)
    draw.rectangle((x0, y0, x0 + rng.randrange(8, 18), y0 + rng.randrange(8, 18)),
                   fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def save_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture(seed).save(path, format="PNG")


def response(topic: str, answer: str) -> str:
    return f"<think>I look at the {topic} in the image and count what the question asks.</think><answer>{answer}</answer>"


def trl_records(image_dir: str) -> list[dict]:
    rows = []
    for i, (question, topic, answer) in enumerate(QUESTIONS):
        user: object = question
        if i == 1:  # structured content: the image's place is explicit
            user = [{"type": "image"}, {"type": "text", "text": question}]
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": response(topic, answer)}]
        if i == 2:
            messages.insert(0, {"role": "system", "content": "You are a careful visual reasoner."})
        rows.append({"messages": messages, "images": [f"{image_dir}/q{i}.png"]})
    return rows


def write_trl(folder: Path) -> None:
    for i in range(len(QUESTIONS)):
        save_png(folder / "images" / f"q{i}.png", seed=i)
    with (folder / "train.jsonl").open("w") as handle:
        for row in trl_records("images"):
            handle.write(json.dumps(row) + "\n")


def write_trl_embedded(folder: Path) -> None:
    features = Features({"messages": List({"role": Value("string"), "content": Value("string")}),
                         "images": List(Image())})
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": response(t, a)}],
             "images": [picture(10 + i)]} for i, (q, t, a) in enumerate(QUESTIONS)]
    path = folder / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows, features=features).to_parquet(str(path))


def write_vision_r1_cold(folder: Path) -> None:
    llava, mulberry = [], []
    for i, (question, topic, answer) in enumerate(QUESTIONS[:2]):
        image = f"llava_cot_images/sqa/train_{i}.png"
        save_png(folder / image, seed=20 + i)
        llava.append({"id": f"sqa-{i}", "image": image, "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": response(topic, answer)}]})
    for i, (question, topic, answer) in enumerate(QUESTIONS[2:]):
        image = f"mulberry_images/chartqa/chart_{i}.png"
        save_png(folder / image, seed=30 + i)
        mulberry.append({"images": [image], "conversations": [
            {"from": "user", "value": f"<image>{question}"},
            {"from": "assistant", "value": response(topic, answer)}]})
    (folder / "vision_r1_llava_cot_full.json").write_text(json.dumps(llava, indent=1))
    (folder / "vision_r1_mulberry_sft_full.json").write_text(json.dumps(mulberry, indent=1))
    registry = {name: {"file_name": f"{name}.json", "formatting": "sharegpt",
                       "columns": {"messages": "conversations", "images": column},
                       "tags": {"role_tag": "from", "content_tag": "value", "user_tag": user, "assistant_tag": bot}}
                for name, column, user, bot in (("vision_r1_llava_cot_full", "image", "human", "gpt"),
                                                ("vision_r1_mulberry_sft_full", "images", "user", "assistant"))}
    (folder / "dataset_info.json").write_text(json.dumps(registry, indent=2))


def main() -> None:
    disable_progress_bars()
    shutil.rmtree(ROOT, ignore_errors=True)
    write_trl(ROOT / "trl")
    write_trl_embedded(ROOT / "trl_embedded")
    write_vision_r1_cold(ROOT / "vision_r1_cold")
    print(f"wrote {sum(1 for p in ROOT.rglob('*') if p.is_file())} files under {ROOT}")


if __name__ == "__main__":
    main()
