"""Load any registered dataset as a list of `Record`s, from a local copy or from the hub.

    load_records(name, split=None, path=None, hub_id=None, limit=None, report=None, selections=None)

With `path` (config: `data.path` for training sets, `eval.paths.<name>` for benchmarks) the data is
read from local files: a single parquet / .arrow / json / jsonl file, a folder of them (searched
recursively, e.g. a hub snapshot), or a folder written by `datasets.save_to_disk`. Image cells may be
embedded bytes, PIL images, or paths relative to the data file's folder or any folder above it up to
`path`. Without `path`, `datasets.load_dataset(hub_id or the spec's id, config, split=split)` is used.

`selections` ({name: Selection}) reads a training set's listed splits instead of `split`, and of a set
with subsets (ChartQA's human_or_machine) only the chosen subset's rows: the others are counted in the
report's `filtered`, unchecked, as they are not bad data. A split the selection names must be there: a
local copy lacking it fails naming the selection's config key, never silently reading less.

Every failure to find or read a dataset raises `DatasetUnavailable` (a FileNotFoundError) naming the
config key to set and the path or hub id that failed. With HF_HUB_OFFLINE=1 a dataset missing from the
local cache fails at once, without network retries.
"""

from __future__ import annotations

import itertools
import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from care.atomic import staged_directory
from care.data.adapters import (
    DATASET_NAMES,
    DatasetSpec,
    DatasetUnavailable,
    MalformedRow,
    Selection,
    dedupe,
    get_spec,
)
from care.data.adapters.common import ImageResolver, RowContext, RowProblem
from care.data.images import ImageProblem, checked_image
from care.data.rows import DropReport, check_answer, check_text, clean_text
from care.data.schema import Record
from care.hashing import digest
from care.hub import hub_offline, offline_if_requested

__all__ = ["DATASET_NAMES", "DatasetUnavailable", "DropReport", "MalformedRow", "RowProblem", "Selection",
           "load_records"]

# When one split ships in several formats (MathVerse: testmini.json and testmini.parquet), the first wins.
FORMAT_PRIORITY = (".parquet", ".arrow", ".jsonl", ".json")
KNOWN_SPLITS = ("train", "validation", "val", "valid", "dev", "test", "testmini")
_NOT_DATA = {"dataset_info.json", "state.json", "dataset_dict.json"}
_PARQUET_BATCH_ROWS = 64


def load_records(name: str, split: str | None = None, path: str | os.PathLike | None = None,
                 hub_id: str | None = None, limit: int | None = None,
                 report: DropReport | None = None, selections: dict[str, Selection] | None = None) -> list[Record]:
    """Records of dataset `name` (see `DATASET_NAMES`); `split` defaults to the spec's usual split, and
    `selections[name]` (a union: each component's) overrides it with splits and a subset.

    Every row is checked (care.data.rows): without `report` the first bad row raises MalformedRow naming
    its file, row and column (benchmarks: a dropped row would change the denominator); with one, bad rows
    are counted there and skipped, and the caller applies its policy (care.data.training).
    """
    spec = get_spec(name)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    split = split or spec.default_split
    if spec.components:
        return _load_mix(spec, split, path, hub_id, limit, report, selections)
    selection = (selections or {}).get(spec.name)
    splits = selection.splits if selection else (split,)
    if path is not None and str(path).strip():  # every split's files are found before any row is read
        sources = [_local_rows(spec, s, Path(path).expanduser(), selection) for s in splits]
    else:
        sources = [_hub_rows(spec, s, hub_id or spec.hub_id, selection) for s in splits]
    records: list[Record] = []
    if limit == 0:
        return records
    keep = _subset_filter(spec, selection)
    escapes: Counter[str] = Counter()
    for row, ctx in itertools.chain.from_iterable(sources):
        try:
            if keep is not None and not keep(row):
                if report is not None:
                    report.filtered[spec.name] += 1
                continue
        except RowProblem as problem:
            if report is None:
                raise problem.located(f"{spec.name}: {ctx.where}") from None
            report.rows[spec.name] += 1
            report.drop(spec.name, problem, ctx.where)
            continue
        if report is not None:
            report.rows[spec.name] += 1
        try:
            records.append(_checked(spec, row, ctx, escapes))
        except RowProblem as problem:
            if report is None:
                raise problem.located(f"{spec.name}: {ctx.where}") from None
            report.drop(spec.name, problem, ctx.where)
        if limit is not None and len(records) >= limit:
            break  # before pulling another row: that could load the next hub config
    if report is not None:
        for reason, n in escapes.items():
            report.escape(spec.name, reason, n)
    return _with_unique_ids(records)


def _subset_filter(spec: DatasetSpec, selection: Selection | None):
    """None (keep every row), or a test: does this raw row belong to the selection's subset? It raises
    RowProblem for a row whose subset column is missing or holds a value of no subset."""
    if selection is None or selection.subset == "all":
        return None
    subsets = dict(spec.subsets)
    if selection.subset not in subsets:
        raise ValueError(f"{selection.subset_key}={selection.subset!r} is not accepted for {spec.name}; choose one "
                         f"of {', '.join([*subsets, 'all'])}")
    wanted = subsets[selection.subset]
    known = [value for values in subsets.values() for value in values]
    column = spec.subset_column
    to_read_all = f"{selection.subset_key}=all reads every row"

    def keep(row) -> bool:
        if isinstance(row, RowProblem):  # a line that did not parse: its subset is unknown; a bad row
            raise row
        if column not in row:
            raise RowProblem("missing_column", column, f"is missing: {selection.subset_key}={selection.subset!r} "
                             f"picks rows by it (the row has {sorted(row)}); {to_read_all}")
        value = row[column]
        if isinstance(value, bool) or value not in known:
            raise RowProblem("malformed", column, f"holds {value!r}, which is in no subset of {spec.name} "
                             f"({', '.join(f'{name}: {values}' for name, values in subsets.items())}); {to_read_all}")
        return value in wanted

    return keep


def _checked(spec: DatasetSpec, row, ctx: RowContext, escapes: Counter) -> Record:
    """The row's record with clean text and checked RGB images; raises RowProblem (care.data.rows)."""
    if isinstance(row, RowProblem):  # a line the reader could not parse
        raise row
    row = dict(row)
    for column in spec.text_columns:
        if column in row:
            row[column] = check_text(row[column], column, escapes=escapes)
    for column in spec.optional_text_columns:
        if column in row:
            row[column] = check_text(row[column], column, required=False, escapes=escapes)
    for column in spec.answer_columns:
        if column in row:
            check_answer(row[column], column)
    try:
        record = spec.convert(row, ctx)
    except KeyError as err:
        raise RowProblem("missing_column", str(err.args[0]), f"is missing: the row has {sorted(row)}. Is this a "
                         f"copy of {spec.hub_id} in its original schema?") from None
    except RowProblem:
        raise
    except MalformedRow as err:
        raise RowProblem("malformed", None, str(err)) from None
    except (TypeError, AttributeError, ValueError, IndexError) as err:  # a cell of a type the schema never has
        raise RowProblem("malformed", None, f"{type(err).__name__}: {err}") from None
    record.question = clean_text(record.question, "question")
    if record.choices:
        record.choices = [clean_text(choice, "options") for choice in record.choices]
    if not record.answer.strip() or record.answer.lower() == "nan":
        raise RowProblem("missing_answer", spec.answer_columns[0], f"gives the gold {record.answer!r}")
    if not record.images:
        raise RowProblem("missing_image", None, f"the row has no image; every {spec.name} question needs its image")
    images = []
    for number, image in enumerate(record.images):
        try:
            images.append(checked_image(image))
        except ImageProblem as problem:
            source = getattr(image, "care_source", None)
            named = f"image {number}" + (f" ({source!r})" if source else "")
            raise RowProblem(problem.reason, None, f"{named}: {problem}") from None
    record.images = images
    return record


def _with_unique_ids(records: list[Record]) -> list[Record]:
    """Ids are unique within a load: a repeated native id gets a "~2", "~3" suffix in row order."""
    seen: Counter[str] = Counter()
    for record in records:
        seen[record.id] += 1
        if seen[record.id] > 1:
            record.id = f"{record.id}~{seen[record.id]}"
    return records


def _load_mix(spec: DatasetSpec, split: str, path, hub_id: str | None, limit: int | None,
              report: DropReport | None, selections: dict[str, Selection] | None) -> list[Record]:
    """care_mix: each component from `path/<component>` (or its own hub id), then `dedupe`."""
    if hub_id:
        raise ValueError(f"{spec.name} is the union of {', '.join(spec.components)} and has no hub id of its "
                         "own; load it from the hub without hub_id, or from a folder with one entry per component")
    if path is not None and str(path).strip() and not Path(path).expanduser().is_dir():
        raise DatasetUnavailable(f"{spec.name}: {spec.config_key}={str(path)!r} does not exist or is not a folder. "
                                 f"Set {spec.config_key} to a folder holding {', '.join(spec.components)} "
                                 "(one local copy each), or unset it to load each from the hub")
    records: list[Record] = []
    for component in spec.components:
        component_path = None
        if path is not None and str(path).strip():
            component_path = Path(path).expanduser() / component
            if not component_path.exists():
                raise DatasetUnavailable(
                    f"{spec.name}: {spec.config_key}={str(path)!r} has no {component!r} entry. Set "
                    f"{spec.config_key} to a folder holding {', '.join(spec.components)} (one local copy each)")
        rows_before = report.rows[component] if report else 0
        filtered_before = report.filtered[component] if report else 0
        loaded = load_records(component, split, path=component_path, report=report, selections=selections)
        if not (report.rows[component] - rows_before if report else len(loaded)):  # strict loads drop nothing
            where = component_path or get_spec(component).hub_id
            selection = (selections or {}).get(component)
            filtered = report.filtered[component] - filtered_before if report else 0
            if selection and selection.subset != "all":
                raise DatasetUnavailable(f"{spec.name}: the {component} component ({where}) holds no "
                                         f"{selection.subset_key}={selection.subset!r} rows in "
                                         f"{selection.splits_key}={list(selection.splits)}"
                                         f"{f' ({filtered} of other subsets)' if filtered else ''}; a mix without "
                                         "one of its parts is not the mix")
            raise DatasetUnavailable(f"{spec.name}: the {component} component ({where}) holds no rows; a mix "
                                     "without one of its parts is not the mix")
        records += loaded
    return dedupe(records)[:limit]


# ------------------------------------------------------------------------------------------ local files


def _local_rows(spec: DatasetSpec, split: str, root: Path,
                selection: Selection | None = None) -> Iterator[tuple[dict, RowContext]]:
    """The rows of `split` under `root`; the files are found (or DatasetUnavailable raised) at the call,
    the rows read as the iterator is consumed."""
    hint = (f"Set {spec.config_key} to a local copy of {spec.hub_id} (parquet/arrow/json/jsonl files plus "
            "their images), or unset it to load from the hub.")
    if not root.exists():
        raise DatasetUnavailable(f"{spec.name}: {spec.config_key}={str(root)!r} does not exist. {hint}")
    root = _config_folder(spec, root)
    if _is_saved_dataset(root):
        return _saved_dataset_rows(spec, split, root, hint, selection)
    return _file_rows(spec, split, root, _data_files(spec, split, root, hint, selection), hint)


def _file_rows(spec: DatasetSpec, split: str, root: Path, files: list[Path],
               hint: str) -> Iterator[tuple[dict, RowContext]]:
    index = 0
    for file in files:
        bases = [file.parent, *[p for p in file.parent.parents if root.is_dir() and p.is_relative_to(root)]]
        resolver = ImageResolver(bases, hint)
        config = file.parent.name if file.parent.name in spec.hub_configs else None
        for row, position in _read_file(file, spec, hint):
            yield row, RowContext(index, split, config, resolver, where=f"{file} {position}")
            index += 1


def _config_folder(spec: DatasetSpec, root: Path) -> Path:
    """A snapshot of a multi-config repo (MMMU_Pro) holds one folder per config: use this spec's."""
    configs = [c for c in spec.hub_configs if c]
    if root.is_dir() and len(configs) == 1 and (root / configs[0]).is_dir():
        return root / configs[0]
    return root


def _is_saved_dataset(root: Path) -> bool:
    return root.is_dir() and ((root / "state.json").is_file() or (root / "dataset_dict.json").is_file())


def _saved_dataset_rows(spec: DatasetSpec, split: str, root: Path, hint: str, selection: Selection | None = None):
    import datasets

    try:
        loaded = datasets.load_from_disk(str(root))
    except Exception as err:  # datasets raises several types for a damaged folder
        raise DatasetUnavailable(f"{spec.name}: cannot read saved dataset {str(root)!r} ({err}). {hint}") from err
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DatasetUnavailable(f"{spec.name}: {_asked(selection, split)}saved dataset {str(root)!r} has splits "
                                     f"{sorted(loaded)}, not {split!r}. {_split_hint(spec, selection, split, hint)}")
        loaded = loaded[split]
    elif selection is not None and len(selection.splits) > 1:
        raise DatasetUnavailable(f"{spec.name}: {_asked(selection, split)}saved dataset {str(root)!r} is one "
                                 f"Dataset, not a DatasetDict of splits. {_split_hint(spec, selection, split, hint)}")
    return _saved_rows(split, root, loaded, hint)


def _saved_rows(split: str, root: Path, loaded, hint: str):
    resolver = ImageResolver([root, *root.parents[:1]], hint)
    for index, row in enumerate(_undecoded(loaded)):
        yield row, RowContext(index, split, None, resolver, where=f"{root} ({split}) row {index}")


def _data_files(spec: DatasetSpec, split: str, root: Path, hint: str, selection: Selection | None = None) -> list[Path]:
    """The files holding `split`: named after it ("test-00000-of-00001.parquet", "testmini.json") or
    inside a folder named after it; a release whose files name no split at all (ViRL39K's
    "39Krelease.parquet") is one split, used whatever `split` says, unless a selection asks for several
    (its rows could not be told apart)."""
    several = selection is not None and len(selection.splits) > 1
    if root.is_file():
        if root.suffix not in FORMAT_PRIORITY:
            raise DatasetUnavailable(f"{spec.name}: {str(root)!r} is not a {'/'.join(FORMAT_PRIORITY)} file. {hint}")
        if several and not _names_split(root, root.parent, split):
            raise DatasetUnavailable(f"{spec.name}: {_asked(selection, split)}{str(root)!r} is one file, not named "
                                     f"after {split!r}. {_split_hint(spec, selection, split, hint)}")
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in FORMAT_PRIORITY
                   and p.name not in _NOT_DATA and not p.name.startswith("cache-")
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    matching = [f for f in files if _names_split(f, root, split)]
    named = {s for f in files for s in KNOWN_SPLITS if _names_split(f, root, s)}
    if not matching and (named or (several and files)):
        found = f"found {', '.join(sorted(named))}" if named else "no file or folder is named after a split"
        raise DatasetUnavailable(f"{spec.name}: {_asked(selection, split)}no {split!r} split under {str(root)!r} "
                                 f"({found}). {_split_hint(spec, selection, split, hint)}")
    files = matching or files
    if not files:
        raise DatasetUnavailable(f"{spec.name}: no {'/'.join(FORMAT_PRIORITY)} files under {str(root)!r}. {hint}")
    best = min(FORMAT_PRIORITY.index(f.suffix) for f in files)
    return [f for f in files if f.suffix == FORMAT_PRIORITY[best]]


def _asked(selection: Selection | None, split: str) -> str:
    return f"{selection.splits_key}={list(selection.splits)} asks for the {split!r} split; " if selection else ""


def _split_hint(spec: DatasetSpec, selection: Selection | None, split: str, hint: str) -> str:
    """What to do about a split the selection asks for and the copy lacks: fetch it, or ask for less."""
    if selection is None:
        return hint
    rest = [s for s in selection.splits if s != split]
    fewer = f"set {selection.splits_key}=[{','.join(rest)}] to train without it" if rest else \
        f"set {selection.splits_key} to splits the copy holds"
    return (f"Point {spec.config_key} at a copy holding it (the release's layout: data/{split}-*.parquet), "
            f"or {fewer}.")


def _names_split(file: Path, root: Path, split: str) -> bool:
    stem = file.name.split(".")[0]
    if stem == split or stem.startswith(f"{split}-"):
        return True
    return split in file.relative_to(root).parent.parts


def _read_file(file: Path, spec: DatasetSpec, hint: str) -> Iterator[tuple[dict | RowProblem, str]]:
    """(row, "row N" or "line N") for each row of the file; a JSONL line that does not parse is yielded
    as a RowProblem (one bad row, not a bad file); a file that cannot be read at all raises."""
    try:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = (row for batch in pq.ParquetFile(file).iter_batches(batch_size=_PARQUET_BATCH_ROWS)
                    for row in batch.to_pylist())
            yield from ((row, f"row {n}") for n, row in enumerate(rows))
        elif file.suffix == ".arrow":
            import datasets

            yield from ((row, f"row {n}") for n, row in enumerate(_undecoded(datasets.Dataset.from_file(str(file)))))
        elif file.suffix == ".jsonl":
            with file.open(encoding="utf-8", errors="surrogateescape") as handle:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        yield _json_line(line), f"line {number}"
        else:
            rows = _json_rows(json.loads(file.read_text(encoding="utf-8")), file)
            yield from ((row, f"row {n}") for n, row in enumerate(rows))
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid and json's JSONDecodeError are ValueErrors
        raise DatasetUnavailable(f"{spec.name}: cannot read {str(file)!r} ({type(err).__name__}: {err}). "
                                 f"{hint}") from err


def _json_line(line: str) -> dict | RowProblem:
    try:
        row = json.loads(line)
    except ValueError as err:
        return RowProblem("unreadable_row", None, f"not JSON ({err})")
    if not isinstance(row, dict):
        return RowProblem("unreadable_row", None, f"a JSON {type(row).__name__}, not an object of columns")
    return row


def _undecoded(dataset):
    """The rows of a `datasets.Dataset` as stored: Image cells as {"bytes", "path"}, not decoded pictures,
    so images reach care.data.images.checked_image (and memory) encoded, as local files do. Read as
    Arrow batches: nothing is cast, so nothing is written beside a user's (maybe read-only) data."""
    import datasets

    if not isinstance(dataset, datasets.Dataset):  # already plain rows
        yield from dataset
        return
    for table in dataset.with_format("arrow").iter(batch_size=_PARQUET_BATCH_ROWS):
        yield from table.to_pylist()


def _json_rows(data, file: Path) -> list[dict]:
    """A list of rows, or a dict of id -> row (MathVista's annotation files)."""
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return data
    if isinstance(data, dict) and data and all(isinstance(row, dict) for row in data.values()):
        return list(data.values())
    raise ValueError(f"{file.name} holds neither a list of rows nor a mapping of id -> row")


# -------------------------------------------------------------------------------------------------- hub


def _hub_rows(spec: DatasetSpec, split: str, hub_id: str,
             selection: Selection | None = None) -> Iterator[tuple[dict, RowContext]]:
    import datasets

    hint = f"Set {spec.config_key}=/path/to/a/local/copy, or put {hub_id} in the HF cache."
    resolver = None
    index = 0
    for config in spec.hub_configs:
        try:
            with offline_if_requested():
                loaded = datasets.load_dataset(hub_id, config, split=split)
        except Exception as err:  # the hub client raises many unrelated types for "not reachable"
            reason = f"HF_HUB_OFFLINE is set and it is not in the local cache; {err}" if hub_offline() else str(err)
            config_text = f" config {config!r}" if config else ""
            raise DatasetUnavailable(f"{spec.name}: {_asked(selection, split)}cannot load {hub_id!r}{config_text} "
                                     f"split {split!r} from the hub ({type(err).__name__}: {reason}). {hint}") from err
        if resolver is None:
            resolver = ImageResolver(_hub_image_folders(spec, hub_id, hint), hint)
        for row in _undecoded(loaded):
            yield row, RowContext(index, split, config, resolver,
                                  where=f"{hub_id}{f' ({config})' if config else ''} {split} row {index}")
            index += 1


def _hub_image_folders(spec: DatasetSpec, hub_id: str, hint: str) -> list[Path]:
    """Rows that name images by path (ViRL39K: "images/...") need the repo's image zip, extracted once
    into the datasets cache. A zip whose entries lack the "images/" prefix is extracted into an
    `images` folder, so the rows' paths resolve either way (the real zip's layout is UNVERIFIED)."""
    if not spec.hub_image_archive:
        return []
    import datasets.config
    from huggingface_hub import hf_hub_download

    try:
        with offline_if_requested():
            archive = Path(hf_hub_download(hub_id, spec.hub_image_archive, repo_type="dataset"))
    except Exception as err:
        raise DatasetUnavailable(f"{spec.name}: cannot fetch {spec.hub_image_archive} from {hub_id!r} "
                                 f"({type(err).__name__}). {hint}") from err
    folder = f"{hub_id.replace('/', '--')}-{digest(str(archive.resolve()), length=12)}"
    target = Path(datasets.config.HF_DATASETS_CACHE) / "care_extracted" / folder
    if not target.is_dir():
        with zipfile.ZipFile(archive) as bundle, staged_directory(target) as staging:
            prefixed = any(name.startswith("images/") for name in bundle.namelist())
            bundle.extractall(staging if prefixed else staging / "images")  # zipfile drops ".." and "/" prefixes
    return [target]
