"""Tests for open_dataset: each accepted spec gives (x float (C, H, W), label int) items."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.data import ACCEPTED, DataError, digits, open_dataset, photo_crops
from convscope.data.transforms import luminance


def test_builtin_photo_crops() -> None:
    ds = open_dataset("builtin:photo-crops:test", size=(32, 32), channels=3)
    X, y = photo_crops("test", 2000)
    assert len(ds) == 2000
    x, label = ds[5]
    assert torch.equal(x, X[5]) and label == int(y[5]) and isinstance(label, int)
    grey = open_dataset("builtin:photo-crops:test", size=(32, 32), channels=1)
    g, _ = grey[5]
    assert g.shape == (1, 32, 32)
    torch.testing.assert_close(g, luminance(X[5]), rtol=0, atol=0)


def test_builtin_digits_with_channels_and_size() -> None:
    X, y = digits("train", size=24)
    ds = open_dataset("builtin:digits", size=(24, 24), channels=1)
    assert len(ds) == len(y) and torch.equal(ds[3][0], X[3]) and ds[3][1] == int(y[3])
    rgb = open_dataset("builtin:digits", size=(24, 24), channels=3)
    assert torch.equal(rgb[3][0], X[3].expand(3, -1, -1))


def test_cifar_directory(tmp_path: Path) -> None:
    rec = bytes([4]) + bytes([255]) + bytes(3071)  # label 4, red top-left pixel
    (tmp_path / "data_batch_1.bin").write_bytes(rec * 2)
    ds = open_dataset(str(tmp_path), size=(32, 32), channels=3)
    assert len(ds) == 2 and ds[1][1] == 4
    assert ds[1][0][:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert ds.classes[4] == "deer"


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_mnist_directory(tmp_path: Path) -> None:
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[2, 0, 0] = 255
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(images))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(np.array([1, 2, 3], dtype=np.uint8)))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(images[:1]))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([9], dtype=np.uint8)))
    ds = open_dataset(str(tmp_path), size=(28, 28), channels=3)
    assert len(ds) == 3
    x, label = ds[2]
    assert label == 3 and x.shape == (3, 28, 28) and x[:, 0, 0].tolist() == [1.0, 1.0, 1.0]


def test_image_folder_and_arrays(tmp_path: Path) -> None:
    for cls, colour in (("b", (0, 0, 255)), ("a", (255, 0, 0))):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8), colour).save(tmp_path / "imgs" / cls / "1.png")
    ds = open_dataset(str(tmp_path / "imgs"), size=(4, 4), channels=3)
    assert [ds[i][1] for i in range(2)] == [0, 1]
    assert torch.equal(ds[1][0], torch.zeros(3, 4, 4).index_fill_(0, torch.tensor([2]), 1.0))
    np.savez(tmp_path / "a.npz", x=np.full((2, 8, 8), 255, dtype=np.uint8), y=np.array([0, 1]))
    arr = open_dataset(str(tmp_path / "a.npz"), size=(4, 4), channels=3)
    x, label = arr[1]
    assert label == 1 and torch.equal(x, torch.ones(3, 4, 4))


def test_unknown_spec_lists_what_is_accepted(tmp_path: Path) -> None:
    for spec in ("builtin:imagenet", str(tmp_path / "nope"), "builtin:digits:dev"):
        with pytest.raises(DataError) as err:
            open_dataset(spec, size=(32, 32), channels=3)
        msg = str(err.value)
        assert msg.startswith(spec + ":") and "\n" not in msg
        assert all(a in msg for a in ACCEPTED)
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(DataError, match=re.escape("unsupported file type .pt")):
        open_dataset(str(tmp_path / "model.pt"), size=(32, 32), channels=3)
