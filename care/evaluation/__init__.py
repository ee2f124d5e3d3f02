"""One evaluation protocol for every benchmark and for the before/after check of a training run."""

from care.evaluation.protocol import sample, summarize

__all__ = ["sample", "summarize"]
