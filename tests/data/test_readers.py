"""Tests for the user-data readers: CIFAR-10 binary batches, IDX files, numpy arrays."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from convscope.data import (
    ArrayDataset,
    CIFAR10Bin,
    DataError,
    MNISTIdx,
    read_cifar10_batch,
    read_idx,
)
from convscope.data.cifar_bin import CIFAR10_CLASSES

# ---------------------------------------------------------------- CIFAR-10


def _cifar_records() -> tuple[bytes, np.ndarray, list[int]]:
    """Three records: a red-only top-left pixel, a green ramp, and a blue bottom-right pixel."""
    images = np.zeros((3, 3, 32, 32), dtype=np.uint8)  # (N, C, H, W)
    images[0, 0, 0, 0] = 255  # red plane, row 0, col 0
    images[1, 1] = np.arange(1024, dtype=np.uint32).reshape(32, 32) % 251  # green plane
    images[2, 2, 31, 31] = 7  # blue plane, last pixel
    labels = [3, 9, 0]
    raw = b"".join(bytes([lab]) + images[i].tobytes() for i, lab in enumerate(labels))
    return raw, images, labels


def test_cifar_batch_reads_back_exactly(tmp_path: Path) -> None:
    raw, images, labels = _cifar_records()
    # byte 1 of the file is the first red pixel, byte 1 + 1024 the first green one
    assert raw[0] == 3 and raw[1] == 255 and raw[1 + 1024] == 0
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(raw)
    X, y = read_cifar10_batch(path)
    assert X.dtype == np.uint8 and X.shape == (3, 3, 32, 32)
    assert y.dtype == np.int64 and y.tolist() == labels
    np.testing.assert_array_equal(X, images)
    assert X[0, :, 0, 0].tolist() == [255, 0, 0]  # the red-only pixel is in channel 0
    assert X[2, :, 31, 31].tolist() == [0, 0, 7]


def test_cifar_bad_length_and_label(tmp_path: Path) -> None:
    raw, _, _ = _cifar_records()
    short = tmp_path / "short.bin"
    short.write_bytes(raw[:-1])
    with pytest.raises(
        DataError, match=r"short.bin: 9218 bytes is not a whole number of CIFAR-10 records \(3073"
    ):
        read_cifar10_batch(short)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(raw[:3073] + bytes([10]) + raw[3074:])
    with pytest.raises(
        DataError, match=re.escape("bad.bin: record 1 has label 10, CIFAR-10 labels are 0..9")
    ):
        read_cifar10_batch(bad)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="0 bytes"):
        read_cifar10_batch(empty)


def test_cifar_dataset_from_directory(tmp_path: Path) -> None:
    raw, images, labels = _cifar_records()
    (tmp_path / "data_batch_1.bin").write_bytes(raw)
    (tmp_path / "data_batch_2.bin").write_bytes(raw[:3073])
    (tmp_path / "test_batch.bin").write_bytes(raw[3073:])
    ds = CIFAR10Bin(tmp_path)
    assert len(ds) == 4 and ds.classes == CIFAR10_CLASSES
    x, label = ds[3]  # first record of data_batch_2
    assert label == 3 and x.dtype == torch.float32 and x.shape == (3, 32, 32)
    assert x[0, 0, 0].item() == 1.0 and x[1, 0, 0].item() == 0.0 and float(x.sum()) == 1.0
    test = CIFAR10Bin(tmp_path, split="test")
    assert len(test) == 2 and [test[i][1] for i in range(2)] == labels[1:]
    torch.testing.assert_close(
        test[0][0], torch.from_numpy(images[1]).float() / 255, rtol=0, atol=0
    )
    names = [f"c{i}" for i in range(10)]
    (tmp_path / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    assert CIFAR10Bin([tmp_path / "test_batch.bin"]).classes == tuple(names)
    with pytest.raises(
        DataError, match=re.escape("test_batch.bin: not a directory of CIFAR-10 batches")
    ):
        CIFAR10Bin(tmp_path / "test_batch.bin")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        DataError, match=re.escape("no CIFAR-10 .bin batches found for split 'train'")
    ):
        CIFAR10Bin(empty)


def test_cifar_official_subfolder_found(tmp_path: Path) -> None:
    sub = tmp_path / "cifar-10-batches-bin"
    sub.mkdir()
    (sub / "data_batch_1.bin").write_bytes(_cifar_records()[0])
    assert len(CIFAR10Bin(tmp_path)) == 3


# ---------------------------------------------------------------- IDX


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_idx_reads_back_exactly(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx_bytes(images, 0x08)
    assert raw[:12] == bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3])
    (tmp_path / "img.idx").write_bytes(raw)
    out = read_idx(tmp_path / "img.idx")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, images)
    shorts = np.array([-2, 300, -32768], dtype=np.int16)
    (tmp_path / "s.idx").write_bytes(_idx_bytes(shorts, 0x0B))
    np.testing.assert_array_equal(read_idx(tmp_path / "s.idx"), shorts)
    floats = np.array([[1.5, -0.25]], dtype=np.float32)
    (tmp_path / "f.idx").write_bytes(_idx_bytes(floats, 0x0D))
    out_f = read_idx(tmp_path / "f.idx")
    assert out_f.dtype == np.float32 and out_f.dtype.isnative
    np.testing.assert_array_equal(out_f, floats)


def test_idx_gzipped(tmp_path: Path) -> None:
    labels = np.array([7, 0, 255], dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes(labels, 0x08)))
    np.testing.assert_array_equal(read_idx(path), labels)


def test_idx_truncated_and_malformed(tmp_path: Path) -> None:
    raw = _idx_bytes(np.zeros((2, 3, 4), dtype=np.uint8), 0x08)
    (tmp_path / "cut").write_bytes(raw[:-1])
    with pytest.raises(
        DataError,
        match=r"cut: IDX file is truncated: shape \(2, 3, 4\) of uint8 needs 24 data bytes, found 23",
    ):
        read_idx(tmp_path / "cut")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "long").write_bytes(raw + b"\x00")
    with pytest.raises(DataError, match="longer than declared"):
        read_idx(tmp_path / "long")
    (tmp_path / "magic").write_bytes(b"\x01" + raw[1:])
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "magic")
    (tmp_path / "code").write_bytes(raw[:2] + b"\x07" + raw[3:])
    with pytest.raises(DataError, match="unknown IDX dtype code 0x07"):
        read_idx(tmp_path / "code")
    (tmp_path / "hdr").write_bytes(raw[:7])
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(tmp_path / "hdr")
    (tmp_path / "badgz.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match="cannot read IDX data"):
        read_idx(tmp_path / "badgz.gz")


def test_mnist_dataset(tmp_path: Path) -> None:
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 3, 4] = 255
    images[1, 27, 27] = 51
    (tmp_path / "i").write_bytes(_idx_bytes(images, 0x08))
    (tmp_path / "l").write_bytes(_idx_bytes(np.array([5, 2], dtype=np.uint8), 0x08))
    ds = MNISTIdx(tmp_path / "i", tmp_path / "l")
    assert len(ds) == 2 and ds.classes == tuple("012345")
    x, label = ds[1]
    assert label == 2 and x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert x[0, 27, 27].item() == pytest.approx(0.2) and float(x.sum()) == pytest.approx(0.2)
    (tmp_path / "l3").write_bytes(_idx_bytes(np.array([5, 2, 1], dtype=np.uint8), 0x08))
    with pytest.raises(DataError, match="3 labels for 2 images"):
        MNISTIdx(tmp_path / "i", tmp_path / "l3")


# ---------------------------------------------------------------- numpy arrays


def test_array_layouts_exact() -> None:
    nchw = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2)
    x, label = ArrayDataset(nchw, np.array([4, 1]))[1]
    assert label == 1 and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(nchw[1]).float() / 255, rtol=0, atol=0)
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))  # (N, H, W, C)
    x2, unlabelled = ArrayDataset(nhwc)[1]
    assert unlabelled == -1
    torch.testing.assert_close(x2, x, rtol=0, atol=0)
    nhw = np.array([[[0.5, 2.0]]], dtype=np.float64)  # floats kept as they are
    x3, _ = ArrayDataset(nhw)[0]
    assert x3.shape == (1, 1, 2) and x3.tolist() == [[[0.5, 2.0]]]


def test_array_files(tmp_path: Path) -> None:
    X = np.full((3, 1, 2, 2), 51, dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=X, labels=np.array([0, 1, 2]))
    ds = ArrayDataset(tmp_path / "d.npz")
    assert len(ds) == 3 and ds[2][1] == 2 and torch.equal(ds[2][0], torch.full((1, 2, 2), 51 / 255))
    np.save(tmp_path / "d.npy", X)
    ds2 = ArrayDataset(tmp_path / "d.npy", np.array([7, 7, 7]))
    assert ds2[0][1] == 7 and torch.equal(ds2[0][0], ds[0][0])


def test_array_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"X: image array shape \(2, 5, 5, 5\) is not"):
        ArrayDataset(np.zeros((2, 5, 5, 5)))
    with pytest.raises(DataError, match="X: 3 labels for 2 images"):
        ArrayDataset(np.zeros((2, 4, 4)), np.array([0, 1, 2]))
    with pytest.raises(DataError, match="labels must be integers"):
        ArrayDataset(np.zeros((2, 4, 4)), np.array([0.5, 1.0]))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(
        DataError, match=re.escape("obj.npy: the array holds Python objects (dtype object)")
    ):
        ArrayDataset(tmp_path / "obj.npy")
    np.savez(tmp_path / "nokey.npz", foo=np.zeros((1, 2, 2)))
    with pytest.raises(
        DataError,
        match=re.escape("nokey.npz: no image array; expected one of the keys x, X, images, data"),
    ):
        ArrayDataset(tmp_path / "nokey.npz")
    with pytest.raises(DataError, match="array file not found"):
        ArrayDataset(tmp_path / "missing.npz")
