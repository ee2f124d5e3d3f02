"""What checking every image at load costs: peak memory with huge pictures, and time per ordinary one.

    python benchmarks/image_checks.py

1. Peak RSS of loading a ChartQA-layout copy (through care.data.loading.load_records, in a fresh
   process each) whose rows hold two 12000x12000 PNGs, or two 12000x12000 JPEGs, or only 32x32 ones.
   Every image is decoded whole once (PNG: at full size, then shrunk to care.data.images.MAX_KEPT_PIXELS;
   JPEG: at reduced size through PIL's draft mode) and kept as a small re-encoded PNG.
2. Seconds per image of `checked_image` on a 800x600 chart-like PNG (the common case, kept as read)
   against opening its header alone (what loading did before), as a ratio within one run.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def write_copy(folder: Path, kind: str) -> None:
    folder.mkdir(parents=True)
    rows = []
    for i in range(2):
        name = f"img{i}.{'jpg' if kind == 'jpeg' else 'png'}"
        size = (32, 32) if kind == "small" else (12_000, 12_000)
        image = Image.new("RGB", size, (250, 250, 250))
        ImageDraw.Draw(image).rectangle((size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill=(20, 90, 200))
        image.save(folder / name, format="JPEG" if kind == "jpeg" else "PNG")
        del image
        rows.append({"image": name, "query": f"What is bar {i}?", "label": [str(i)]})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


LOAD = """
import resource, sys, time
from care.data.loading import load_records
start = time.perf_counter()
records = load_records("chartqa", path=sys.argv[1])
sizes = [image.size for record in records for image in record.images]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - start, sizes)
"""


def peak_load(folder: Path) -> tuple[float, float, list]:
    out = subprocess.run([sys.executable, "-c", LOAD, str(folder)], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=2)
    return float(out[0]), float(out[1]), out[2].strip()


def per_image_cost(repeats: int = 200) -> tuple[float, float]:
    from care.data.adapters.common import open_encoded
    from care.data.images import checked_image

    chart = Image.new("RGB", (800, 600), "white")
    draw = ImageDraw.Draw(chart)
    rng = np.random.default_rng(0)
    for x in range(40, 760, 60):
        draw.rectangle((x, 600 - int(rng.integers(50, 550)), x + 40, 580), fill=(30, 100, 200))
        draw.text((x, 585), f"{x}", fill="black")
    buffer = io.BytesIO()
    chart.save(buffer, format="PNG")
    data = buffer.getvalue()
    start = time.perf_counter()
    for _ in range(repeats):
        open_encoded(data).size  # noqa: B018  the header alone
    header = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        checked_image(open_encoded(data))
    checked = (time.perf_counter() - start) / repeats
    return header, checked


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("small", "png", "jpeg"):
            folder = Path(tmp) / kind
            write_copy(folder, kind)
            peak, seconds, sizes = peak_load(folder)
            print(f"two {kind:5} images: peak RSS {peak:7.0f} MiB, load {seconds:5.1f} s, kept as {sizes}")
    header, checked = per_image_cost()
    print(f"800x600 chart PNG: header {header * 1e3:.3f} ms, checked_image {checked * 1e3:.2f} ms "
          f"(ratio {checked / header:.0f}); 49.3K such images: {49_300 * checked / 60:.1f} min on one core")
    print(f"this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
