"""Concurrent uploads (issue 7): image decodes are bounded in number and in estimated memory, the
estimate comes from the header before decoding, and requests past the queue bound get a 503.
The real app in process; the decode is timed by a wrapper around the real safe loader."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from server.fakerun import fixture_writer

import convscope.server.routes.uploads as uploads
from convscope.config import ServeConfig
from convscope.runs import RunWriter
from convscope.server import create_app
from convscope.server.errors import ApiError
from convscope.server.routes.uploads import decode_estimate
from convscope.server.state import DecodeBudget

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BASE = "http://127.0.0.1"
BUSY = {
    "error": "the server is decoding other uploads and is at its memory budget: "
    "try again in a moment"
}


def png(side: int, mode: str = "RGB") -> bytes:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    a = np.full((side, side, channels), 90, np.uint8).squeeze()
    buf = io.BytesIO()
    Image.fromarray(a, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_estimate_from_the_header_alone() -> None:
    assert decode_estimate(png(1000), 25_000_000) == 1000 * 1000 * 14
    assert decode_estimate(png(1000, "L"), 25_000_000) == 1000 * 1000 * 14
    assert decode_estimate(png(1000, "RGBA"), 25_000_000) == 1000 * 1000 * 14
    assert decode_estimate(png(1000)[:100], 25_000_000) == 1000 * 1000 * 14  # header is enough
    assert decode_estimate(b"not an image", 25_000_000) == 0  # load_image will say what it is
    assert decode_estimate(png(1000), 999_999) == 0  # over the pixel cap: refused undecoded


class Meter:
    """Wraps the real load_image: counts decodes running at once; each takes >= `hold_s`."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.now = 0
        self.most = 0
        self.lock = threading.Lock()
        self.real: Callable[..., Any] = uploads.load_image

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(self.hold_s)
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, RunWriter, Meter]]:
    w = fixture_writer(tmp_path, "live")
    meter = Meter(hold_s=0.3)
    monkeypatch.setattr(uploads, "load_image", meter)
    app = create_app(tmp_path, ServeConfig())
    yield app, w, meter
    w.close()


def send_at_once(app: Any, body: bytes, n: int) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    with TestClient(app, base_url=BASE, headers={"Origin": BASE}) as c:
        start = threading.Barrier(n)

        def one() -> None:
            start.wait()
            res = c.post("/api/runs/live/uploads", files={"image": ("a.png", body, "image/png")})
            out.append((res.status_code, res.json()))

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return out


def test_eight_uploads_at_once_decode_at_most_two_at_a_time(
    live: tuple[Any, RunWriter, Meter],
) -> None:
    app, w, meter = live
    before = set(threading.enumerate())
    answers = send_at_once(app, png(300), 8)
    assert sorted((s, body["id"]) for s, body in answers) == [(200, i) for i in range(1, 9)]
    assert meter.most == 2  # on the request pool they all decoded at once
    assert [c.key for c in w.poll_controls()] == ["predict"] * 8
    # the server stopped (the client's exit): its two decode threads ended with it
    assert [t.name for t in set(threading.enumerate()) - before if t.name.startswith("decode")] == []


def test_big_images_decode_one_at_a_time(live: tuple[Any, RunWriter, Meter]) -> None:
    """Two decodes whose estimates together pass the budget never run together."""
    app, _, meter = live
    body = png(300)
    one = decode_estimate(body, 25_000_000)
    app.state.dash.decodes = DecodeBudget(
        max_bytes=one * 3 // 2, max_decodes=2, max_queued=16, wait_s=30.0
    )
    answers = send_at_once(app, body, 4)
    assert sorted(s for s, _ in answers) == [200] * 4
    assert meter.most == 1 and app.state.dash.decodes.peak_bytes == one


def test_past_the_queue_bound_uploads_get_503(live: tuple[Any, RunWriter, Meter]) -> None:
    app, w, _ = live
    app.state.dash.decodes = DecodeBudget(max_bytes=2**30, max_decodes=1, max_queued=2, wait_s=30)
    answers = send_at_once(app, png(300), 6)
    ok = [a for a in answers if a[0] == 200]
    assert 2 <= len(ok) < 6
    assert [a for a in answers if a[0] != 200] == [(503, BUSY)] * (6 - len(ok))
    assert len(w.poll_controls()) == len(ok)  # a refused upload sent nothing


def test_budget_waits_for_memory_and_times_out() -> None:
    budget = DecodeBudget(max_bytes=100, max_decodes=2, max_queued=8, wait_s=0.2)
    release = threading.Event()

    async def main() -> list[Any]:
        holder = asyncio.ensure_future(budget.run(lambda: 80, lambda: release.wait(5)))
        await asyncio.sleep(0.05)
        try:
            await budget.run(lambda: 30, lambda: "never")  # 80 + 30 > 100: waits 0.2 s, then 503
        except ApiError as err:
            late: Any = (err.status, err.message)
        release.set()
        return [await holder, late, await budget.run(lambda: 30, lambda: "fits now")]

    assert asyncio.run(main()) == [True, (503, BUSY["error"]), "fits now"]
    assert (budget.peak_bytes, budget.peak_active) == (80, 1)
    with pytest.raises(ValueError, match="max_bytes >= 1"):
        DecodeBudget(max_bytes=0, max_decodes=1, max_queued=1, wait_s=1)
