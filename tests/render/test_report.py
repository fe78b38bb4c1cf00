"""The inspect report's drawing from plain data (no model, no trace): which filters and maps it
draws, in which colours, what it says it left out, and the files it writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.render.colormap import lut
from convscope.render.report import BlockView, ReportInput, write_report
from convscope.render.report_pictures import filter_summary, panel, strip, strongest


def _w(norms: list[float], c_in: int, k: int = 1) -> torch.Tensor:
    """Filters (len(norms), c_in, k, k) whose filter i has L2 norm norms[i] (one non-zero weight)."""
    w = torch.zeros(len(norms), c_in, k, k)
    for i, n in enumerate(norms):
        w[i, i % c_in, 0, 0] = n
    return w


def test_deep_filters_ranked_by_norm_16_by_16_and_what_is_left_out() -> None:
    norms = [float(v) for v in [3, 9, 1, 9, 5, 2, 8, 7, 6, 4, 10, 11, 12, 13, 14, 15, 0.5, 0.25, 16, 17]]
    s = filter_summary(_w(norms, 20), symbol="W", all_filters=False, norm="map", title="W · c")
    # largest first; the two filters of norm 9 (1 and 3) keep their index order
    assert s.order == [19, 18, 15, 14, 13, 12, 11, 10, 1, 3, 6, 7, 8, 4, 9, 0]
    assert s.shown == "16 of 20 filters, ranked by ‖W‖ (17 … 3), input channels 0–15 of 20"
    assert s.left_out == "4 filters with ‖W‖ ≤ 2 and input channels 16–19 of every filter"
    # 16 rows of 16 cells, each 24 px (1×1 kernels scaled up to FILTER_CELL)
    assert len(s.picture.cells) == 256 and {(c.w, c.h) for c in s.picture.cells} == {(24, 24)}


def test_all_filters_draws_every_filter_and_input() -> None:
    norms = [float(i + 1) for i in range(20)]
    s = filter_summary(_w(norms, 20, 3), symbol="dL/dW", all_filters=True, norm="map", title="g")
    assert s.order == list(range(19, -1, -1)) and s.left_out == ""
    assert s.shown == "all filters, ranked by ‖dL/dW‖ (20 … 1), all 20 input channel(s)"
    assert len(s.picture.cells) == 400 and s.picture.cells[0].w == 6  # 3×3 kernels at 2× = 6 px


def test_rgb_filters_are_colour_pictures_all_of_them_up_to_64() -> None:
    w = torch.zeros(4, 3, 2, 2)
    w[2, 0] = 1.0  # filter 2: pure red, the strongest
    s = filter_summary(w, symbol="W", all_filters=False, norm="map", title="W")
    assert s.order == [2, 0, 1, 3] and s.left_out == ""
    box = s.picture.cells[0]  # the first drawn filter is filter 2
    assert tuple(s.picture.array[box.y, box.x]) == (255, 128, 128)  # red up, green/blue at 0 → grey


def test_dense_weights_are_one_matrix() -> None:
    s = filter_summary(torch.ones(3, 5), symbol="W", all_filters=False, norm="map", title="W")
    assert s.shown == "all 3 × 5 weights as one matrix (a row per output unit)" and s.left_out == ""


def test_strongest_maps_by_mean_or_mean_abs() -> None:
    a = torch.zeros(5, 2, 2)
    a[3] = 2.0
    a[1] = 1.0
    a[4, 0, 0] = 4.0  # mean 1.0: ties with map 1, index order wins
    assert strongest(a, 3) == ([3, 1, 4], "mean value")
    z = a.clone()
    z[0] = -3.0
    assert strongest(z, 2) == ([0, 3], "mean |value|")


def test_colours_follow_the_signs_of_the_values() -> None:
    pos = torch.tensor([[[0.0, 1.0]]])  # (1, 1, 2): one map, values >= 0
    pic = panel(pos, norm="map", title="x")
    box = pic.cells[0]
    assert tuple(pic.array[box.y, box.x]) == tuple(lut("sequential")[0])  # 0 → darkest, not white
    both = torch.tensor([[[-1.0, 1.0, 0.0]]])
    pic = panel(both, norm="map", title="z")
    box = pic.cells[0]
    f = box.w // 3
    assert tuple(pic.array[box.y, box.x + 2 * f]) == tuple(lut("diverging")[128])  # 0 → the centre


def test_strip_is_labelled_by_channel_on_one_scale() -> None:
    ramp = torch.full((3, 3), 0.5)
    ramp[1, 1] = 1.0
    a = torch.arange(10.0).view(10, 1, 1) * ramp  # (10, 3, 3): map i peaks at i in its centre
    pic, idx, how = strip(a, title="s")
    assert idx == [9, 8, 7, 6, 5, 4, 3, 2] and how == "mean value"
    # one shared scale: map 9's peak is the brightest colour, map 2's peak 2/9 of the way up
    (tx, ty), (lx, ly) = pic.cells[0].center, pic.cells[7].center
    assert tuple(pic.array[ty, tx]) == tuple(lut("sequential")[255])
    assert tuple(pic.array[ly, lx]) == tuple(lut("sequential")[round(2 / 9 * 255)])


def _report(tmp_path: Path, *, batch: int = 1) -> tuple[Path, list[BlockView]]:
    img = np.zeros((4, 4, 3), np.uint8)
    img[0, 0] = (255, 0, 0)
    x = torch.randn(3, 4, 4)
    a1 = torch.relu(torch.randn(80, 2, 2))
    a1[7] = 10.0  # the strongest map of block 1
    views = [
        BlockView(
            name="conv1", title="conv1 → relu", facts=(("type", "Conv2d"),),
            tensors={"x": x, "weight": torch.randn(80, 3, 3, 3), "z": a1 - 0.5, "a": a1,
                     "grad_weight": torch.randn(80, 3, 3, 3), "grad_z": torch.randn(80, 2, 2)},
            stats={"min": 0.0, "max": 10.0, "mean": 1.0, "sparsity": 0.5, "dead_channels": 0},
            x_image=img, meta={"kind": "conv"},
        ),
        BlockView(
            name="fc", title="fc", facts=(("type", "Linear"),),
            tensors={"x": a1.flatten()[:6], "weight": torch.randn(2, 6), "z": torch.tensor([1.0, -1.0])},
            x_from=None, meta={"kind": "linear"},
        ),
    ]  # fmt: skip
    info = ReportInput(
        title="t", model="m", image=img, image_name="dot", logits=torch.tensor([[0.0, 1.0]]),
        classes=["a", "b"], target=1, batch=batch,
        image_gradient=(torch.zeros(4, 4), torch.ones(4, 4)),
    )  # fmt: skip
    return write_report(views, info, tmp_path / "rep"), views


def test_report_files_pages_and_what_is_left_out(tmp_path: Path) -> None:
    html_path, _ = _report(tmp_path)
    rep = tmp_path / "rep"
    data = json.loads((rep / "report.json").read_text())
    b0 = data["blocks"][0]
    assert b0["page"] == "blocks/00_conv1.html" and data["blocks"][1]["page"] == "blocks/01_fc.html"
    assert set(b0["pictures"]) == {"x", "weight", "z", "a", "grad_weight", "grad_z"}
    # 80 maps > 64: the output maps share one order, the strongest by a first
    assert b0["maps"]["a"]["channels"][0] == 7 and len(b0["maps"]["a"]["channels"]) == 64
    assert b0["maps"]["a"]["fields"] == ["z", "a", "grad_z"]
    assert b0["strip"]["channels"][0] == 7
    assert b0["filters"]["weight"]["shown"].startswith("64 of 80 filters, ranked by ‖W‖")
    # x of block 1 is the RGB image itself: drawn in its own colours, scaled up 40× (to 160 px)
    x_png = np.asarray(Image.open(rep / b0["pictures"]["x"]).convert("RGB"))
    assert x_png.shape == (160, 160, 3) and tuple(x_png[0, 0]) == (255, 0, 0)
    assert tuple(x_png[0, 40]) == (0, 0, 0)
    page0 = (rep / b0["page"]).read_text()
    assert ("<b>z, a = f(z), dL/dz</b> show 64 of 80 maps: the strongest by mean value of <b>a = f(z)</b>,"
            " strongest first; left out: the other 16, none stronger than map") in page0
    assert "left out: 16 filters with ‖W‖ ≤" in page0 and "--all-channels" in page0
    for page in [html_path, *sorted((rep / "blocks").glob("*.html"))]:
        text = page.read_text()
        assert 'http-equiv="Content-Security-Policy"' in text
        assert "data:image" not in text  # pictures are files beside the page
        for src in re.findall(r"<img src='([^']+)'", text):
            assert (page.parent / src).resolve().is_file(), (page, src)
        assert "summed over" not in text  # one image: nothing is summed over a batch
    assert "weight gradient for this image" in page0


def test_batch_report_says_what_is_summed(tmp_path: Path) -> None:
    _report(tmp_path, batch=4)
    page0 = (tmp_path / "rep" / "blocks" / "00_conv1.html").read_text()
    assert "weight gradient, summed over a batch of 4" in page0


def test_no_blocks_is_one_clear_error(tmp_path: Path) -> None:
    info = ReportInput(title="t", model="m", image=np.zeros((2, 2, 3), np.uint8), image_name="i",
                       logits=torch.zeros(1, 2), classes=[], target=None)
    with pytest.raises(ValueError, match="the trace has no blocks"):
        write_report([], info, tmp_path / "r")
