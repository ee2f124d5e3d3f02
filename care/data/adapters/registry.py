"""One spec per dataset name: where it lives on the hub, its default split, and its row adapter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from care.data.adapters import benchmarks, training
from care.data.adapters.common import RowContext
from care.data.schema import Record

MMMU_SUBJECTS = (
    "Accounting", "Agriculture", "Architecture_and_Engineering", "Art", "Art_Theory",
    "Basic_Medical_Science", "Biology", "Chemistry", "Clinical_Medicine", "Computer_Science", "Design",
    "Diagnostics_and_Laboratory_Medicine", "Economics", "Electronics", "Energy_and_Power", "Finance",
    "Geography", "History", "Literature", "Manage", "Marketing", "Materials", "Math",
    "Mechanical_Engineering", "Music", "Pharmacy", "Physics", "Psychology", "Public_Health", "Sociology",
)
CARE_MIX_COMPONENTS = ("geometry3k", "chartqa", "virl39k")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    role: str  # "train" (configured by data.path) or "benchmark" (eval.paths.<name>)
    hub_id: str | None
    default_split: str
    convert: Callable[[dict, RowContext], Record] | None  # None: a union of other specs (care_mix)
    hub_configs: tuple[str | None, ...] = (None,)  # several are concatenated in order (MMMU subjects)
    hub_image_archive: str | None = None  # a zip in the hub repo holding images the rows name by path
    components: tuple[str, ...] = ()
    # rows of the default split, for estimates that load no data (task=plan; docs/paper_eval.md's table);
    # care_mix: the paper's 49.3K after deduplication, not the components' sum
    approx_rows: int | None = None
    # checked before the adapter runs (care.data.rows): user-visible text, text that may be empty, golds
    text_columns: tuple[str, ...] = ("question",)
    optional_text_columns: tuple[str, ...] = ()
    answer_columns: tuple[str, ...] = ("answer",)

    @property
    def config_key(self) -> str:
        """The config key a user sets to point at a local copy; named in every loading error."""
        return "data.path" if self.role == "train" else f"eval.paths.{self.name}"


SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("geometry3k", "train", "hiyouga/geometry3k", "train", training.geometry3k, approx_rows=2_101,
                text_columns=("problem",)),
    DatasetSpec("chartqa", "train", "HuggingFaceM4/ChartQA", "train", training.chartqa, approx_rows=28_299,
                text_columns=("query",), answer_columns=("label",)),
    DatasetSpec("virl39k", "train", "TIGER-Lab/ViRL39K", "train", training.virl39k,
                hub_image_archive="images.zip", approx_rows=38_870),
    DatasetSpec("care_mix", "train", None, "train", None, components=CARE_MIX_COMPONENTS, approx_rows=49_300),
    DatasetSpec("mathvista", "benchmark", "AI4Math/MathVista", "testmini", benchmarks.mathvista, approx_rows=1_000),
    DatasetSpec("mathverse", "benchmark", "AI4Math/MathVerse", "testmini", benchmarks.mathverse,
                hub_configs=("testmini",), approx_rows=3_940, text_columns=(), optional_text_columns=("question",)),
    DatasetSpec("mathvision", "benchmark", "MathLLMs/MathVision", "test", benchmarks.mathvision, approx_rows=3_040),
    DatasetSpec("mmmu", "benchmark", "MMMU/MMMU", "validation", benchmarks.mmmu, hub_configs=MMMU_SUBJECTS,
                approx_rows=900),
    DatasetSpec("mmmu_pro_standard", "benchmark", "MMMU/MMMU_Pro", "test", benchmarks.mmmu_pro_standard,
                hub_configs=("standard (10 options)",), approx_rows=1_730),
    DatasetSpec("mmmu_pro_vision", "benchmark", "MMMU/MMMU_Pro", "test", benchmarks.mmmu_pro_vision,
                hub_configs=("vision",), approx_rows=1_730, text_columns=()),
)}
DATASET_NAMES = tuple(SPECS)


def get_spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise ValueError(f"unknown dataset {name!r}; accepted names: {', '.join(DATASET_NAMES)}")
    return SPECS[name]
