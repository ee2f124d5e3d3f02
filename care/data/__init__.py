"""Datasets in one record schema (see `care.data.schema`)."""

from care.data.schema import RESPONSE_INSTRUCTION, Record, to_prompt_row

__all__ = ["RESPONSE_INSTRUCTION", "Record", "to_prompt_row"]
