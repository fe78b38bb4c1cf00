"""Built-in offline datasets: scikit-image's bundled photos, "photo-crops" and digits.

Nothing is downloaded: photos are read (through `load_image`) from the PNG/JPEG files that
ship inside the installed scikit-image package, digits from scikit-learn's bundled copy.

* `photo(name)` one photograph for single-image inspection (`PHOTOS` lists the names).
* `photo_crops(split, n)` the default training set: 10 classes, one per bundled photo
  (`PHOTO_CLASSES`); each example is a random square window (32..96 px, random position,
  random horizontal flip) of that photo resized to `size`. Each photo is cut into a grid
  of cells >= 96 px a side; a fixed diagonal pattern gives 3 of every 5 cells to train,
  1 to val, 1 to test, spread over the whole photo (`grid_cells`, `split_regions`). A
  window lies wholly inside one cell of its split (`crop_plan`), so test crops share no
  pixel with training crops.
* `digits(split)` scikit-learn's 8x8 handwritten digits, upscaled, fixed split.

    >>> from convscope.data.builtin import photo_crops
    >>> X, y = photo_crops("train", 10000)      # (10000, 3, 32, 32) float32, (10000,) int64
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from convscope.data.errors import DataError
from convscope.data.image import load_image

__all__ = [
    "PHOTOS",
    "PHOTO_CLASSES",
    "SPLITS",
    "CropPlan",
    "Region",
    "crop_plan",
    "digits",
    "grid_cells",
    "photo",
    "photo_crops",
    "split_regions",
]

# name -> file inside skimage/data/ (only files bundled with the package; nothing fetched).
_PHOTO_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "cell": "cell.png",
    "chelsea": "chelsea.png",  # the cat
    "clock_motion": "clock_motion.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "color": "color.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "horse": "horse.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "ihc": "ihc.png",
    "logo": "logo.png",
    "moon": "moon.png",
    "motorcycle": "motorcycle_left.png",
    "page": "page.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
    "text": "text.png",
}
PHOTOS: tuple[str, ...] = tuple(_PHOTO_FILES)

# The 10 photo-crops classes: 6 colour photos (4 of them in similar warm tones) and 4 grey
# textures used as-is, so neither mean colour nor brightness alone separates the classes.
PHOTO_CLASSES: tuple[str, ...] = (
    "chelsea",
    "astronaut",
    "coffee",
    "rocket",
    "motorcycle",
    "ihc",
    "brick",
    "grass",
    "gravel",
    "coins",
)

SPLITS: tuple[str, ...] = ("train", "val", "test")
_MIN_WINDOW = 32  # smallest crop window side in photo pixels
_MAX_WINDOW = 96  # largest crop window side; also the smallest grid cell side

_DIGIT_FRACTIONS: dict[str, tuple[float, float]] = {
    "train": (0.0, 0.7),
    "val": (0.7, 0.8),
    "test": (0.8, 1.0),
}


def _check_split(split: str, where: str) -> None:
    if split not in SPLITS:
        raise DataError(f"{where}: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def _skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("built-in photos need scikit-image installed (pip install scikit-image)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.cache
def _photo_cached(name: str) -> np.ndarray:
    img = load_image(_skimage_data_dir() / _PHOTO_FILES[name])  # (H, W, 3) uint8
    img.setflags(write=False)
    return img


@functools.cache
def _photo_pil(name: str) -> Image.Image:
    return Image.fromarray(_photo_cached(name))  # RGB, decoded once


def photo(name: str) -> np.ndarray:
    """A bundled photograph as uint8 (H, W, 3) RGB; `name` is one of PHOTOS."""
    if name not in _PHOTO_FILES:
        raise DataError(f"photo: unknown photo {name!r}; valid names: {', '.join(PHOTOS)}")
    return _photo_cached(name).copy()


@dataclass(frozen=True)
class Region:
    """A half-open pixel rectangle rows [top, bottom) x columns [left, right) of a photo."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def overlaps(self, other: Region) -> bool:
        """True when the two rectangles share at least one pixel."""
        return (
            self.top < other.bottom
            and other.top < self.bottom
            and self.left < other.right
            and other.left < self.right
        )


def _cell_split(row: int, col: int) -> str:
    """Split of grid cell (row, col): a fixed diagonal pattern, 3 of 5 train, 1 val, 1 test."""
    key = (2 * row + 3 * col) % 5
    return "test" if key == 4 else "val" if key == 3 else "train"


def grid_cells(height: int, width: int) -> list[tuple[Region, str]]:
    """Cut a height x width photo into a grid of cells at least 96 px a side, each with its split.

    Rows = height // 96 and columns = width // 96 (at least 1); boundaries are rounded
    multiples of height / rows and width / columns, so the cells tile the photo exactly.
    """
    rows, cols = max(1, height // _MAX_WINDOW), max(1, width // _MAX_WINDOW)
    ys = [round(i * height / rows) for i in range(rows + 1)]
    xs = [round(j * width / cols) for j in range(cols + 1)]
    return [
        (Region(ys[r], xs[c], ys[r + 1], xs[c + 1]), _cell_split(r, c))
        for r in range(rows)
        for c in range(cols)
    ]


def split_regions(name: str, split: str) -> tuple[Region, ...]:
    """The grid cells of photo `name` that crops of `split` are cut from (disjoint across splits)."""
    if name not in PHOTO_CLASSES:
        raise DataError(
            f"split_regions: {name!r} is not a photo-crops class; valid: {', '.join(PHOTO_CLASSES)}"
        )
    _check_split(split, "split_regions")
    h, w = _photo_cached(name).shape[:2]
    cells = tuple(cell for cell, s in grid_cells(h, w) if s == split)
    if not cells:
        raise DataError(f"split_regions: photo {name!r} ({h}x{w}) is too small for a {split} cell")
    return cells


@dataclass(frozen=True)
class CropPlan:
    """Where each photo-crops example comes from: all arrays have shape (n,)."""

    labels: np.ndarray  # int64 class index into PHOTO_CLASSES
    tops: np.ndarray  # int64 window top row in the photo
    lefts: np.ndarray  # int64 window left column
    sides: np.ndarray  # int64 window side in photo pixels
    flips: np.ndarray  # bool, flip horizontally after cropping


def crop_plan(split: str = "train", n: int = 10000, *, seed: int = 0) -> CropPlan:
    """The random windows `photo_crops(split, n, seed=seed)` cuts (deterministic for a seed).

    Labels are balanced (counts differ by at most one); each window lies wholly inside
    one cell of `split_regions(PHOTO_CLASSES[label], split)` (a uniformly chosen one).
    """
    _check_split(split, "crop_plan")
    if not isinstance(n, int) or n <= 0:
        raise DataError(f"crop_plan: n must be a positive int, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"crop_plan: seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split)])  # each split its own stream
    k = len(PHOTO_CLASSES)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % k)  # (n,) balanced
    per_class = [split_regions(name, split) for name in PHOTO_CLASSES]
    table = np.array(
        [(r.top, r.left, r.height, r.width) for cells in per_class for r in cells], dtype=np.int64
    )  # (total cells, 4)
    counts = np.array([len(cells) for cells in per_class], dtype=np.int64)  # (k,)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])  # (k,) first cell row of each class
    cell = offsets[labels] + (rng.random(n) * counts[labels]).astype(np.int64)  # (n,) uniform cell
    top0, left0, ch, cw = table[cell].T  # each (n,)
    smax = np.minimum(_MAX_WINDOW, np.minimum(ch, cw))  # (n,)
    smin = np.minimum(_MIN_WINDOW, smax)
    sides = smin + (rng.random(n) * (smax - smin + 1)).astype(np.int64)  # uniform in [smin, smax]
    tops = top0 + (rng.random(n) * (ch - sides + 1)).astype(np.int64)  # uniform valid positions
    lefts = left0 + (rng.random(n) * (cw - sides + 1)).astype(np.int64)
    flips = rng.random(n) < 0.5
    return CropPlan(labels=labels, tops=tops, lefts=lefts, sides=sides, flips=flips)


def photo_crops(
    split: str = "train", n: int = 10000, *, size: int = 32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The default training set: X float32 (n, 3, size, size) in [0, 1], y int64 (n,).

    Example i is window `crop_plan(split, n, seed=seed)` i of photo PHOTO_CLASSES[y[i]],
    resized to size x size (Pillow bilinear, antialiased), flipped left-right when planned,
    divided by 255 (so values are multiples of 1/255, like any 8-bit image).
    """
    if not isinstance(size, int) or size <= 0:
        raise DataError(f"photo_crops: size must be a positive int, got {size!r}")
    plan = crop_plan(split, n, seed=seed)
    photos = [_photo_pil(name) for name in PHOTO_CLASSES]
    # Pillow resizes each window straight from the photo (box=...), single-threaded C: small
    # per-crop work that torch's thread pool would only slow down on a busy machine.
    out = np.empty((n, size, size, 3), dtype=np.uint8)  # (n, size, size, 3)
    for i, (c, t, left, s) in enumerate(
        zip(
            plan.labels.tolist(),
            plan.tops.tolist(),
            plan.lefts.tolist(),
            plan.sides.tolist(),
            strict=True,
        )
    ):
        out[i] = np.asarray(
            photos[c].resize(
                (size, size), Image.Resampling.BILINEAR, box=(left, t, left + s, t + s)
            )
        )
    out[plan.flips] = out[plan.flips, :, ::-1]  # horizontal flip
    chw = torch.from_numpy(out.transpose(0, 3, 1, 2).copy())  # (n, 3, size, size) uint8
    return chw.to(torch.float32) / 255.0, torch.from_numpy(plan.labels.copy())


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)  # (1797, 8, 8) values 0..16
    target = np.asarray(bunch.target, dtype=np.int64)  # (1797,)
    return images, target


def _digits_indices(target: np.ndarray, split: str) -> np.ndarray:
    """Stratified, fixed split: per class a seed-0 permutation cut 70 / 10 / 20 %."""
    rng = np.random.default_rng(0)
    lo, hi = _DIGIT_FRACTIONS[split]
    picked: list[np.ndarray] = []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(target == c))
        picked.append(idx[round(lo * len(idx)) : round(hi * len(idx))])
    return np.sort(np.concatenate(picked))


def digits(split: str = "train", *, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's handwritten digits: X float32 (n, 1, size, size) in [0, 1], y int64 (n,).

    Pixel values 0..16 are divided by 16 and upscaled bilinearly from 8x8. Splits are
    fixed and stratified: train 70 %, val 10 %, test 20 % of each digit.
    """
    _check_split(split, "digits")
    if not isinstance(size, int) or size <= 0:
        raise DataError(f"digits: size must be a positive int, got {size!r}")
    images, target = _digits_raw()
    idx = _digits_indices(target, split)
    X = torch.from_numpy(images[idx] / 16.0).to(torch.float32)[:, None]  # (n, 1, 8, 8)
    if size != 8:
        X = F.interpolate(
            X, size=(size, size), mode="bilinear", align_corners=False, antialias=size < 8
        )  # (n, 1, size, size)
    return X.clamp_(0.0, 1.0), torch.from_numpy(target[idx].copy())
