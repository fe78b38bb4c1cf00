"""Hypothesis fuzzing of every loader (issue 7): each input loads or raises the documented error.

Loaders and their documented error types: `load_image` -> ImageError; weights
(`load_weights`, .safetensors and .pt) -> LoadError; CIFAR-10 batches, MNIST IDX, .npy/.npz
-> DataError; layer-spec text -> SpecError. Nothing else may escape (no struct.error,
OverflowError, MemoryError, SafetensorError, UnicodeDecodeError, BadZipFile, ZeroDivisionError,
a ValueError of another kind...), nothing may hang (a per-example deadline), and the inputs
that declare huge sizes (header lengths 2^62 and 2^64 - 1, IDX dimensions of 2^32 - 1, .npy
shapes of 2^40 elements) must be refused with a peak memory growth under MEMORY_BOUND (64 MiB);
an image load_image accepts may add IMAGE_BYTES_PER_PIXEL (32) bytes per declared pixel.

Run: .venv/bin/python -m pytest tests/fuzz/test_loaders.py -q     (about 10 s, 60 examples each)
     CONVSCOPE_FUZZ_EXAMPLES=1000 for a deeper hunt (a few minutes)
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from convscope.data import (
    ArrayDataset,
    CIFAR10Bin,
    DataError,
    ImageError,
    MNISTIdx,
    load_image,
    read_cifar10_batch,
    read_idx,
)
from convscope.data.transforms import conform
from convscope.models.load import LoadError, load_weights, save_weights
from convscope.models.spec import SpecError, build_spec

MEMORY_BOUND = 64 * 2**20  # bytes a refused "huge" input may add to the peak (RSS and traced)
# load_image may also use this much per pixel of an image it accepts (at most max_pixels)
IMAGE_BYTES_PER_PIXEL = 32
IMAGE_MAX_PIXELS = 2**22
T = TypeVar("T")

# CONVSCOPE_FUZZ_EXAMPLES=2000 for a deeper hunt than the suite's bounded run
EXAMPLES = int(os.environ.get("CONVSCOPE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=10_000,  # ms per example: a loader that hangs fails here (generous: shared CI cores)
    database=None,  # write nothing into the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _one_line(err: BaseException) -> None:
    msg = str(err)
    assert msg.strip(), f"empty message from {type(err).__name__}"
    if "don't match" not in msg:  # the key-mismatch LoadError lists one problem kind per line
        assert "\n" not in msg, msg


def loads_or_refuses(fn: Callable[[], T], error: type[Exception]) -> T | None:
    """Call `fn`; the documented `error` (one clear line) is fine, anything else fails the test."""
    try:
        return fn()
    except error as err:
        _one_line(err)
        return None


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _write(work: Path, name: str, data: bytes) -> Path:
    path = work / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------
# memory: peak RSS (VmHWM, reset through /proc/self/clear_refs) and tracemalloc's peak
# --------------------------------------------------------------------------------------


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


@contextmanager
def memory_bound(limit: int = MEMORY_BOUND) -> Iterator[None]:
    """Fail when the block raises the peak RSS, or the peak of traced allocations, by >= limit."""
    rss_ok = _reset_hwm()
    before = _vm_hwm()
    tracemalloc.start()
    try:
        yield
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert traced_peak < limit, f"traced allocations peaked at {traced_peak / 2**20:.0f} MiB"
    after = _vm_hwm()
    if rss_ok and before is not None and after is not None:
        assert after - before < limit, f"peak RSS grew by {(after - before) / 2**20:.0f} MiB"


def test_memory_meter_sees_a_big_allocation() -> None:
    with pytest.raises(AssertionError, match=r"peaked at|grew by"), memory_bound():
        np.ones(MEMORY_BOUND // 8 * 2).sum()  # 2 * MEMORY_BOUND bytes, touched


# --------------------------------------------------------------------------------------
# load_image
# --------------------------------------------------------------------------------------


def _image_samples() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (9, 7, 4), dtype=np.uint8), "RGBA")
    out: dict[str, bytes] = {}
    for name, im, fmt, kw in [
        ("png", rgb, "PNG", {}),
        ("png-rgba", rgba, "PNG", {}),
        ("png-palette", rgb.convert("P"), "PNG", {}),
        ("jpeg", rgb, "JPEG", {"quality": 80}),
        ("jpeg-progressive", rgb, "JPEG", {"progressive": True}),
        ("gif", rgb.convert("P"), "GIF", {}),
        ("bmp", rgb, "BMP", {}),
        ("tiff", rgb, "TIFF", {}),
        ("webp", rgb, "WEBP", {"lossless": True}),
    ]:
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        out[name] = buf.getvalue()
    frames = [Image.fromarray(np.full((6, 6, 3), v, np.uint8)).convert("P") for v in (0, 200)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out["gif-animated"] = buf.getvalue()
    return out


IMAGES = _image_samples()
IMAGE_NAMES = sorted(IMAGES)


def _image_ok(data: bytes) -> None:
    out = loads_or_refuses(lambda: load_image(data, max_pixels=2**20), ImageError)
    if out is not None:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


@FUZZ
@given(st.binary(max_size=2048))
def test_image_random_bytes(data: bytes) -> None:
    _image_ok(data)


@FUZZ
@given(st.sampled_from(IMAGE_NAMES), st.data())
def test_image_truncated_real_files(name: str, draw: st.DataObject) -> None:
    data = IMAGES[name]
    cut = draw.draw(st.integers(0, len(data) - 1))
    _image_ok(data[:cut])


@FUZZ
@given(
    st.sampled_from(IMAGE_NAMES),
    st.lists(st.tuples(st.integers(0, 127), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_image_mutated_headers(name: str, edits: list[tuple[int, int]]) -> None:
    data = bytearray(IMAGES[name])
    for pos, value in edits:
        data[pos % len(data)] = value
    _image_ok(bytes(data))


@settings(FUZZ, max_examples=max(10, EXAMPLES * 2 // 3))
@given(
    st.one_of(st.integers(0, 9000), st.integers(0, 2**32 - 1)),
    st.one_of(st.integers(0, 9000), st.integers(0, 2**32 - 1)),
)
@example(2**31 - 1, 2**31 - 1)
@example(2**32 - 1, 2**32 - 1)
@example(2048, 2048)  # under max_pixels, with 100 bytes of pixel data
def test_image_declared_size_at_the_limits(width: int, height: int) -> None:
    png = bytearray(IMAGES["png"])
    png[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))  # a valid IHDR CRC
    gif = bytearray(IMAGES["gif"])
    gif[6:10] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)  # logical screen size
    for data, (w, h) in (
        (bytes(png), (width, height)),
        (bytes(gif), (width & 0xFFFF, height & 0xFFFF)),
    ):
        pixels = (
            w * h if w * h <= IMAGE_MAX_PIXELS else 0
        )  # over the limit: refused from the header
        with memory_bound(MEMORY_BOUND + IMAGE_BYTES_PER_PIXEL * pixels):
            out = loads_or_refuses(
                lambda data=data: load_image(data, max_pixels=IMAGE_MAX_PIXELS), ImageError
            )
        assert out is None or (
            out.shape[2] == 3 and (data[:4] != b"\x89PNG" or out.shape == (h, w, 3))
        )


# --------------------------------------------------------------------------------------
# weights: .safetensors and .pt through load_weights
# --------------------------------------------------------------------------------------


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 3))


KEYS = {k: tuple(v.shape) for k, v in _tiny_net().state_dict().items()}


def _weights_samples(work: Path) -> dict[str, bytes]:
    net = _tiny_net()
    save_weights(net, work / "real.safetensors", metadata={"spec": "zoo:x"})
    torch.save(net.state_dict(), work / "real.pt")
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, work / "nested.pt")
    torch.save(net.state_dict(), work / "legacy.pt", _use_new_zipfile_serialization=False)
    return {
        n: (work / n).read_bytes()
        for n in ("real.safetensors", "real.pt", "nested.pt", "legacy.pt")
    }


@pytest.fixture(scope="module")
def weights_samples(work: Path) -> dict[str, bytes]:
    return _weights_samples(work)


def _weights_ok(work: Path, suffix: str, data: bytes) -> None:
    path = _write(work, f"w{suffix}", data)
    net = _tiny_net()
    loads_or_refuses(lambda: load_weights(net, path), LoadError)


@FUZZ
@given(st.sampled_from([".safetensors", ".pt"]), st.binary(max_size=1024))
def test_weights_random_bytes(work: Path, suffix: str, data: bytes) -> None:
    _weights_ok(work, suffix, data)


@FUZZ
@given(st.sampled_from(["real.safetensors", "real.pt", "nested.pt", "legacy.pt"]), st.data())
def test_weights_truncated_and_mutated_real_files(
    work: Path, weights_samples: dict[str, bytes], name: str, draw: st.DataObject
) -> None:
    data = bytearray(weights_samples[name])
    edits = draw.draw(
        st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=4)
    )
    for pos, value in edits:
        data[pos] = value
    cut = draw.draw(st.integers(0, len(data)))
    _weights_ok(work, Path(name).suffix, bytes(data[:cut]))


HEADER_LENGTHS = st.one_of(
    st.sampled_from(
        [0, 1, 2, 7, 8, 100_000_000, 100_000_001, 2**31, 2**32, 2**62, 2**63, 2**64 - 1]
    ),
    st.integers(0, 2**64 - 1),
    st.integers(0, 4096),
)


@FUZZ
@given(HEADER_LENGTHS, st.binary(max_size=256))
@example(2**62, b"{}")
@example(2**64 - 1, b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')
def test_safetensors_header_length_at_the_limits(work: Path, length: int, rest: bytes) -> None:
    with memory_bound():
        _weights_ok(work, ".safetensors", struct.pack("<Q", length) + rest)


ST_DTYPES = [
    "F64",
    "F32",
    "F16",
    "BF16",
    "I64",
    "I32",
    "I16",
    "I8",
    "U8",
    "U16",
    "U32",
    "U64",
    "BOOL",
    "F8_E4M3",
    "F8_E5M2",
    "F8_E8M0",
    "F4",
    "F6_E2M3",
    "C64",
    "E",
    "f32",
    "",
]
SHAPE_INT = st.one_of(
    st.integers(0, 4),
    st.integers(-2, 2**64),
    st.sampled_from([2**31, 2**32, 2**62, 2**63, 2**64 - 1]),
)


def _safetensors_blob(header: dict[str, Any]) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


@st.composite
def safetensors_files(draw: st.DrawFn) -> bytes:
    """A safetensors file with the tiny net's keys (plus extras), fuzzed dtypes, shapes and offsets."""
    header: dict[str, Any] = {}
    data = bytearray()
    keys = draw(
        st.one_of(
            st.just(list(KEYS)),
            st.lists(st.sampled_from([*KEYS, "extra", "0.weight.x"]), unique=True, max_size=5),
        )
    )
    for key in keys:
        dtype = draw(st.sampled_from(ST_DTYPES))
        if key in KEYS and draw(st.integers(0, 3)):
            shape: list[int] = list(KEYS[key])
        else:
            shape = draw(st.lists(SHAPE_INT, max_size=4))
        itemsize = {
            "F64": 8,
            "I64": 8,
            "U64": 8,
            "C64": 8,
            "F32": 4,
            "I32": 4,
            "U32": 4,
            "F16": 2,
            "BF16": 2,
            "I16": 2,
            "U16": 2,
        }.get(dtype, 1)
        exact = math.prod(shape) * itemsize if all(0 <= d <= 4 for d in shape) else 0
        nbytes = draw(st.one_of(st.just(exact), st.integers(0, 64), SHAPE_INT))
        start = len(data)
        offsets = (
            [start, start + nbytes]
            if draw(st.integers(0, 3))
            else draw(st.lists(SHAPE_INT, max_size=3))
        )
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        fill = max(0, min(nbytes, 2048))
        data += draw(st.binary(min_size=fill, max_size=fill))
    if draw(st.booleans()):
        header["__metadata__"] = draw(
            st.dictionaries(
                st.text(max_size=4), st.one_of(st.text(max_size=4), st.integers()), max_size=2
            )
        )
    raw = json.dumps(header).encode()
    raw += b" " * draw(st.integers(0, 8))
    return struct.pack("<Q", len(raw)) + raw + bytes(data)


@FUZZ
@given(safetensors_files())
@example(  # found: TypeError from torch for a 0-element shape with a dimension over 2**63
    _safetensors_blob({"0.bias": {"dtype": "F32", "shape": [0, 2**63], "data_offsets": [0, 0]}})
)
def test_safetensors_structured(work: Path, data: bytes) -> None:
    _weights_ok(work, ".safetensors", data)


def _odd_tensor(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of `shape` that a checkpoint may hold but a parameter can't always take."""
    t = torch.zeros(shape)
    if kind == "sparse":
        return t.to_sparse()
    if kind == "meta":
        return torch.zeros(shape, device="meta")
    if kind == "quantized":
        return torch.quantize_per_tensor(t, 0.1, 0, torch.qint8)
    if kind == "expanded":
        return torch.zeros(1).expand(*shape) if shape else t
    if kind == "wrong-shape":
        return torch.zeros(*shape, 2)
    return t.to(getattr(torch, kind))


TENSOR_KINDS = [
    "float32",
    "float16",
    "bfloat16",
    "float64",
    "int8",
    "uint8",
    "int64",
    "bool",
    "complex64",
    "float8_e4m3fn",
    "uint64",
    "sparse",
    "meta",
    "quantized",
    "expanded",
    "wrong-shape",
]
TENSORS = st.tuples(st.sampled_from(TENSOR_KINDS), st.sampled_from(list(KEYS.values()))).map(
    lambda ks: _odd_tensor(*ks)
)


@st.composite
def states(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    """The tiny net's full state dict with a few entries replaced, dropped or added."""
    state: dict[str, torch.Tensor] = {k: torch.zeros(s) for k, s in KEYS.items()}
    for key in draw(st.lists(st.sampled_from(list(KEYS)), max_size=2, unique=True)):
        state[key] = _odd_tensor(draw(st.sampled_from(TENSOR_KINDS)), KEYS[key])
    for key in draw(st.lists(st.sampled_from(list(KEYS)), max_size=1)):
        state.pop(key, None)
    if draw(st.booleans()):
        state = {f"module.{k}": v for k, v in state.items()}
    return state


VALUES = st.one_of(
    TENSORS, st.integers(), st.text(max_size=3), st.none(), st.lists(st.integers(), max_size=2)
)


@FUZZ
@given(
    st.one_of(
        states(),
        states().map(lambda d: {"state_dict": d, "epoch": 1}),
        states().map(lambda d: {"model": d, "arch": [1], "x": None}),
        st.dictionaries(st.sampled_from([*KEYS, "x", "module.0.weight"]), VALUES, max_size=6),
        st.one_of(st.integers(), st.lists(TENSORS, max_size=2), TENSORS, st.none()),
        st.dictionaries(st.integers(), TENSORS, max_size=2),
    ),
    st.booleans(),
)
@example({k: torch.zeros(s).to_sparse() for k, s in KEYS.items()}, False)  # found: RuntimeError
@example({k: torch.zeros(s, device="meta") for k, s in KEYS.items()}, True)  # found: RuntimeError
@example({k: torch.zeros(s, dtype=torch.complex64) for k, s in KEYS.items()}, False)
def test_torch_checkpoint_structured(work: Path, obj: object, legacy: bool) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    _weights_ok(work, ".pt", buf.getvalue())


def _legacy_pt_with_storage_size(size: int) -> bytes:
    """A legacy (non-zip) torch checkpoint whose one storage declares `size` elements."""
    buf = io.BytesIO()
    torch.save({"0.bias": torch.zeros(2)}, buf, _use_new_zipfile_serialization=False)
    data = bytearray(buf.getvalue())
    # the storage's data follows its int64 element count: 2 float32 zeros at the very end
    count_at = len(data) - 8 - 8
    assert struct.unpack("<q", data[count_at : count_at + 8])[0] == 2
    data[count_at : count_at + 8] = struct.pack("<Q", size)
    return bytes(data)


@pytest.mark.parametrize("size", [3, 2**20, 2**31, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1])
def test_torch_legacy_storage_size_at_the_limits(work: Path, size: int) -> None:
    with memory_bound():
        _weights_ok(work, ".pt", _legacy_pt_with_storage_size(size))


def _zip_pt_with_storage_numel(numel: int) -> bytes:
    """A zip-format torch checkpoint whose pickle declares `numel` elements for its one storage."""
    buf = io.BytesIO()
    torch.save({"0.bias": torch.zeros(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("data.pkl"):
                at = data.index(b"X\x03\x00\x00\x00cpu") + 10  # past the string and its memo PUT
                assert data[at : at + 2] == b"K\x02"  # BININT1 2: the storage's element count
                data = (
                    data[:at]
                    + b"\x8a\x09"
                    + numel.to_bytes(9, "little", signed=True)
                    + data[at + 2 :]
                )
            dst.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize("numel", [3, 2**31, 2**40, 2**62, 2**63 - 1, 2**64 - 1])
def test_torch_zip_storage_numel_at_the_limits(work: Path, numel: int) -> None:
    with memory_bound():
        _weights_ok(work, ".pt", _zip_pt_with_storage_numel(numel))


# --------------------------------------------------------------------------------------
# CIFAR-10 binary batches
# --------------------------------------------------------------------------------------


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=2 * 3073 + 5),
        st.integers(1, 3).flatmap(lambda n: st.binary(min_size=3073 * n, max_size=3073 * n)),
    ),
    st.one_of(
        st.none(),
        st.binary(max_size=300),
        st.lists(st.text(max_size=8), max_size=12).map(lambda t: "\n".join(t).encode()),
    ),
)
@example(bytes(3073), b"\x80 not UTF-8")  # found: UnicodeDecodeError escaped CIFAR10Bin
def test_cifar_batches(work: Path, data: bytes, meta: bytes | None) -> None:
    folder = work / "cifar"
    folder.mkdir(exist_ok=True)
    _write(folder, "data_batch_1.bin", data)
    (folder / "batches.meta.txt").unlink(missing_ok=True)
    if meta is not None:
        _write(folder, "batches.meta.txt", meta)
    out = loads_or_refuses(lambda: read_cifar10_batch(folder / "data_batch_1.bin"), DataError)
    if out is not None:
        assert out[0].shape == (len(data) // 3073, 3, 32, 32)
    ds = loads_or_refuses(lambda: CIFAR10Bin(folder), DataError)
    if ds is not None:
        assert len(ds.classes) == 10 and ds[0][0].shape == (3, 32, 32)


# --------------------------------------------------------------------------------------
# MNIST IDX
# --------------------------------------------------------------------------------------

IDX_DIM = st.one_of(
    st.integers(0, 6), st.sampled_from([2**31, 2**32 - 1]), st.integers(0, 2**32 - 1)
)


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    magic = draw(st.one_of(st.just(b"\0\0"), st.binary(min_size=2, max_size=2)))
    code = draw(
        st.one_of(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]), st.integers(0, 255))
    )
    dims = draw(st.lists(IDX_DIM, max_size=6))
    ndim = draw(st.one_of(st.just(len(dims)), st.integers(0, 255)))
    body = bytes(magic) + bytes([code, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    size = int(np.prod([min(d, 8) for d in dims])) * 8 if dims else 0
    body += draw(st.binary(min_size=0, max_size=min(size + 2, 300)))
    if draw(st.booleans()):
        body = gzip.compress(body)
        body = body[: draw(st.integers(0, len(body)))]
    return body


@FUZZ
@given(idx_files(), idx_files())
@example(b"\0\0\x08\x03" + struct.pack(">III", 0, 2**32 - 1, 2**32 - 1), b"\0\0\x08\x01\0\0\0\0")
@example(b"\0\0\x08\xff" + b"\0\0\0\1" * 255 + b"\0", b"\0\0\x08\x01\0\0\0\1\0")
@example(  # found: 0-wide images were accepted and crashed conform later
    b"\0\0\x08\x03" + struct.pack(">III", 1, 3, 0), b"\0\0\x08\x01" + struct.pack(">I", 1) + b"\0"
)
def test_idx_files(work: Path, images: bytes, labels: bytes) -> None:
    ipath, lpath = _write(work, "images.idx", images), _write(work, "labels.idx", labels)
    with memory_bound():
        arr = loads_or_refuses(lambda: read_idx(ipath), DataError)
    if arr is not None:
        assert arr.dtype.isnative
    ds = loads_or_refuses(lambda: MNISTIdx(ipath, lpath), DataError)
    if ds is not None and len(ds):
        assert ds[0][0].shape[0] == 1
        assert conform(ds[0][0], size=(8, 8), channels=1).shape == (1, 8, 8)


def test_mnist_label_values_are_bounded(work: Path) -> None:
    """Found: a label of 2**31 - 1 made MNISTIdx build 2**31 class names (hang, then memory)."""
    images = _write(work, "img.idx", b"\0\0\x08\x03" + struct.pack(">III", 1, 1, 1) + b"\x07")
    labels = _write(work, "lab.idx", b"\0\0\x0c\x01" + struct.pack(">Ii", 1, 2**31 - 1))
    with memory_bound(), pytest.raises(DataError, match=r"labels must be class indices 0\.\.99999"):
        MNISTIdx(images, labels)


# --------------------------------------------------------------------------------------
# .npy / .npz arrays (never unpickled)
# --------------------------------------------------------------------------------------

NPY_DESCR = st.one_of(
    st.sampled_from(
        [
            "|u1",
            "<f4",
            ">f8",
            "<i8",
            "|b1",
            "<c8",
            "|O",
            "O",
            "<U3",
            "|V8",
            "<M8[s]",
            "f4",
            "zz",
            "<f2",
        ]
    ),
    st.just([("a", "<i4")]),
    st.text(max_size=6),
)
NPY_SHAPE = st.one_of(
    st.lists(st.integers(0, 5), max_size=4).map(tuple),
    st.lists(st.sampled_from([0, 1, 3, 2**31, 2**40, 2**62, 2**63, 2**64]), max_size=4).map(tuple),
    st.lists(st.integers(-3, 3), max_size=4).map(tuple),
)


@st.composite
def npy_files(draw: st.DrawFn) -> bytes:
    header_obj = {
        "descr": draw(NPY_DESCR),
        "fortran_order": draw(st.one_of(st.booleans(), st.just("yes"))),
        "shape": draw(NPY_SHAPE),
    }
    text = repr(header_obj) if draw(st.integers(0, 9)) else draw(st.text(max_size=40))
    header = text.encode("utf-8", "replace")
    header += b" " * ((64 - (12 + len(header) + 1) % 64) % 64) + b"\n"
    version = draw(st.sampled_from([1, 2, 3]))
    length = draw(
        st.one_of(
            st.just(len(header)),
            st.sampled_from([0, 2**16 - 1, 2**32 - 1]),
            st.integers(0, 2**16 - 1),
        )
    )
    if version == 1:
        prefix = b"\x93NUMPY\x01\x00" + struct.pack("<H", length % 2**16)
    else:
        prefix = b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", length)
    return prefix + header + draw(st.binary(max_size=200))


def _npz(members: dict[str, bytes], compressed: bool) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _array_ok(work: Path, name: str, data: bytes) -> None:
    path = _write(work, name, data)
    with memory_bound():
        ds = loads_or_refuses(lambda: ArrayDataset(path), DataError)
    if ds is not None and len(ds):
        x, label = ds[len(ds) - 1]
        assert x.dtype == torch.float32 and x.ndim == 3 and isinstance(label, int)
        assert conform(x, size=(8, 8), channels=3).shape == (3, 8, 8)  # what open_dataset does


def _real_npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


REAL_NPY = _real_npy(np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4))
REAL_LABELS = _real_npy(np.array([0, 1]))


@FUZZ
@given(npy_files())
@example(b"\x93NUMPY\x01\x00" + struct.pack("<H", 2**16 - 1) + b"{")
@example(b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + b"{")
def test_npy_files(work: Path, data: bytes) -> None:
    _array_ok(work, "a.npy", data)


@FUZZ
@given(
    st.one_of(st.binary(max_size=300), st.integers(0, len(REAL_NPY)).map(lambda n: REAL_NPY[:n]))
)
@example(_real_npy(np.zeros((2, 0, 5), np.uint8)))  # found: empty images crashed conform later
def test_npy_random_and_truncated(work: Path, data: bytes) -> None:
    _array_ok(work, "b.npy", data)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["x.npy", "y.npy", "images.npy", "labels.npy", "other.npy", "x", "../x.npy"]
        ),
        st.one_of(npy_files(), st.just(REAL_NPY), st.just(REAL_LABELS), st.binary(max_size=50)),
        max_size=3,
    ),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_npz_files(work: Path, members: dict[str, bytes], compressed: bool, cut: int) -> None:
    data = _npz(members, compressed)
    _array_ok(work, "c.npz", data[:cut] if cut < len(data) else data)


@FUZZ
@given(st.binary(max_size=300))
def test_npz_random_bytes(work: Path, data: bytes) -> None:
    _array_ok(work, "d.npz", data)


@pytest.mark.parametrize(
    "shape", [(2**40,), (2**31, 2**31), (2**62, 4), (0, 2**62, 2**62), (2**64,)]
)
@pytest.mark.parametrize("compressed", [False, True])
def test_npz_declared_shape_at_the_limits(
    work: Path, shape: tuple[int, ...], compressed: bool
) -> None:
    header = repr({"descr": "|u1", "fortran_order": False, "shape": shape}).encode()
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    member = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(64)
    _array_ok(work, "e.npz", _npz({"x.npy": member}, compressed))
    _array_ok(work, "e.npy", member)


def test_npz_object_array_is_refused_not_unpickled(work: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.array([print, 1], dtype=object))
    with pytest.raises(DataError, match=r"(?i)object"):
        ArrayDataset(_write(work, "obj.npz", buf.getvalue()))


# --------------------------------------------------------------------------------------
# layer-spec text
# --------------------------------------------------------------------------------------

SPEC_INT = st.one_of(
    st.integers(-2, 40),
    st.sampled_from([0, 2**15, 2**31, 2**63, 10**30]),
    st.integers(-(2**64), 2**64),
)
SPEC_WORD = st.one_of(
    SPEC_INT.map(str),
    st.sampled_from(
        ["stride", "pad", "relu", "tanh", "none", "gelu", "nan", "inf", "1e400", "0.5", "-0", "x"]
    ),
)


@st.composite
def spec_lines(draw: st.DrawFn) -> str:
    op = draw(st.sampled_from(["conv", "pool", "fc", "dropout", "CONV", "bogus"]))
    return " ".join([op, *draw(st.lists(SPEC_WORD, max_size=6))])


@FUZZ
@given(
    st.lists(spec_lines(), min_size=1, max_size=6),
    st.sampled_from([(3, 32, 32), (1, 28, 28), (3, 8, 8)]),
)
@example(["pool 2 stride 0", "fc 10"], (3, 32, 32))
@example(["pool 0", "fc 10"], (3, 32, 32))
@example(["conv 1 1 stride 100000000000000000000000", "fc 10"], (3, 32, 32))
@example(["conv 64 3 pad 3000", "pool 1000", "fc 10"], (3, 32, 32))
@example(["conv 1 1 pad 100000", "pool 100000", "fc 10"], (3, 32, 32))
def test_spec_structured(lines: list[str], shape: tuple[int, int, int]) -> None:
    with memory_bound():
        model = loads_or_refuses(
            lambda: build_spec("\n".join(lines), shape, max_params=2_000_000), SpecError
        )
    if model is not None:
        assert model(torch.zeros(1, *shape)).ndim == 2


@FUZZ
@given(st.text(max_size=300))
def test_spec_random_text(text: str) -> None:
    loads_or_refuses(lambda: build_spec(text, (3, 32, 32)), SpecError)
