"""`centre_crop` and `prepare(crop=True)`: a picture whose aspect differs from the input's is cut
to its centre in that aspect, not stretched (inspect, project, occlusion and the dashboard's
uploads prepare pictures this way)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convscope.data.transforms import centre_crop, prepare


def _thirds(h: int, w: int, wide: bool = True) -> np.ndarray:
    """Red outer thirds, a blue middle third (across the long side)."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = 255
    if wide:
        img[:, w // 3 : 2 * w // 3] = (0, 0, 255)
    else:
        img[h // 3 : 2 * h // 3] = (0, 0, 255)
    return img


@pytest.mark.parametrize(
    ("shape", "size", "kept"),
    [((80, 120), (32, 32), (80, 80)), ((120, 80), (32, 32), (80, 80)), ((80, 120), (32, 64), (60, 120)),
     ((60, 120), (32, 64), (60, 120)), ((1, 1000), (32, 32), (1, 1)), ((7, 9), (5, 3), (7, 4))],
)  # fmt: skip
def test_centre_crop_keeps_the_largest_centred_part_in_the_aspect(
    shape: tuple[int, int], size: tuple[int, int], kept: tuple[int, int]
) -> None:
    img = np.arange(shape[0] * shape[1] * 3, dtype=np.int64).reshape(*shape, 3).astype(np.uint8)
    out = centre_crop(img, size)
    assert out.shape[:2] == kept
    top, left = (shape[0] - kept[0]) // 2, (shape[1] - kept[1]) // 2
    assert np.array_equal(out, img[top : top + kept[0], left : left + kept[1]])


def test_prepare_crop_sees_the_middle_third_only() -> None:
    for img in (_thirds(30, 90), _thirds(90, 30, wide=False)):
        x = prepare(img, size=(10, 10), channels=3, crop=True)
        assert x.shape == (3, 10, 10)
        assert x[0].max().item() == 0.0 and x[1].max().item() == 0.0 and x[2].min().item() == 1.0  # all blue
        stretched = prepare(img, size=(10, 10), channels=3)  # the old way: red edges squeezed in
        assert stretched[0].max().item() == 1.0


def test_the_upload_route_sends_the_centre() -> None:
    from convscope.server.routes.uploads import _decode

    class Cfg:
        max_upload_bytes, max_upload_pixels = 10**7, 10**7

    class State:
        config = Cfg()

    buf = io.BytesIO()
    Image.fromarray(_thirds(30, 90)).save(buf, format="PNG")
    png = _decode(State(), buf.getvalue(), "wide.png", (3, 8, 8))  # type: ignore[arg-type]
    sent = np.asarray(Image.open(io.BytesIO(png)))
    assert sent.shape == (8, 8, 3) and (sent == (0, 0, 255)).all()


def test_inspect_says_it_cropped(tmp_path: Path) -> None:
    from convscope.inspect import inspect

    Image.fromarray(_thirds(30, 90)).save(tmp_path / "wide.png")
    index = inspect(image=str(tmp_path / "wide.png"), out=tmp_path / "r", layers=["conv1"])
    text = index.read_text()
    assert "The 90×30 image was centre-cropped to the net&#x27;s aspect, then resized to 32×32" in text  # (escaped ')
    shown = np.asarray(Image.open(tmp_path / "r" / "png" / "input.png").convert("RGB"))
    assert (shown[..., 2] > 200).all() and (shown[..., 0] < 50).all()  # the blue middle, no red edge
