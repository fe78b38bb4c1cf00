"""Peak memory of the dashboard server under N concurrent uploads of one big, small-on-disk PNG.

A 4990×4990 PNG (just under the 25-megapixel upload cap) compresses to a few tens of KB but
decodes to 75 MB of RGB, and the server's path (decode, convert, resize) holds a few such
copies at once. This starts the real server (uvicorn) in its own process over a live run, sends
N uploads at the same moment from N threads, and reads the server's peak RSS (VmHWM) from /proc.

    .venv/bin/python bench/uploads.py                       # N=8, this checkout
    .venv/bin/python bench/uploads.py --n 8 --src /tmp/before/src   # another checkout's server

Prints one line per run: N, answers by status code, wall time, the server's RSS before the
uploads and its peak during them (MB). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from convscope.runs import RunWriter

SERVER = """
import sys, uvicorn
from pathlib import Path
from convscope.config import ServeConfig
from convscope.server import create_app
root, port = Path(sys.argv[1]), int(sys.argv[2])
uvicorn.run(create_app(root, ServeConfig(port=port)), host="127.0.0.1", port=port,
            log_level="warning")
"""


def big_png(side: int) -> bytes:
    """A side×side RGB PNG that compresses well (smooth bands), like the issue's 34 KB file."""
    rows = (np.arange(side, dtype=np.uint32) * 255 // side).astype(np.uint8)  # (side,)
    rgb = np.empty((side, side, 3), np.uint8)
    rgb[..., 0] = rows[:, None]
    rgb[..., 1] = 128
    rgb[..., 2] = 255 - rows[:, None]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "convscope-bench-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(port: int, body: bytes, ctype: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    origin = f"http://127.0.0.1:{port}"
    headers = {"Content-Type": ctype, "Origin": origin, "Host": f"127.0.0.1:{port}"}
    conn.request("POST", "/api/runs/live/uploads", body=body, headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def measure(n: int, png: bytes, src: str | None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        writer = RunWriter(root / "live", meta={
            "trainer": "builtin", "status": "running", "input_shape": [3, 32, 32],
        })  # fmt: skip
        writer.commit(0)
        port = free_port()
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root), str(port)], env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the server did not start") from None
                    time.sleep(0.1)
            small, ctype = multipart(big_png(64))
            assert post(port, small, ctype) == 200  # warm up: imports, first decode
            before = rss_mb(proc.pid, "VmRSS")
            body, ctype = multipart(png)
            statuses: list[int] = []
            start = threading.Barrier(n)

            def one() -> None:
                start.wait()
                statuses.append(post(port, body, ctype))

            threads = [threading.Thread(target=one) for _ in range(n)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            peak = rss_mb(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            writer.close()
    answers = ", ".join(f"{k}×{v}" for k, v in sorted(Counter(statuses).items()))
    return (
        f"N={n:<2d} answers {answers:<14s} wall {wall:5.1f} s   server RSS before {before:6.0f} MB"
        f"   peak {peak:6.0f} MB   (+{peak - before:.0f} MB)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1, 8], help="concurrent uploads")
    ap.add_argument("--side", type=int, default=4990, help="the PNG's width and height")
    ap.add_argument("--src", default=None, help="PYTHONPATH for the server (another checkout)")
    args = ap.parse_args()
    png = big_png(args.side)
    print(f"PNG {args.side}×{args.side}, {len(png) / 1024:.0f} KB; server from "
          f"{args.src or 'this checkout'}")  # fmt: skip
    for n in args.n:
        print(measure(n, png, args.src), flush=True)


if __name__ == "__main__":
    main()
