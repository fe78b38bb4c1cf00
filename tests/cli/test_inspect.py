"""`convscope inspect` end to end: the report's files and numbers, user models, and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.capture import count_hooks
from convscope.inspect import inspect, open_image, open_model

NET_PY = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, bias=False)
        self.fc = nn.Linear(2 * 4 * 4, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[0., 0, 0], [0, 1, 0], [0, 0, 0]]],
                                                 [[[0., 0, 0], [0, -1, 0], [0, 0, 0]]]]))
            self.fc.weight.zero_(); self.fc.bias.copy_(torch.tensor([0., 2., 1.]))

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))
'''


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convscope", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def _page_bytes(page: Path) -> int:
    """A page's size as a browser loads it: the HTML and every picture it shows."""
    text = page.read_text()
    return len(text.encode()) + sum(
        (page.parent / src).stat().st_size for src in set(re.findall(r"<img src='([^']+)'", text))
    )


def test_default_inspect_writes_a_complete_report(tmp_path: Path) -> None:
    html = inspect(out=tmp_path / "rep")
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    names = [b["name"] for b in report["blocks"]]
    assert names == ["conv1", "conv2", "conv3", "fc"]
    assert report["blocks"][0]["spec"]["formula"] == "16 × 3 × 5 × 5 + 16 = 1,216"
    assert report["blocks"][0]["out_shape"] == [16, 32, 32]
    assert report["blocks"][0]["activation"] == "relu1"
    assert [b["page"] for b in report["blocks"]] == [
        "blocks/00_conv1.html", "blocks/01_conv2.html", "blocks/02_conv3.html", "blocks/03_fc.html"
    ]  # fmt: skip
    for b in report["blocks"][:3]:
        assert set(b["pictures"]) == {"x", "weight", "z", "a", "grad_weight", "grad_z", "grad_a"}
        for rel in [*b["pictures"].values(), b["strip"]["file"]]:
            with Image.open(tmp_path / "rep" / rel) as im:
                assert im.format == "PNG" and im.width > 40
        assert (tmp_path / "rep" / b["page"]).is_file()
    probs = [p["probability"] for p in report["predictions"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    assert report["target"] == report["predictions"][0]["class"]
    text = html.read_text()
    assert "activation map = feature map" in text and "∂x/∂u" in text and "dL/dW" in text
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    assert "data:image" not in text and text.count("<img src='png/") >= 8  # files beside the page
    # x of block 1 is the RGB image: drawn in its own colours (the image as fed, scaled up 5×)
    x_png = np.asarray(Image.open(tmp_path / "rep" / report["blocks"][0]["pictures"]["x"]).convert("RGB"))
    shown = np.asarray(Image.open(tmp_path / "rep" / "png" / "input.png").convert("RGB"))
    assert x_png.shape == (160, 160, 3) and np.array_equal(x_png, shown)
    # x of block 2 (pooled ReLU output, >= 0) on the sequential scale: no white diverging centre
    page2 = (tmp_path / "rep" / report["blocks"][1]["page"]).read_text()
    assert "<code>.x</code> — input of the block (sequential: dark = 0)" in page2
    assert "<code>.z</code> — pre-activation (diverging: blue &lt; 0, white = 0, red &gt; 0)" in page2
    for page in [html, *(tmp_path / "rep" / "blocks").glob("*.html")]:
        assert "summed over" not in page.read_text()  # one image: no batch to sum over


def test_resnet18_shaped_at_224_meets_the_size_goals_and_ranks_filters_exactly(tmp_path: Path) -> None:
    """Issue 8 §3: the overview page ≤ 2 MB, a page per block, deep W and dL/dW drawn as the 16
    filters of largest norm (oracle: the model's own weight and plain autograd's gradient)."""
    torch.manual_seed(0)
    html = inspect("zoo:resnet18-shaped", out=tmp_path / "rep", target=3)
    torch.manual_seed(0)
    loaded = open_model("zoo:resnet18-shaped")
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert len(report["blocks"]) == 29 and _page_bytes(html) <= 2_000_000
    assert sorted(p.name for p in (tmp_path / "rep" / "blocks").iterdir()) == sorted(
        Path(b["page"]).name for b in report["blocks"]
    )
    block = next(b for b in report["blocks"] if b["name"] == "layer4.0.conv1")
    conv = loaded.model.layer4[0].conv1  # type: ignore[index,union-attr]
    x, _ = loaded.to_input(open_image(None, 3)[0])
    loaded.model.zero_grad()
    loaded.model(x)[0, 3].backward()
    for fld, t in (("weight", conv.weight), ("grad_weight", conv.weight.grad)):
        norms = t.detach().flatten(1).norm(dim=1)
        assert block["filters"][fld]["order"] == torch.argsort(norms, descending=True, stable=True)[:16].tolist()
        assert block["filters"][fld]["left_out"].startswith("496 filters with ‖")
        assert block["filters"][fld]["left_out"].endswith("and input channels 16–255 of every filter")
    # 512 output maps: the 64 with the largest mean a are drawn, strongest first
    a_maps = block["maps"]["a"]
    assert a_maps["of"] == 512 and len(a_maps["channels"]) == 64 and a_maps["fields"] == ["z", "a", "grad_z", "grad_a"]
    page = (tmp_path / "rep" / block["page"]).read_text()
    assert "left out: the other 448, none stronger than map" in page and "--all-channels" in page


def test_user_model_exact_numbers_and_grey_image(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(NET_PY)
    img = np.zeros((6, 6), np.uint8)
    img[2, 3] = 255
    Image.fromarray(img).save(tmp_path / "dot.png")
    inspect(f"{tmp_path / 'net.py'}:Net", image=str(tmp_path / "dot.png"), input_size="1x6x6",
            out=tmp_path / "rep", target=2)
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [b["name"] for b in report["blocks"]] == ["conv", "fc"]
    conv = report["blocks"][0]
    # filter 0 copies the input (one pixel of 1.0), filter 1 negates it and is killed by the ReLU
    assert conv["a_stats"]["max"] == 1.0 and conv["a_stats"]["min"] == 0.0
    assert conv["a_stats"]["sparsity"] == 31 / 32 and conv["a_stats"]["dead_channels"] == 1
    assert conv["spec"]["formula"] == "2 × 1 × 3 × 3 = 18"
    assert report["predictions"][0]["name"] == "class 1"  # bias 2 wins: fc weights are 0
    assert report["target"] == 2


def test_loaded_model_keeps_no_hooks(tmp_path: Path) -> None:
    loaded = open_model("zoo:tiny-vgg")
    inspect("zoo:tiny-vgg", image="coffee", out=tmp_path / "rep", target=3)
    assert count_hooks(loaded.model) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["blocks"][0]["out_shape"] == [10, 62, 62] and report["target"] == 3


def test_all_channels_draws_every_filter_and_threads_are_restored(tmp_path: Path) -> None:
    """conv3 of the trained demo net: W is 20 × 20 × 5 × 5. By default the 16 filters of largest
    ‖W‖ over input channels 0-15, and the report names the 4 filters and 4 inputs left out;
    with all_channels every one. The oracle ranks the shipped weights itself."""
    threads = torch.get_num_threads()
    w = open_model("zoo:convnetjs-cifar").model.conv3.weight.detach()  # type: ignore[union-attr]
    norms = w.flatten(1).norm(dim=1)
    order = torch.argsort(norms, descending=True, stable=True).tolist()
    inspect(out=tmp_path / "some", target=0)
    inspect(out=tmp_path / "all", target=0, all_channels=True)
    assert torch.get_num_threads() == threads
    some = json.loads((tmp_path / "some" / "report.json").read_text())["blocks"][2]["filters"]["weight"]
    every = json.loads((tmp_path / "all" / "report.json").read_text())["blocks"][2]["filters"]["weight"]
    assert some["order"] == order[:16] and every["order"] == order
    cut = f"{norms[order[16]]:.3g}"
    assert some["left_out"] == f"4 filters with ‖W‖ ≤ {cut} and input channels 16–19 of every filter"
    assert every["left_out"] == "" and every["shown"].startswith("all filters, ranked by ‖W‖")
    with pytest.raises(ValueError, match="out of range"):
        inspect(out=tmp_path / "bad", target=99)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "zoo:nope"], "unknown zoo model 'nope'; valid names: convnetjs-cifar"),
        (["--image", "no-such.png"], "neither a file nor a built-in photo"),
        (["--image", "corrupt.png"], "corrupt.png"),
        (["--target", "99"], "out of range"),
        (["--layer", "conv9"], "unknown layer"),
        (["--model", "net.py:Net"], "--input-size"),
        (["--weights", "evil.pt"], "unsafe"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "net.py").write_text(NET_PY)
    torch.save({"conv1.weight": torch.zeros(1), "payload": print}, tmp_path / "evil.pt")
    res = run_cli("inspect", "--out", "rep", *args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert message in lines[0]
    assert "Traceback" not in res.stderr


def test_cli_help_and_zoo(tmp_path: Path) -> None:
    res = run_cli("inspect", "--help", cwd=tmp_path)
    assert res.returncode == 0 and "Example: convscope inspect" in res.stdout
    res = run_cli("zoo", cwd=tmp_path)
    assert res.returncode == 0 and "zoo:convnetjs-cifar" in res.stdout and "zoo:resnet18-shaped" in res.stdout


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sys:exit", "error: 'sys:exit' is the built-in function exit, not a model"),
        ("quits.py:build", "error: building 'quits.py:build' failed: it called exit (SystemExit: 0)"),
    ],
)
def test_model_spec_that_exits_is_one_line_exit_2(tmp_path: Path, spec: str, message: str) -> None:
    """Issue 7 case 8: `--model sys:exit` used to exit 0, silent, with nothing written."""
    (tmp_path / "quits.py").write_text("import sys\n\ndef build():\n    sys.exit(0)\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    exe = Path(sys.executable).with_name("convscope")
    res = subprocess.run([str(exe), "inspect", "--model", spec, "--out", "tmp"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr
    assert res.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no tmp/ report folder


def test_nan_weights_give_a_warning_line_and_strict_json(tmp_path: Path) -> None:
    """NaN weights: the report is still written (its maps marked, not drawn), report.json is JSON
    that a browser parses (no NaN literal), no prediction is shown, and the CLI says why once."""
    from safetensors.torch import save_file

    from convscope.models.zoo import ZOO

    state = {k: torch.full_like(v, float("nan")) for k, v in ZOO["convnetjs-cifar"].factory().state_dict().items()}
    save_file(state, str(tmp_path / "nan.safetensors"))
    res = run_cli("inspect", "--weights", "nan.safetensors", "--out", "o", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    n = sum(v.numel() for v in state.values())
    warning = (
        f"warning: The model's output for this image is not finite (NaN or ±Inf; {n:,} of its parameter"
        " values are NaN or ±Inf): no prediction is shown, and maps that are not finite are marked, not drawn."
    )
    assert [line for line in res.stderr.splitlines() if line.startswith("warning:")] == [warning]
    assert "Traceback" not in res.stderr
    text = (tmp_path / "o" / "report.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    report = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    assert report["predictions"] == []
    index = (tmp_path / "o" / "index.html").read_text()
    assert "no prediction: the model's output is not finite" in index and "nan%" not in index
