"""Tests for convscope.data.image.load_image: round trips, conversions and every refusal."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convscope.data import DataError, ImageError, load_image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _blank_1bit_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit grey PNG of the given size, small on disk (zeros compress well)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    row = bytes(1 + (width + 7) // 8)  # filter byte 0 + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _save(img: Image.Image, path: Path, **kw: object) -> Path:
    img.save(path, **kw)
    return path


def _one_line(err: pytest.ExceptionInfo[ImageError]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_png_round_trip_exact(tmp_path: Path) -> None:
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 3  # (H, W, 3)
    path = _save(Image.fromarray(rgb), tmp_path / "a.png")
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(load_image(path.read_bytes()), rgb)  # bytes source
    np.testing.assert_array_equal(load_image(str(path)), rgb)  # str source


def test_jpeg_round_trip_matches_pillow_decode(tmp_path: Path) -> None:
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[:, :] = (200, 100, 50)
    path = _save(Image.fromarray(rgb), tmp_path / "a.jpg", quality=95)
    out = load_image(path)
    with Image.open(path) as im:
        oracle = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(out, oracle)
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 3  # JPEG is lossy, but close


def test_gif_first_frame_and_palette(tmp_path: Path) -> None:
    frames = []
    for index in (0, 1):  # frame 0 all red, frame 1 all blue
        f = Image.new("P", (3, 2), index)
        f.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
        frames.append(f)
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = load_image(path)
    assert out.shape == (2, 3, 3)
    assert (out == np.array([255, 0, 0], dtype=np.uint8)).all()


def test_palette_png_converted(tmp_path: Path) -> None:
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 40, 50, 60] + [0, 0, 0] * 254)
    p.putpixel((1, 0), 1)
    out = load_image(_save(p, tmp_path / "p.png"))
    np.testing.assert_array_equal(out, [[[10, 20, 30], [40, 50, 60]]])


def test_grey_and_16bit_grey_converted(tmp_path: Path) -> None:
    grey = np.array([[0, 77, 255]], dtype=np.uint8)
    out = load_image(_save(Image.fromarray(grey), tmp_path / "g.png"))
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))
    g16 = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    out16 = load_image(_save(Image.fromarray(g16), tmp_path / "g16.png"))
    np.testing.assert_array_equal(out16[0, :, 0], [0, 100, 255])
    assert (out16 == out16[:, :, :1]).all()


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    rgba = np.array(
        [[[255, 0, 0, 0], [255, 0, 0, 255], [0, 0, 255, 128], [10, 20, 30, 51]]], dtype=np.uint8
    )
    out = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "t.png"))
    # c * a / 255 + 255 * (1 - a / 255), rounded: 0*128/255 + 255*127/255 = 127.0 -> 127
    # 10*51/255 + 255*204/255 = 2 + 204 = 206; 20*51/255 + 204 = 208; 30*51/255 + 204 = 210
    np.testing.assert_array_equal(
        out, [[[255, 255, 255], [255, 0, 0], [127, 127, 255], [206, 208, 210]]]
    )


def test_bmp_and_tiff_allowed(tmp_path: Path) -> None:
    rgb = np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8)
    for name in ("a.bmp", "a.tif", "a.webp"):
        kw = {"lossless": True} if name.endswith("webp") else {}
        np.testing.assert_array_equal(
            load_image(_save(Image.fromarray(rgb), tmp_path / name, **kw)), rgb
        )


def test_text_file_named_png_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_text("hello, I am not an image\n")
    with pytest.raises(ImageError) as err:
        load_image(path)
    msg = _one_line(err)
    assert msg.startswith(str(path) + ": ")
    assert "not a recognised image" in msg
    assert isinstance(err.value, ValueError) and isinstance(err.value, DataError)


def test_format_outside_allow_list_refused(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (4, 4)), tmp_path / "a.ppm")  # Pillow reads PPM, we do not
    with pytest.raises(ImageError, match="not a recognised image"):
        load_image(path)


def test_truncated_png_refused(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError) as err:
        load_image(path)
    msg = _one_line(err)
    assert str(path) in msg and "truncated" in msg


def test_truncated_jpeg_refused(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG")
    with pytest.raises(ImageError, match="truncated"):
        load_image(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])


def test_pixel_limit_checked_from_header(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_blank_1bit_png(7000, 7000))  # 49 M pixels > 40 M default, ~60 kB on disk
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageError) as err:
        load_image(path)
    msg = _one_line(err)
    assert str(path) in msg
    assert "7000x7000 = 49000000 pixels, over the pixel limit max_pixels=40000000" in msg
    small = _save(Image.new("RGB", (10, 10)), tmp_path / "s.png")
    with pytest.raises(ImageError, match="pixel limit max_pixels=99"):
        load_image(small, max_pixels=99)
    assert load_image(small, max_pixels=100).shape == (10, 10, 3)


def test_pillow_decompression_bomb_becomes_image_error(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_blank_1bit_png(20000, 20000))  # 400 M pixels: Pillow refuses at open
    with pytest.raises(ImageError) as err:
        load_image(path, max_pixels=10**9)
    assert "pixel limit" in _one_line(err)


def test_max_bytes_refused(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (20, 20), (1, 2, 3)), tmp_path / "a.png")
    size = path.stat().st_size
    with pytest.raises(ImageError) as err:
        load_image(path, max_bytes=size - 1)
    assert f"file is {size} bytes, over the limit max_bytes={size - 1}" in _one_line(err)
    assert load_image(path, max_bytes=size).shape == (20, 20, 3)
    with pytest.raises(ImageError, match="<bytes>: file is over the limit max_bytes=10"):
        load_image(path.read_bytes(), max_bytes=10)


def test_missing_empty_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=re.escape("nope.png: file not found")):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


_NOISE_PNG = io.BytesIO()
Image.fromarray(np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
    _NOISE_PNG, format="PNG"
)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(_NOISE_PNG.getvalue()) - 1), st.integers(0, 255), st.integers(1, 400))
def test_corrupted_bytes_give_array_or_image_error(pos: int, value: int, cut: int) -> None:
    data = bytearray(_NOISE_PNG.getvalue())
    data[pos] = value
    try:
        out = load_image(bytes(data[:cut]) if cut < len(data) else bytes(data))
    except ImageError as err:
        assert "\n" not in str(err)
    else:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "F", "RGB"])
def test_conversion_memory_per_pixel_is_bounded(mode: str) -> None:
    """Conversions run over bands of rows: the traced peak stays under 8 bytes per pixel
    (it was 44 for RGBA and 24 for 16-bit grey when whole-image temporaries were used)."""
    import tracemalloc

    h, w = 1024, 2048
    ramp = np.tile(np.arange(w, dtype=np.uint32) % 251, (h, 1))  # (H, W): compresses well
    if mode == "RGBA":
        img = Image.fromarray(np.stack([ramp, ramp, ramp, 255 - ramp], axis=2).astype(np.uint8))
    elif mode == "I;16":
        img = Image.fromarray((ramp * 257).astype(np.uint16))
    elif mode == "F":
        img = Image.fromarray(ramp.astype(np.float32))
    else:
        img = Image.fromarray(np.stack([ramp] * 3, axis=2).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="TIFF" if mode == "F" else "PNG")
    data = buf.getvalue()
    tracemalloc.start()
    try:
        out = load_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (h, w, 3)
    assert peak < 8 * h * w, f"{peak / (h * w):.1f} bytes per pixel"
    expected = ramp.astype(np.uint8)  # every mode maps the ramp back to itself (alpha: see below)
    if mode == "RGBA":  # (v * (255 - v) + 255 * v + 127) // 255 composited on white
        v = ramp.astype(np.int64)
        expected = ((v * (255 - v) + 255 * v + 127) // 255).astype(np.uint8)
    np.testing.assert_array_equal(out[:, :, 0], expected)
    np.testing.assert_array_equal(out[:, :, 2], expected)
