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
# HuggingFaceM4/ChartQA's rows per (split, human_or_machine subset). The split sizes 28,299 / 1,920 / 2,500 are
# the dataset card's. Derived from issue 25's counts (Geometry3K 2,101, ViRL39K 38,870): human train 7,398
# (48,369 - 2,101 - 38,870), human val 960 (49,329 - 48,369), all of train 28,299 (69,270 - 2,101 - 38,870),
# so augmented train 20,901; augmented val 960 = 1,920 - 960. Test: 1,250 each (the ChartQA paper's
# Table 2, whose ChartQA-H 7,398 / 960 / 1,250 and ChartQA-M 20,901 / 960 / 1,250 agree with all of the above).
CHARTQA_ROWS = (("train", "human", 7_398), ("train", "augmented", 20_901), ("val", "human", 960),
                ("val", "augmented", 960), ("test", "human", 1_250), ("test", "augmented", 1_250))


@dataclass(frozen=True)
class Selection:
    """Which rows of a training set to read: `splits`, in order, and `subset` (a name in the spec's
    `subsets`, or "all": every row). `splits_key` and `subset_key` are the config keys that chose them,
    named in every error (care.data.training builds ChartQA's from data.chartqa_splits and data.chartqa_subset)."""

    splits: tuple[str, ...]
    subset: str = "all"
    splits_key: str = "splits"
    subset_key: str = "subset"


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
    # a union has none of its own: `approx_rows` sums its components'
    approx_rows: int | None = None
    # rows a `Selection` can pick by a column: (subset, the column's values that belong to it); "all" reads every row
    subset_column: str | None = None
    subsets: tuple[tuple[str, tuple], ...] = ()
    rows_by_split_and_subset: tuple[tuple[str, str, int], ...] = ()  # approximate; for `approx_rows`
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
    # human_or_machine is a ClassLabel: 0 "human" (human-written), 1 "machine" (machine-augmented); a copy
    # saved as JSON may hold the names
    DatasetSpec("chartqa", "train", "HuggingFaceM4/ChartQA", "train", training.chartqa, approx_rows=28_299,
                text_columns=("query",), answer_columns=("label",), subset_column="human_or_machine",
                subsets=(("human", (0, "human")), ("augmented", (1, "machine"))), rows_by_split_and_subset=CHARTQA_ROWS),
    DatasetSpec("virl39k", "train", "TIGER-Lab/ViRL39K", "train", training.virl39k,
                hub_image_archive="images.zip", approx_rows=38_870),
    DatasetSpec("care_mix", "train", None, "train", None, components=CARE_MIX_COMPONENTS),
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


def approx_rows(name: str, selections: dict[str, Selection] | None = None) -> int:
    """Rows `load_records(name, selections=selections)` reads, estimated without loading: a component's
    selected splits and subset (its `rows_by_split_and_subset`), else its default split's `approx_rows`; a
    union sums its components, before deduplication (the issue 25 counts found none across the three sets:
    49,329 after dedupe is their plain sum)."""
    spec = get_spec(name)
    if spec.components:
        return sum(approx_rows(component, selections) for component in spec.components)
    selection = (selections or {}).get(name)
    if selection is None or not spec.rows_by_split_and_subset:
        return spec.approx_rows
    table = {(split, subset): rows for split, subset, rows in spec.rows_by_split_and_subset}
    subsets = [subset for subset, _ in spec.subsets] if selection.subset == "all" else [selection.subset]
    return sum(table[split, subset] for split in selection.splits for subset in subsets)
