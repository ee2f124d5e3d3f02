"""Argument checks shared by the objective's entry points.

Every message names the offending argument: these functions sit between a trainer and a loss, and
a shape mix-up there otherwise surfaces as a broadcasting error three calls deeper.
"""

from __future__ import annotations

import torch


def check_tensor(
    name: str,
    value: object,
    shape: tuple[int | None, ...],
    kind: str,
    dims_text: str,
    finite: bool = True,
) -> torch.Tensor:
    """Return `value` if it is a tensor of `kind` ("bool", "int", "float") and the given shape.

    `None` entries in `shape` accept any size; `dims_text` names the dimensions for the message.
    `finite=False` skips the NaN/inf scan, for large tensors whose caller checks a cheaper derivative.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {dims_text}, got {type(value).__name__}")
    if value.dim() != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, shape, strict=True)
    ):
        raise ValueError(
            f"{name} must have shape {dims_text} = {_shape_text(shape)}, got {tuple(value.shape)}"
        )
    if kind == "bool" and value.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {value.dtype}")
    if kind == "int" and (value.dtype == torch.bool or value.is_floating_point() or value.is_complex()):
        raise TypeError(f"{name} must be an integer tensor, got {value.dtype}")
    if kind == "float":
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
        if finite and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite (no NaN or inf)")
    return value


def check_nonnegative(name: str, value: torch.Tensor, hint: str = "") -> None:
    if value.numel() and bool((value < 0).any()):
        raise ValueError(f"{name} must be >= 0 everywhere{hint}")


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if size is None else str(size) for size in shape) + ")"
