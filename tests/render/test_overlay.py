"""overlay: blending, bilinear resizing of the heat, markers and errors, with exact pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convscope.render import overlay
from convscope.render.colormap import CENTER, MARKER, apply, lut

IMAGE = np.random.default_rng(0).integers(0, 256, (4, 8, 3), dtype=np.uint8)


def test_alpha_zero_is_the_image_and_alpha_one_is_the_heat() -> None:
    heat = np.random.default_rng(1).random((4, 8))
    np.testing.assert_array_equal(overlay(IMAGE, heat, alpha=0.0).array, IMAGE)
    np.testing.assert_array_equal(
        overlay(IMAGE, heat, alpha=1.0).array, apply(heat / heat.max(), "sequential")
    )
    half = overlay(IMAGE, heat, alpha=0.5).array
    expected = np.rint(0.5 * IMAGE + 0.5 * apply(heat / heat.max(), "sequential").astype(float))
    np.testing.assert_array_equal(half, expected.astype(np.uint8))


def test_heat_is_resized_bilinearly_to_the_image() -> None:
    heat = np.array([[0.0, 1.0]])  # 1x2 -> 4x8: output x samples input at (x + 0.5) / 4 - 0.5
    got = overlay(IMAGE, heat, alpha=1.0).array
    row = np.array([0.0, 0.0, 0.125, 0.375, 0.625, 0.875, 1.0, 1.0])
    np.testing.assert_array_equal(got, np.broadcast_to(apply(row, "sequential"), (4, 8, 3)))


def test_signed_heat_centres_zero() -> None:
    heat = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    got = overlay(IMAGE[:2, :2], heat, alpha=1.0, signed=True).array
    div = lut("diverging")
    np.testing.assert_array_equal(got[0, 1], div[CENTER])
    np.testing.assert_array_equal(got[0, 0], div[0])
    np.testing.assert_array_equal(got[1, 1], div[255])


def test_grey_images_and_constant_heat() -> None:
    grey = IMAGE[:, :, 0]
    pic = overlay(grey, np.zeros((2, 2)), alpha=0.0)
    assert pic.array.shape == (4, 8, 3)
    assert (pic.array == MARKER).all(axis=-1).any()  # constant heat carries no "where": marked
    assert not (overlay(grey, np.eye(2), alpha=0.0).array == MARKER).all(axis=-1).any()


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"overlay image must be uint8 shaped \(H, W, 3\)"):
        overlay(np.zeros((3, 4, 8)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="one map shaped"):
        overlay(IMAGE, np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="alpha must be in"):
        overlay(IMAGE, np.ones((2, 2)), alpha=1.5)
    with pytest.raises(ValueError, match="overlay heat has 1 NaN"):
        overlay(IMAGE, np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="signed=False"):
        overlay(IMAGE, -np.ones((2, 2)))
