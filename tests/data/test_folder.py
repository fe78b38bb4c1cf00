"""Tests for ImageFolder and the transforms it uses (to_chw_float, prepare)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.data import DataError, ImageError, ImageFolder, prepare, to_chw_float


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    red = np.zeros((4, 6, 3), dtype=np.uint8)
    red[..., 0] = 255
    _write(tmp_path / "zebra" / "z1.png", red)
    _write(tmp_path / "apple" / "b.png", np.full((4, 6), 77, dtype=np.uint8))  # grey (L mode)
    _write(tmp_path / "apple" / "sub" / "a.bmp", np.full((4, 6, 3), (1, 2, 3), dtype=np.uint8))
    (tmp_path / "apple" / "notes.txt").write_text("not an image")
    (tmp_path / "apple" / ".hidden.png").write_text("skipped")
    (tmp_path / ".git").mkdir()
    return tmp_path


def test_classes_sorted_and_labels(tree: Path) -> None:
    ds = ImageFolder(tree)
    assert ds.classes == ("apple", "zebra")
    names = [(p.relative_to(tree).as_posix(), label) for p, label in ds.samples]
    assert names == [("apple/b.png", 0), ("apple/sub/a.bmp", 0), ("zebra/z1.png", 1)]
    assert ds.targets == [0, 0, 1] and len(ds) == 3
    x, label = ds[2]
    assert label == 1 and x.shape == (3, 4, 6)
    assert x[:, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_grey_image_becomes_three_channels(tree: Path) -> None:
    x, label = ImageFolder(tree)[0]
    assert label == 0 and x.dtype == torch.float32 and x.shape == (3, 4, 6)
    assert torch.equal(x, torch.full((3, 4, 6), 77 / 255))


def test_size_and_single_channel(tree: Path) -> None:
    ds = ImageFolder(tree, size=(2, 3), channels=1)
    x, _ = ds[2]  # red image, resized: a uniform image stays uniform
    assert x.shape == (1, 2, 3)
    torch.testing.assert_close(x, torch.full((1, 2, 3), 0.299), rtol=0, atol=1e-6)


def test_corrupt_image_raises_on_access(tree: Path) -> None:
    bad = tree / "zebra" / "z0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    ds = ImageFolder(tree)
    assert len(ds) == 4
    with pytest.raises(ImageError, match=re.escape("z0.png")):
        ds[2]
    assert ds[3][1] == 1  # the other images still load


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing: image folder not found"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: folder holds no images and no class sub-folders"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "classes" / "cat").mkdir(parents=True)
    (tmp_path / "classes" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="cat: class folder holds no images"):
        ImageFolder(tmp_path / "classes")
    with pytest.raises(DataError, match="channels must be 1 or 3"):
        ImageFolder(tmp_path / "classes", channels=2)


def test_flat_folder_is_one_class(tmp_path: Path) -> None:
    _write(tmp_path / "imgs" / "a.png", np.zeros((2, 2, 3), dtype=np.uint8))
    ds = ImageFolder(tmp_path / "imgs")
    assert ds.classes == ("imgs",) and len(ds) == 1 and ds[0][1] == 0


def test_to_chw_float_exact() -> None:
    img = np.array([[[0, 51, 255], [255, 0, 102]]], dtype=np.uint8)  # (1, 2, 3)
    x = to_chw_float(img)
    assert x.shape == (3, 1, 2) and x.dtype == torch.float32
    assert torch.equal(x, torch.tensor([[[0, 255]], [[51, 0]], [[255, 102]]]) / 255.0)
    with pytest.raises(DataError, match=r"expected a uint8 \(H, W, 3\) image, got float64"):
        to_chw_float(img.astype(np.float64))


def test_prepare_resize_and_luminance() -> None:
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    img[:, :2] = (255, 0, 0)
    img[:, 2:] = (0, 0, 255)
    x = prepare(img, size=(2, 2), channels=3)
    # Pillow's antialiased bilinear at 2x shrink: a triangle of radius 2 input px; output
    # column 0 weighs input columns 0, 1, 2 by 0.75, 0.75, 0.25 -> red 255 * 1.5 / 1.75 = 219
    hi, lo = 219 / 255, 36 / 255
    assert torch.equal(x, torch.tensor([[[hi, lo]] * 2, [[0.0, 0.0]] * 2, [[lo, hi]] * 2]))
    g = prepare(img, size=(4, 4), channels=1)
    torch.testing.assert_close(
        g[0, 0], torch.tensor([0.299, 0.299, 0.114, 0.114]), rtol=0, atol=1e-6
    )
    with pytest.raises(DataError, match="channels must be 1 or 3, got 2"):
        prepare(img, size=(2, 2), channels=2)
