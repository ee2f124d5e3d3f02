"""Every image is decoded and checked once, when its row is loaded, and leaves as plain RGB.

A picture that cannot be shown to the model should fail (or be dropped) when the data is read, naming
its row, not in the middle of a training step hours later. `checked_image` therefore:

- decodes the whole image (a truncated file fails here, not in the processor);
- refuses zero-size images and aspect ratios beyond `MAX_ASPECT_RATIO` (Qwen-VL's `smart_resize`
  raises on them);
- shrinks images over `MAX_KEPT_PIXELS` (far above any backbone's `max_pixels`, so what the processor
  sees does not change), decoding JPEGs at reduced size (`draft`) so a 12000x12000 scan costs little;
  an image too large to decode safely at all (over `MAX_DECODED_PIXELS`, PIL's own bomb limit) is a
  problem, never PIL's DecompressionBombError mid-run;
- converts every mode to correct RGB: 16-bit greys are scaled (PIL's convert clips them to white),
  alpha and transparent palettes are composited onto white, CMYK and palettes converted.

An RGB image within the limits is returned as it was read (still lazily decoded, so a 39K-image set
stays at its compressed size); any other leaves as a re-encoded PNG of the converted pixels.
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

MAX_ASPECT_RATIO = 200  # transformers' Qwen2-VL smart_resize: "absolute aspect ratio must be smaller than 200"
MAX_KEPT_PIXELS = 4096 * 4096  # above every backbone's max_pixels (Qwen's default is 12.8M): shrunk to this
MAX_DECODED_PIXELS = 2 * Image.MAX_IMAGE_PIXELS  # PIL raises DecompressionBombError beyond this (~179M)
WHITE = (255, 255, 255)


class ImageProblem(ValueError):
    """An image that cannot be given to the model; `reason` is the short name drops are counted under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def open_encoded(data: bytes) -> Image.Image:
    """A lazily decoded image: only the header is parsed now (a non-image fails here), pixels on first use.

    Lazy decoding keeps a 39K-row training set at its compressed size in memory. The encoded bytes are
    kept on the image (`care_encoded`) so `checked_image` and the digests can reopen it without decoding
    the image in place.
    """
    try:
        with bomb_guard_lifted():  # the header only; checked_image judges the size
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageProblem("undecodable_image", f"its {len(data)} bytes are in no image format PIL reads") from None
    except (OSError, SyntaxError) as err:
        raise ImageProblem("undecodable_image", f"its bytes are not a readable image ({err})") from None
    image.care_encoded = data
    return image


def checked_image(image: Image.Image) -> Image.Image:
    """`image` as the model should see it (see the module docstring); raises ImageProblem."""
    encoded = getattr(image, "care_encoded", None)
    if encoded is None:  # made in memory (synthetic boards) or decoded by `datasets`
        return _normalised(_loaded(image), image.size)
    with bomb_guard_lifted():
        try:
            fresh = Image.open(io.BytesIO(encoded))
        except (OSError, SyntaxError) as err:
            raise ImageProblem("undecodable_image", f"not a readable image ({err})") from None
    size = fresh.size
    _check_shape(size)
    if size[0] * size[1] > MAX_KEPT_PIXELS and fresh.format == "JPEG":
        fresh.draft("RGB", _fitting(size, MAX_KEPT_PIXELS))  # decode at 1/2, 1/4 or 1/8 scale
    elif size[0] * size[1] > MAX_DECODED_PIXELS:
        raise ImageProblem("image_too_large", f"{size[0]}x{size[1]} pixels is over the {MAX_DECODED_PIXELS:,} "
                           "that can be decoded safely, and its format has no reduced-size decoding")
    with bomb_guard_lifted():
        loaded = _loaded(fresh)
    if loaded.mode == "RGB" and loaded.size == size and size[0] * size[1] <= MAX_KEPT_PIXELS:
        return image  # already what the model needs: keep the lazy original, and its content digest
    return _reencoded(_normalised(loaded, size))


def to_rgb(image: Image.Image) -> Image.Image:
    """Correct 8-bit RGB for any PIL mode (see the module docstring)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit greys (PNG): 0..65535 -> 0..255
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values * 255.0 / 65535.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":  # float greys: taken as 0..1 when they fit there, else as 0..255
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
        grey = np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _loaded(image: Image.Image) -> Image.Image:
    """Decode every pixel now; a truncated or corrupt file raises ImageProblem."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # a library set it globally: a cut-off image would load as grey
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated images could not be detected")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:  # "image file is truncated", broken data streams
        raise ImageProblem("undecodable_image", f"its pixels do not decode ({err})") from None
    return image


def _check_shape(size: tuple[int, int]) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageProblem("empty_image", f"the image is {width}x{height} pixels")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageProblem("aspect_ratio", f"the image is {width}x{height} pixels, an aspect ratio of {ratio:.0f}; "
                           f"the Qwen-VL processors accept at most {MAX_ASPECT_RATIO}")


def _normalised(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    _check_shape(size)
    rgb = to_rgb(image)
    if rgb.width * rgb.height > MAX_KEPT_PIXELS:
        rgb = rgb.resize(_fitting(rgb.size, MAX_KEPT_PIXELS), Image.Resampling.BICUBIC)
    return rgb


def _fitting(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """The largest size with the same aspect ratio and at most `max_pixels` pixels."""
    width, height = size
    if width * height <= max_pixels:
        return size
    scale = (max_pixels / (width * height)) ** 0.5
    return max(1, int(width * scale)), max(1, int(height * scale))


def _reencoded(image: Image.Image) -> Image.Image:
    """A lossless PNG of `image`, opened lazily as loaded images are."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return open_encoded(buffer.getvalue())


@contextmanager
def bomb_guard_lifted():
    """Open and decode without PIL's decompression-bomb check: the size was checked above (or is
    about to be, from the header alone), so an oversized image becomes a named problem, not an error."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit
