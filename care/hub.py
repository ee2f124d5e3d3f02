"""The Hugging Face hub switch both loaders honour: HF_HUB_OFFLINE, read when asked, not at import."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set to a true value now."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def offline_if_requested() -> Iterator[None]:
    """`datasets` and `huggingface_hub` read HF_HUB_OFFLINE at import; honour it if set later too."""
    if not hub_offline():
        yield
        return
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved
