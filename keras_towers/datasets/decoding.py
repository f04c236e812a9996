"""Decode encoded images of any common kind to uint8 RGB arrays with Pillow.

Users' own image-text data come as PNG, JPEG, WebP, GIF, BMP, TIFF, ... in
every pixel mode those formats allow. `decode_image` turns all of them into
one layout, uint8 `(H, W, 3)` RGB, so that pipelines downstream never see a
grayscale, palette, 16-bit or transparent image:

- grayscale (`1`, `L`) is repeated to three channels;
- palette images (`P`, `PA`) are expanded through their palette;
- transparency (an alpha channel, a palette's transparent entries, or a
  PNG `tRNS` colour key) is composited onto white, as
  `keras_towers.ContrastivePreprocessor` does for RGBA arrays;
- 16-bit grayscale (`I;16*`) is scaled to 8 bit (65535 -> 255), not clipped
  as `PIL.Image.convert("L")` does; 32-bit integer images (`I`) are read as
  16-bit values; float images (`F`) as `[0, 1]` when no value exceeds 1,
  else as `[0, 255]`;
- CMYK (including Adobe's inverted JPEGs) and YCbCr convert to RGB;
- the EXIF orientation tag of photos is applied;
- animated GIF / WebP / PNG give their first frame.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

# Modes whose pixels are 16- or 32-bit integers on one channel.
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Modes Pillow stores with an alpha band (premultiplied or not).
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageDecodeError(ValueError):
    """An image could not be read or decoded.

    Attributes:
        file: str. The file (or other source) of the image.
        reason: str. Why it failed, in words.
    """

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite a uint8 RGBA array onto a white background.

    Rounds `rgb * a + 255 * (1 - a)` (with `a = alpha / 255`) to the nearest
    integer, in exact integer arithmetic.

    Args:
        rgba: uint8 array `(..., 4)`.

    Returns:
        uint8 array `(..., 3)`.

    Example:

    ```python
    composite_on_white(np.array([[[0, 0, 0, 0]]], "uint8"))  # [[[255, 255, 255]]]
    ```
    """
    rgba = np.asarray(rgba)
    if rgba.dtype != np.uint8 or rgba.shape[-1:] != (4,):
        raise ValueError(
            "`rgba` must be a uint8 array with 4 channels on the last axis. "
            f"Received dtype {rgba.dtype} and shape {rgba.shape}."
        )
    rgb = rgba[..., :3].astype(np.int32)
    alpha = rgba[..., 3:].astype(np.int32)
    # (num + 127) // 255 rounds num / 255 to nearest for num >= 0.
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _wide_gray_to_rgb(image: Image.Image) -> np.ndarray:
    values = np.asarray(image).astype(np.float64)
    # 16-bit PNG/TIFF are the common source; a 32-bit `I` image is read as
    # 16-bit too (Pillow opens some 16-bit files as `I`).
    gray = np.round(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    transparency = image.info.get("transparency")
    if isinstance(transparency, int):
        alpha = np.where(values == transparency, 0, 255).astype(np.uint8)
        rgb = composite_on_white(np.concatenate([rgb, alpha[..., None]], -1))
    return rgb


def _float_to_rgb(image: Image.Image) -> np.ndarray:
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if values.size and values.max() <= 1.0:
        values = values * 255.0
    gray = np.round(np.clip(values, 0, 255)).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def _has_transparency(image: Image.Image) -> bool:
    if image.mode in _ALPHA_MODES:
        return True
    # Palette entries with alpha, or a PNG tRNS colour key on L / RGB.
    return image.mode in ("P", "1", "L", "RGB") and "transparency" in image.info


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in _WIDE_GRAY_MODES:
        return _wide_gray_to_rgb(image)
    if mode == "F":
        return _float_to_rgb(image)
    if _has_transparency(image):
        return composite_on_white(np.asarray(image.convert("RGBA"), np.uint8))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, np.uint8)


def decode_image(data: bytes, file: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (PNG, JPEG, WebP, GIF, BMP, ...) to RGB.

    See the module docstring for how each pixel mode is converted.

    Args:
        data: bytes. The encoded image file's contents.
        file: str. A name for the image used in error messages.

    Returns:
        uint8 NumPy array `(H, W, 3)`.

    Raises:
        ImageDecodeError: the data are empty, not an image Pillow can
            read, truncated or corrupt; the message names `file` and why.

    Example:

    ```python
    with open("cat.png", "rb") as f:
        image = keras_towers.datasets.decode_image(f.read(), "cat.png")
    ```
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"`data` must be bytes (an encoded image). Received "
            f"{type(data).__name__} for {file}."
        )
    if len(data) == 0:
        raise ImageDecodeError(file, "empty file (0 bytes)")
    try:
        # Pillow warns (rather than fails) on oversized images and some
        # recoverable oddities; decoding should not spam those per image.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()  # Pillow decodes lazily; truncation shows up here.
    except UnidentifiedImageError:
        raise ImageDecodeError(file, "not an image file Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(
            file, f"image too large to decode safely ({e})"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        # Pillow reports truncated or corrupt data with these types.
        raise ImageDecodeError(file, f"corrupt or truncated image ({e})") from None
    try:
        transposed = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not lose the pixels
        transposed = None
    if transposed is not None:
        image = transposed
    try:
        pixels = _to_rgb(image)
    except (OSError, ValueError) as e:
        raise ImageDecodeError(
            file, f"unsupported pixel mode {image.mode!r} ({e})"
        ) from None
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageDecodeError(file, f"image has no pixels (shape {pixels.shape})")
    return np.ascontiguousarray(pixels)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read and decode an image file to uint8 RGB `(H, W, 3)`.

    The file is only read, never modified.

    Args:
        path: str or path-like. The image file.

    Returns:
        uint8 NumPy array `(H, W, 3)`.

    Raises:
        ImageDecodeError: the file is missing, unreadable, empty or not a
            decodable image; the message names the file and why.

    Example:

    ```python
    image = keras_towers.datasets.read_image("cat.png")
    ```
    """
    file = os.fsdecode(path)
    try:
        with open(file, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageDecodeError(file, "file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(file, "is a directory, not an image file") from None
    except OSError as e:
        raise ImageDecodeError(file, f"cannot read file ({e.strerror or e})") from None
    return decode_image(data, file)
