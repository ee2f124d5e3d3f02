"""`data_root=DIR`: one folder in README step 1's download layout fills every data key at once.

    DIR/care_mix/{geometry3k,chartqa,virl39k}   data.path (data=care_mix; data=<component> reads DIR/care_mix/<name>)
    DIR/vision_r1_cold                          cold_start.path (cold_start=sft)
    DIR/bench/<benchmark>                       eval.paths.<benchmark> (mmmu_pro_standard and mmmu_pro_vision:
                                                DIR/bench/mmmu_pro, one snapshot holding both configs)
    DIR/models/<hub id's last part>             backbone.path of a real backbone, when that folder exists
                                                (e.g. DIR/models/Qwen2.5-VL-7B-Instruct; compute nodes are offline)

Only keys still unset after composition are filled (an explicit key always wins), and only those the
config reads: data.path for a real training set and cold_start.path for cold_start=sft (neither for
task=eval), eval.paths.<name> for the benchmarks in eval.benchmarks. Hydra-free: run.py's `to_config`
and the sweep launcher call `apply_data_root` on a typed Config.
"""

from __future__ import annotations

from pathlib import Path

from care.config import Config

COLD_START_DIR = "vision_r1_cold"
BENCH_DIRS = {"mathvista": "bench/mathvista", "mathverse": "bench/mathverse", "mathvision": "bench/mathvision",
              "mmmu": "bench/mmmu", "mmmu_pro_standard": "bench/mmmu_pro", "mmmu_pro_vision": "bench/mmmu_pro"}
MODELS_DIR = "models"
LAYOUT = ("DIR/care_mix/{geometry3k,chartqa,virl39k}, DIR/vision_r1_cold, "
          "DIR/bench/{mathvista,mathverse,mathvision,mmmu,mmmu_pro}, DIR/models/<hub id's last part> "
          "(README 'Reproducing the paper' step 1)")


def data_dir(name: str) -> str:
    """The sub-folder a training set reads: care_mix itself, or one of its components alone."""
    return "care_mix" if name == "care_mix" else f"care_mix/{name}"


def model_dir(hub_id: str) -> str:
    return f"{MODELS_DIR}/{hub_id.rstrip('/').rsplit('/', 1)[-1]}"


def data_root_fills(cfg: Config) -> dict[str, str]:
    """{config key: sub-folder of data_root} for every key data_root would fill in `cfg` (unset and used)."""
    fills: dict[str, str] = {}
    if cfg.task != "eval":  # task=eval reads neither the training set nor the cold start
        if cfg.data.name != "synthetic" and not cfg.data.path:
            fills["data.path"] = data_dir(cfg.data.name)
        if cfg.cold_start.name == "sft" and not cfg.cold_start.path:
            fills["cold_start.path"] = COLD_START_DIR
    for name in cfg.eval.benchmarks:
        if name in BENCH_DIRS and not cfg.eval.paths.get(name):
            fills[f"eval.paths.{name}"] = BENCH_DIRS[name]
    if cfg.backbone.tiny is None and not cfg.backbone.path and cfg.backbone.hub_id:
        fills["backbone.path"] = model_dir(cfg.backbone.hub_id)
    return fills


def apply_data_root(cfg: Config, check: bool = True) -> list[str]:
    """Fill `cfg`'s unset data keys from `cfg.data_root` in place; return the problems (empty: none).

    `check=False` (task=plan, which reads no data) fills without looking at the disk. With `check`, every
    sub-folder filled must exist; the one problem returned names all that do not, and the layout.
    backbone.path is filled only when DIR/models/<name> exists (else the weights come from the HF cache)
    and is never a problem. A relative data_root is taken as is: run.py makes it absolute first.
    """
    if not cfg.data_root:
        return []
    root = Path(cfg.data_root).expanduser()
    missing: dict[str, list[str]] = {}  # sub-folder -> the keys it would fill (mmmu_pro: two)
    for key, sub in data_root_fills(cfg).items():
        path = root / sub
        if key == "backbone.path":
            if path.is_dir():
                cfg.backbone.path = str(path)
            continue
        if check and not path.is_dir():
            missing.setdefault(sub, []).append(key)
        parent, leaf = key.rsplit(".", 1)
        node = cfg
        for part in parent.split("."):
            node = getattr(node, part)
        setattr(node, leaf, str(path))
    if not missing:
        return []
    named = ", ".join(f"{sub} (for {', '.join(keys)})" for sub, keys in missing.items())
    return [f"data_root={cfg.data_root!r} lacks {named}; the layout is {LAYOUT}; "
            "download them there, or set those keys to other folders"]
