"""Inspect-report benchmark: time to write the report, its sizes, and how fast its pages open.

    .venv/bin/python bench/report.py              # both nets, 3 interleaved rounds each
    .venv/bin/python bench/report.py --quick      # one round
    .venv/bin/python bench/report.py --only deep50

Issue 8 §3 ("Reports that stay usable at real size"). Two nets, one image (the default held-out
cat crop), target class 3, random init:
    resnet18   zoo:resnet18-shaped at 3×224×224 (29 blocks)
    deep50     a generated plain net at 3×224×224: a stride-4 7×7 stem and 49 conv3×3-BN-ReLU blocks
               in four stages of 64/128/256/512 channels at 56/28/14/7 px, then a classifier
               (51 blocks); written to a temporary file and named as `file.py:Deep50`
Timed interleaved in the same run (bench/_timing.py), wall and this process's CPU seconds:
    plain      the model's forward and backward of the class score in plain PyTorch (the floor:
               what any report of the gradients must at least compute)
    inspect    convscope.inspect.inspect(...): load the model, capture, draw and write every page
Then, once per net: the CLI end to end (`python -m convscope inspect`, interpreter start and
imports included; wall and the child's CPU), the report's sizes (the overview page with the
pictures it shows, the largest block page, the folder, file counts) and, in headless chromium at
1400 px, the load time of the overview and of every block page (goal: under 2 s) and the widest
page's scrollWidth (goal: ≤ 1400). Goals: overview ≤ 2 MB; resnet18 written in under 10 s.
Results go to bench/results/report.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _timing import Contender, compare, git_commit, load_average

from convscope.inspect import inspect, open_image, open_model

RESULTS = Path(__file__).resolve().parent / "results" / "report.json"
CHROMIUM = "/usr/bin/chromium"
TARGET = 3

DEEP50 = '''
"""50 conv blocks: a stride-4 stem, then 12 + 13 + 12 + 12 conv3x3-BN-ReLU blocks (64..512 ch)."""
from torch import nn


class Deep50(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers = [nn.Conv2d(3, 64, 7, stride=4, padding=3), nn.BatchNorm2d(64), nn.ReLU()]
        c = 64
        for stage, (width, count) in enumerate(((64, 12), (128, 13), (256, 12), (512, 12))):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                layers += [nn.Conv2d(c, width, 3, stride=stride, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                c = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))
'''


def page_bytes(page: Path) -> int:
    """An HTML page and every picture it shows, in bytes."""
    text = page.read_text()
    pics = set(re.findall(r"<img src='([^']+)'", text))
    return len(text.encode()) + sum((page.parent / p).stat().st_size for p in pics)


def sizes(out: Path) -> dict[str, Any]:
    blocks = sorted((out / "blocks").glob("*.html"))
    per_block = [page_bytes(p) for p in blocks]
    files = [p for p in out.rglob("*") if p.is_file()]
    return {
        "overview_html_bytes": (out / "index.html").stat().st_size,
        "overview_with_pictures_bytes": page_bytes(out / "index.html"),
        "block_pages": len(blocks),
        "largest_block_page_bytes": max(per_block),
        "largest_block_page": blocks[per_block.index(max(per_block))].name,
        "folder_bytes": sum(p.stat().st_size for p in files),
        "files": len(files),
        "pngs": len(list((out / "png").glob("*.png"))),
    }


def browse(out: Path) -> dict[str, Any]:
    """Load time (navigation start → load event, ms) and scrollWidth of every page at 1400 px."""
    from playwright.sync_api import sync_playwright

    pages = [out / "index.html", *sorted((out / "blocks").glob("*.html"))]
    loads: dict[str, float] = {}
    widths: dict[str, int] = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            for path in pages:
                page.goto(path.as_uri())
                page.wait_for_load_state("load")
                nav = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
                loads[path.name] = round(json.loads(nav)["loadEventEnd"], 1)
                widths[path.name] = int(page.evaluate("document.documentElement.scrollWidth"))
        finally:
            b.close()
    slowest = max(loads, key=lambda k: loads[k])
    widest = max(widths, key=lambda k: widths[k])
    return {
        "overview_load_ms": loads["index.html"],
        "slowest_page": slowest, "slowest_load_ms": loads[slowest],
        "widest_page": widest, "widest_scroll_width": widths[widest], "window": 1400,
    }  # fmt: skip


def cli_run(spec: str, out: Path, extra: list[str]) -> dict[str, float]:
    """`python -m convscope inspect` once: wall seconds and the child's CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "convscope", "inspect", "--model", spec, "--out", str(out),
                    "--target", str(TARGET), *extra], check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def run_case(name: str, spec: str, extra: list[str], tmp: Path, repeats: int) -> dict[str, Any]:
    input_size = extra[1] if extra else None
    loaded = open_model(spec, input_size=input_size)
    x, _ = loaded.to_input(open_image(None, 3)[0])  # (1, 3, 224, 224)
    model = loaded.model

    def plain() -> None:
        model.zero_grad(set_to_none=True)
        model(x)[0, TARGET].backward()

    out = tmp / f"{name}-lib"
    contenders = [
        Contender("plain", plain),
        Contender("inspect", lambda: inspect(spec, out=out, target=TARGET, input_size=input_size)),
    ]
    t = compare(contenders, repeats=repeats, warmup=1, min_repeats=1)
    cli_out = tmp / f"{name}-cli"
    result: dict[str, Any] = {
        "model": spec, "blocks": len(list((out / "blocks").glob("*.html"))),
        "timings": {k: v.as_dict() for k, v in t.items()},
        "inspect_over_plain_wall": t["inspect"].median / t["plain"].median,
        "inspect_over_plain_cpu": t["inspect"].cpu_median / t["plain"].cpu_median,
        "cli": cli_run(spec, cli_out, extra),
        "sizes": sizes(cli_out), "browser": browse(cli_out),
    }  # fmt: skip
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round per net")
    ap.add_argument("--only", choices=["resnet18", "deep50"], help="one net")
    args = ap.parse_args()
    repeats = 1 if args.quick else 3
    load0 = load_average()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "deep50.py").write_text(DEEP50)
        cases = {"resnet18": ("zoo:resnet18-shaped", []),
                 "deep50": (f"{tmp / 'deep50.py'}:Deep50", ["--input-size", "3x224x224"])}
        for name, (spec, extra) in cases.items():
            if args.only and name != args.only:
                continue
            r = run_case(name, spec, extra, tmp, repeats)
            results[name] = r
            t, s, b = r["timings"], r["sizes"], r["browser"]
            print(f"{name}: {r['blocks']} blocks · inspect {t['inspect']['median_s']:.2f} s wall / "
                  f"{t['inspect']['cpu_median_s']:.2f} s CPU; plain fwd+bwd {t['plain']['median_s']:.3f} s "
                  f"wall / {t['plain']['cpu_median_s']:.3f} s CPU; ratio inspect/plain "
                  f"{r['inspect_over_plain_wall']:.1f}× wall, {r['inspect_over_plain_cpu']:.1f}× CPU")
            print(f"  CLI end to end {r['cli']['wall_s']} s wall / {r['cli']['cpu_s']} s CPU")
            print(f"  overview {s['overview_html_bytes'] / 1e3:.0f} kB HTML, {s['overview_with_pictures_bytes'] / 1e6:.2f}"
                  f" MB with its pictures (goal ≤ 2 MB); largest block page {s['largest_block_page']} "
                  f"{s['largest_block_page_bytes'] / 1e6:.2f} MB; folder {s['folder_bytes'] / 1e6:.1f} MB, "
                  f"{s['files']} files ({s['pngs']} PNG)")
            print(f"  chromium 1400 px: overview loads in {b['overview_load_ms']:.0f} ms, slowest page "
                  f"{b['slowest_page']} {b['slowest_load_ms']:.0f} ms (goal < 2000); widest page "
                  f"{b['widest_page']} scrollWidth {b['widest_scroll_width']} (goal ≤ 1400)")
    load1 = load_average()
    print(f"load average before {load0}, after {load1}; torch threads {torch.get_num_threads()}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "commit": git_commit(),
        "python": platform.python_version(), "torch": torch.__version__, "repeats": repeats,
        "load_before": load0, "load_after": load1, "results": results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
