"""The one safe image loader of convscope: any allowed image file or bytes -> uint8 (H, W, 3) RGB.

Every image file the project opens goes through `load_image`. It refuses, with one clear
`ImageError` line naming the file: formats outside the allow-list, non-image files, files
over `max_bytes`, images declaring more than `max_pixels` (checked from the header, before
any pixel is decoded), and truncated or corrupt files (the image must decode completely;
Pillow's LOAD_TRUNCATED_IMAGES is never enabled).

    >>> from convscope.data import load_image
    >>> img = load_image("cat.png")        # (H, W, 3) uint8
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from convscope.data.errors import DataError

__all__ = ["ALLOWED_FORMATS", "IMAGE_SUFFIXES", "ImageError", "load_image"]

# Pillow format names we agree to decode (the JPEG opener also takes multi-picture MPO files).
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
# File-name endings treated as images when scanning folders (the content is still checked).
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
)


class ImageError(DataError):
    """An image cannot be loaded safely; the one-line message names the file and the problem."""


def _fail(name: str, problem: str) -> ImageError:
    one_line = " ".join(problem.split())  # decoder messages may carry newlines
    return ImageError(f"{name}: {one_line}")


def _read_source(source: str | Path | bytes, max_bytes: int) -> tuple[str, bytes]:
    """Return (display name, raw file bytes), refusing missing files and files over max_bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        name = "<bytes>"
    elif isinstance(source, str | Path):
        path = Path(source)
        name = str(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise _fail(name, "file not found") from None
        except OSError as err:
            raise _fail(name, f"cannot read file ({err.strerror or err})") from None
        if path.is_dir():
            raise _fail(name, "is a directory, not an image file")
        if size > max_bytes:
            raise _fail(name, f"file is {size} bytes, over the limit max_bytes={max_bytes}")
        try:
            with path.open("rb") as fh:
                data = fh.read(max_bytes + 1)  # bounded even if the file grew since stat()
        except OSError as err:
            raise _fail(name, f"cannot read file ({err.strerror or err})") from None
    else:
        raise TypeError(f"load_image: source must be a path or bytes, not {type(source).__name__}")
    if len(data) > max_bytes:
        raise _fail(name, f"file is over the limit max_bytes={max_bytes}")
    if not data:
        raise _fail(name, "file is empty, not an image")
    return name, data


_BAND_PIXELS = 2**18  # conversions run over bands of rows: temporaries stay a few MiB


def _band_to_rgb(im: Image.Image) -> np.ndarray:
    """Convert a (small) Pillow image of any mode to uint8 (h, W, 3); alpha composited on white."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":  # 16-bit grey (PNG, TIFF): scale 0..65535 -> 0..255
        grey = np.clip(np.asarray(im).astype(np.int64), 0, 65535)  # (h, W)
        grey8 = ((grey + 128) // 257).astype(np.uint8)  # == rint(v / 257) for integers v
        return np.repeat(grey8[:, :, None], 3, axis=2)  # (h, W, 3)
    if mode == "F":  # float grey: Pillow's convention, values taken as 0..255
        grey = np.asarray(im, dtype=np.float64)
        grey8 = np.rint(np.clip(np.nan_to_num(grey), 0, 255)).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if not has_alpha:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)  # (h, W, 3)
    rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)  # (h, W, 4)
    alpha = rgba[:, :, 3:4]  # (h, W, 1) in 0..255
    # out = rgb * a + white * (1 - a), rounded half up; at most 65152, so uint16 holds it
    return ((rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image to uint8 (H, W, 3), one band of rows at a time.

    Beyond Pillow's decoded image, memory is the (H, W, 3) result plus a few MiB for one
    band's temporaries, whatever the mode (whole-image temporaries took 44 bytes per pixel).
    """
    width, height = im.size
    out = np.empty((height, width, 3), dtype=np.uint8)  # (H, W, 3)
    rows = max(1, _BAND_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        out[top:bottom] = _band_to_rgb(im.crop((0, top, width, bottom)))
    return out


def load_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = 40_000_000,
    max_bytes: int = 50 * 2**20,
) -> np.ndarray:
    """Load an image file (or its bytes) as uint8 (H, W, 3) RGB.

    Grey, palette and 16-bit images become RGB; an alpha channel is composited on white;
    EXIF orientation is applied; a GIF or multi-page TIFF gives its first frame. Raises
    ImageError for a format outside ALLOWED_FORMATS, a non-image or truncated file, a file
    over `max_bytes`, or an image over `max_pixels` (Pillow's own decompression-bomb limit,
    Image.MAX_IMAGE_PIXELS, also applies and is reported the same way).
    """
    if max_pixels <= 0:
        raise ValueError(f"load_image: max_pixels must be positive, got {max_pixels}")
    if max_bytes <= 0:
        raise ValueError(f"load_image: max_bytes must be positive, got {max_bytes}")
    name, data = _read_source(source, max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _fail(
                name, f"image is over the pixel limit (decompression bomb?): {err}"
            ) from None
        except UnidentifiedImageError:
            raise _fail(
                name, f"not a recognised image (allowed formats: {', '.join(ALLOWED_FORMATS)})"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise _fail(name, f"corrupt image header ({err})") from None
        except Exception as err:  # a plugin's parser on hostile bytes: still one ImageError line
            raise _fail(name, f"corrupt image header ({type(err).__name__}: {err})") from err
        with im:
            width, height = im.size
            fmt = im.format
            if width * height > max_pixels:
                raise _fail(
                    name,
                    f"image is {width}x{height} = {width * height} pixels, over the pixel limit "
                    f"max_pixels={max_pixels}",
                )
            if width == 0 or height == 0:
                raise _fail(name, f"image has zero size {width}x{height}")
            try:
                im.load()  # full decode of the first frame; raises on truncated data
                upright = ImageOps.exif_transpose(im)  # apply the EXIF orientation tag
                rgb = _to_rgb(upright)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                raise _fail(name, f"image is over the pixel limit: {err}") from None
            except MemoryError:
                raise _fail(name, "not enough memory to decode the image") from None
            except Exception as err:  # any decoder failure becomes one clear ImageError line
                raise _fail(
                    name, f"corrupt or truncated {fmt} image ({type(err).__name__}: {err})"
                ) from err
    return rgb
