"""Dataset adapters: each public dataset's real columns -> the one `Record` schema.

`registry.SPECS` names every dataset; `care.data.loading.load_records` reads one by name.
"""

from care.data.adapters.common import (
    DatasetUnavailable,
    MalformedRow,
    clean_placeholders,
    parse_options_literal,
)
from care.data.adapters.mix import dedupe
from care.data.adapters.registry import DATASET_NAMES, SPECS, DatasetSpec, Selection, approx_rows, get_spec

__all__ = [
    "DATASET_NAMES",
    "SPECS",
    "DatasetSpec",
    "DatasetUnavailable",
    "MalformedRow",
    "Selection",
    "approx_rows",
    "clean_placeholders",
    "dedupe",
    "get_spec",
    "parse_options_literal",
]
