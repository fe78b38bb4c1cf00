"""Tests for the built-in offline datasets: photos, photo-crops (regions, determinism), digits."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image
from sklearn.datasets import load_digits

from convscope.data import PHOTO_CLASSES, PHOTOS, DataError, digits, photo, photo_crops
from convscope.data.builtin import SPLITS, CropPlan, Region, crop_plan, grid_cells, split_regions

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"


def test_photo_matches_bundled_file_exactly() -> None:
    cat = photo("chelsea")
    with Image.open(SKIMAGE_DATA / "chelsea.png") as im:
        oracle = np.asarray(im.convert("RGB"))
    assert cat.dtype == np.uint8 and cat.shape == (300, 451, 3)
    np.testing.assert_array_equal(cat, oracle)
    cat[0, 0] = 0  # a copy: the cache is not touched
    np.testing.assert_array_equal(photo("chelsea")[0, 0], oracle[0, 0])


def test_every_listed_photo_loads_as_rgb() -> None:
    for name in PHOTOS:
        img = photo(name)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name


def test_unknown_photo_lists_valid_names() -> None:
    with pytest.raises(DataError) as err:
        photo("dog")
    msg = str(err.value)
    assert "'dog'" in msg and "chelsea" in msg and "astronaut" in msg


def test_classes_are_ten_distinct_photos() -> None:
    assert len(PHOTO_CLASSES) == 10 == len(set(PHOTO_CLASSES))
    assert set(PHOTO_CLASSES) <= set(PHOTOS)


def test_grid_cells_exact_values() -> None:
    # chelsea is 300 x 451 (H x W): 300 // 96 = 3 rows of 100, 451 // 96 = 4 columns at
    # round(451 / 4 * j) = 0, 113 (112.75), 226 (225.5, half to even), 338 (338.25), 451.
    # split of cell (r, c) from (2r + 3c) % 5: 4 -> test, 3 -> val, else train.
    cells = grid_cells(300, 451)
    assert [c for c, _ in cells[:4]] == [
        Region(0, 0, 100, 113),
        Region(0, 113, 100, 226),
        Region(0, 226, 100, 338),
        Region(0, 338, 100, 451),
    ]
    assert [s for _, s in cells] == [
        "train", "val", "train", "test",  # keys 0 3 1 4
        "train", "train", "val", "train",  # keys 2 0 3 1
        "test", "train", "train", "val",  # keys 4 2 0 3
    ]  # fmt: skip
    assert split_regions("chelsea", "test") == (Region(0, 338, 100, 451), Region(200, 0, 300, 113))
    assert grid_cells(50, 60) == [(Region(0, 0, 50, 60), "train")]  # smaller than a cell


@pytest.mark.parametrize("name", PHOTO_CLASSES)
def test_split_cells_disjoint_and_tile_the_photo(name: str) -> None:
    h, w = photo(name).shape[:2]
    per_split = {s: split_regions(name, s) for s in SPLITS}
    cells = [c for s in SPLITS for c in per_split[s]]
    for a, b in itertools.combinations(cells, 2):
        assert not a.overlaps(b)
    assert sum(c.height * c.width for c in cells) == h * w  # disjoint + total area = a tiling
    for c in cells:
        assert 0 <= c.top < c.bottom <= h and 0 <= c.left < c.right <= w
        assert min(c.height, c.width) >= 96  # room for the largest window
    n = len(cells)
    assert len(per_split["test"]) >= max(1, n // 6) and len(per_split["val"]) >= max(1, n // 6)
    assert len(per_split["train"]) >= n // 2


def test_region_overlap_rule() -> None:
    a = Region(0, 0, 10, 10)
    assert not a.overlaps(Region(0, 10, 10, 20))  # touching edges share no pixel
    assert a.overlaps(Region(9, 9, 11, 11))


def _window(plan: CropPlan, i: int) -> Region:
    t, left, s = int(plan.tops[i]), int(plan.lefts[i]), int(plan.sides[i])
    return Region(t, left, t + s, left + s)


def _inside(w: Region, c: Region) -> bool:
    return c.top <= w.top and w.bottom <= c.bottom and c.left <= w.left and w.right <= c.right


@pytest.mark.parametrize("split", SPLITS)
def test_every_window_inside_one_cell_of_its_split(split: str) -> None:
    plan = crop_plan(split, 2000, seed=5)
    cells = {c: split_regions(name, split) for c, name in enumerate(PHOTO_CLASSES)}
    used: set[tuple[int, Region]] = set()
    for i in range(2000):
        c, w = int(plan.labels[i]), _window(plan, i)
        home = [cell for cell in cells[c] if _inside(w, cell)]
        assert len(home) == 1, (i, w)
        used.add((c, home[0]))
        assert 32 <= w.height <= 96
    assert len(used) == sum(len(v) for v in cells.values())  # every cell gets crops
    assert plan.flips.any() and not plan.flips.all()


def test_train_and_test_windows_share_no_pixel() -> None:
    train, test = crop_plan("train", 1000, seed=0), crop_plan("test", 1000, seed=0)
    for c in range(len(PHOTO_CLASSES)):
        mask = np.zeros(photo(PHOTO_CLASSES[c]).shape[:2], dtype=np.uint8)  # (H, W)
        for plan, bit in ((train, 1), (test, 2)):
            for i in np.flatnonzero(plan.labels == c):
                w = _window(plan, int(i))
                mask[w.top : w.bottom, w.left : w.right] |= bit
        assert (mask == 1).any() and (mask == 2).any()
        assert not (mask == 3).any()  # no pixel used by both


def test_photo_crops_deterministic_and_seed_dependent() -> None:
    X1, y1 = photo_crops("train", 300, seed=0)
    X2, y2 = photo_crops("train", 300, seed=0)
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    X3, _ = photo_crops("train", 300, seed=1)
    assert not torch.equal(X1, X3)
    X4, _ = photo_crops("test", 300, seed=0)
    assert not torch.equal(X1, X4)


def test_photo_crops_types_range_and_balance() -> None:
    X, y = photo_crops("val", 205, size=24, seed=2)
    assert X.dtype == torch.float32 and X.shape == (205, 3, 24, 24)
    assert y.dtype == torch.int64 and y.shape == (205,)
    assert float(X.min()) >= 0.0 and float(X.max()) <= 1.0
    assert y.bincount().tolist() == [21] * 5 + [20] * 5
    assert float(X.std(dim=(1, 2, 3)).min()) > 0.0  # no blank crop


def test_photo_crop_pixels_exact_when_no_resize_needed() -> None:
    X, y = photo_crops("train", 400, size=32, seed=7)
    plan = crop_plan("train", 400, seed=7)
    assert torch.equal(y, torch.from_numpy(plan.labels))
    exact = np.flatnonzero(plan.sides == 32)
    assert len(exact) >= 2 and plan.flips[exact].any()
    for i in exact:
        img = photo(PHOTO_CLASSES[int(plan.labels[i])])
        t, lft = int(plan.tops[i]), int(plan.lefts[i])
        win = img[t : t + 32, lft : lft + 32]  # (32, 32, 3)
        if plan.flips[i]:
            win = win[:, ::-1]
        expected = torch.from_numpy(win.transpose(2, 0, 1).astype(np.float32) / 255.0)
        torch.testing.assert_close(X[i], expected, rtol=0, atol=1e-7)


def test_photo_crops_bad_arguments() -> None:
    with pytest.raises(DataError, match="unknown split 'dev'; valid splits: train, val, test"):
        photo_crops("dev", 10)
    with pytest.raises(DataError, match="n must be a positive int"):
        photo_crops("train", 0)
    with pytest.raises(DataError, match="size must be a positive int"):
        photo_crops("train", 10, size=0)


def test_digits_splits_partition_the_data_exactly() -> None:
    bunch = load_digits()
    target = bunch.target
    rows, labels = [], []
    for split, (lo, hi) in zip(SPLITS, [(0.0, 0.7), (0.7, 0.8), (0.8, 1.0)], strict=True):
        X, y = digits(split, size=8)
        assert X.dtype == torch.float32 and X.shape[1:] == (1, 8, 8) and y.dtype == torch.int64
        expected = [
            round(hi * (target == c).sum()) - round(lo * (target == c).sum()) for c in range(10)
        ]
        assert y.bincount(minlength=10).tolist() == expected
        rows.append((X.reshape(len(X), 64) * 16).numpy())
        labels.append(y.numpy())
    got = np.concatenate([np.concatenate(labels)[:, None], np.concatenate(rows)], axis=1)
    full = np.concatenate([target[:, None], bunch.data], axis=1).astype(np.float32)
    sort = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(sort(got), sort(full))


def test_digits_upscaled() -> None:
    X8, y8 = digits("test", size=8)
    X, y = digits("test")
    assert X.shape == (len(y8), 1, 24, 24) and torch.equal(y, y8)
    assert float(X.min()) >= 0.0 and float(X.max()) <= 1.0
    # bilinear upscaling keeps the mean of each image (up to the border effect) close
    assert float((X.mean(dim=(1, 2, 3)) - X8.mean(dim=(1, 2, 3))).abs().max()) < 0.05
