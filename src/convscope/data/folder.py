"""An image folder as a Dataset: one sub-folder per class, images opened with `load_image`.

    root/cat/0001.png, root/dog/a.jpg, ...   ->  classes ("cat", "dog"), labels 0, 1

Classes are the sub-folder names, sorted; images are found recursively inside each class
folder by file ending (IMAGE_SUFFIXES; hidden files skipped). A folder holding images but
no sub-folders is one class named after the folder. A corrupt image raises ImageError
naming the file when that item is read.

    >>> ds = ImageFolder("imgs/", size=(32, 32))
    >>> x, label = ds[0]                          # x float32 (3, 32, 32) in [0, 1]
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from convscope.data.errors import DataError
from convscope.data.image import IMAGE_SUFFIXES, load_image
from convscope.data.transforms import luminance, prepare, to_chw_float

__all__ = ["ImageFolder", "list_images"]


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def list_images(folder: str | Path, *, recursive: bool = True) -> list[Path]:
    """Image files in `folder` (by file ending, hidden ones skipped), sorted by path."""
    root = Path(folder)
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and _visible(p, root)
    )


class ImageFolder(Dataset[tuple[torch.Tensor, int]]):
    """Images in class sub-folders: items are (x float32 (channels, H, W) in [0, 1], label int).

    `size` (H, W) resizes every image (Pillow bilinear); None keeps each image's own size.
    `channels` 3 gives RGB, 1 gives luminance.
    """

    def __init__(
        self, root: str | Path, *, size: tuple[int, int] | None = None, channels: int = 3
    ) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise DataError(f"{self.root}: image folder not found")
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a folder (expected one sub-folder per class)")
        if channels not in (1, 3):
            raise DataError(f"{self.root}: channels must be 1 or 3, got {channels}")
        if size is not None and (len(size) != 2 or min(size) <= 0):
            raise DataError(f"{self.root}: size must be (H, W) with positive ints, got {size}")
        self.size = size
        self.channels = channels
        class_dirs = sorted(
            d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")
        )
        samples: list[tuple[Path, int]] = []
        if class_dirs:
            self.classes: tuple[str, ...] = tuple(d.name for d in class_dirs)
            for label, d in enumerate(class_dirs):
                files = list_images(d)
                if not files:
                    raise DataError(
                        f"{d}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})"
                    )
                samples.extend((f, label) for f in files)
        else:
            files = list_images(self.root, recursive=False)
            if not files:
                raise DataError(
                    f"{self.root}: folder holds no images and no class sub-folders "
                    f"(expected {self.root}/<class>/<image>{IMAGE_SUFFIXES[0]})"
                )
            self.classes = (self.root.name,)
            samples = [(f, 0) for f in files]
        self.samples: list[tuple[Path, int]] = samples
        self.targets: list[int] = [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        img = load_image(path)  # (H, W, 3) uint8; ImageError names the file
        if self.size is not None:
            return prepare(img, size=self.size, channels=self.channels), label
        x = to_chw_float(img)  # (3, H, W)
        return (luminance(x) if self.channels == 1 else x), label
