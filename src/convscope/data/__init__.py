"""convscope.data: built-in offline datasets, readers for user data, and the one safe image loader.

Every dataset yields (x float32 (C, H, W) in [0, 1], label int); `open_dataset(spec, ...)`
picks the right one from a spec string. `load_image` is the only place images are opened.
"""

from convscope.data.arrays import ArrayDataset
from convscope.data.builtin import (
    PHOTO_CLASSES,
    PHOTOS,
    digits,
    photo,
    photo_crops,
)
from convscope.data.cifar_bin import CIFAR10Bin, read_cifar10_batch
from convscope.data.errors import DataError
from convscope.data.folder import ImageFolder
from convscope.data.image import ImageError, load_image
from convscope.data.mnist_idx import MNISTIdx, read_idx
from convscope.data.resolve import ACCEPTED, open_dataset
from convscope.data.transforms import prepare, to_chw_float

__all__ = [
    "ACCEPTED",
    "PHOTOS",
    "PHOTO_CLASSES",
    "ArrayDataset",
    "CIFAR10Bin",
    "DataError",
    "ImageError",
    "ImageFolder",
    "MNISTIdx",
    "digits",
    "load_image",
    "open_dataset",
    "photo",
    "photo_crops",
    "prepare",
    "read_cifar10_batch",
    "read_idx",
    "to_chw_float",
]
