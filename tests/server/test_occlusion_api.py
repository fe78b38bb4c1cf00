"""Occlusion and the embedding view through the dashboard's API, in process, against the built-in
trainer: the server queues the request, the trainer answers between two steps, the page's numbers
and panels come back. Oracles: a brute-force loop of full forwards with the grey square (the
probability map), and openTSNE run directly on the same codes (the map)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from convscope.analysis.embedding import Embedding
from convscope.config import ServeConfig, TrainConfig
from convscope.data import prepare
from convscope.server import create_app
from convscope.train import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BASE = "http://127.0.0.1"
SMALL = dict(train_size=128, val_size=64, test_images=3, batch_size=16, val_every=50, snapshot_every=0.0)


@pytest.fixture()
def live(tmp_path: Path) -> Iterator[tuple[TestClient, Trainer]]:
    trainer = Trainer(TrainConfig(steps=None, **SMALL), tmp_path / "live")  # type: ignore[arg-type]
    trainer.recorder.poll_every = 0.0  # answer after every step
    trainer.writer.log_snapshot(0, "_test", "input", trainer.data.xtest)  # as Trainer.run does first
    trainer.train_step()
    app = create_app(tmp_path, ServeConfig())
    with TestClient(app, base_url=BASE, headers={"Origin": BASE}) as client:
        yield client, trainer
    trainer.recorder.close("stopped")


def _png(seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def brute_force(trainer: Trainer, img: torch.Tensor, window: int, stride: int, target: int) -> np.ndarray[Any, Any]:
    """p(target) with a grey (0.5) square at each position (every `stride` pixels until the square
    reaches the edge, the last one cut by it, as Captum): one full forward per position."""
    _, h, w = img.shape
    rows = [i * stride for i in range(-(-(h - window) // stride) + 1)]
    cols = [i * stride for i in range(-(-(w - window) // stride) + 1)]
    out = np.zeros((len(rows), len(cols)))
    model = trainer.model.eval()
    with torch.no_grad():
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                x = img.clone()
                x[:, r : r + window, c : c + window] = 0.5
                out[i, j] = float(torch.softmax(model(trainer.data.norm(x[None])), 1)[0, target])
    trainer.model.train()
    return out


def test_upload_then_occlusion_round_trip(live: Any) -> None:
    client, trainer = live
    up = client.post("/api/runs/live/uploads", files={"image": ("cat.png", _png(), "image/png")})
    assert up.status_code == 200, up.text
    upload = up.json()["id"]
    trainer.train_step()
    assert client.get(f"/api/runs/live/uploads/{upload}").json()["status"] == "done"
    assert client.get("/api/runs/live/occlusion-images").json() == {"uploads": [{"id": upload, "name": "cat.png"}], "tests": 3}

    sent = client.post("/api/runs/live/occlusions", json={"upload": upload, "layer": "conv2", "window": 8, "stride": 4})
    assert sent.status_code == 200, sent.text
    ident = sent.json()["id"]
    assert client.get(f"/api/runs/live/occlusions/{ident}").json()["status"] == "pending"
    trainer.train_step()
    body = client.get(f"/api/runs/live/occlusions/{ident}").json()
    assert body["status"] == "done", body
    assert body["image"] == f"upload {upload} (cat.png)" and body["layer"] == "conv2"
    assert body["rows"] == [0, 4, 8, 12, 16, 20, 24] and body["cols"] == body["rows"] and body["positions"] == 49
    img = prepare(np.asarray(Image.open(io.BytesIO(_png()))), size=(32, 32), channels=3)  # what the server sent
    want = brute_force(trainer, img, 8, 4, body["target"])
    np.testing.assert_allclose(np.array(body["probability"]), want, atol=2e-5)
    with torch.no_grad():
        trainer.model.eval()
        clean = torch.softmax(trainer.model(trainer.data.norm(img[None])), 1)[0]
        trainer.model.train()
    assert body["target"] == int(clean.argmax())  # default: the class predicted for the clean image
    assert body["clean_probability"] == pytest.approx(float(clean.max()), abs=1e-5)
    assert len(body["feature"]) == 7 and len(body["label"]) == 7
    assert sum(item["positions"] for item in body["legend"]) == 49
    kinds = [p["kind"] for p in body["panels"]]
    assert kinds == ["a-input", "b-feature", "c-projection", "d-probability", "d-overlay", "e-labels"]
    for kind in kinds:
        png = client.get(f"/api/runs/live/occlusions/{ident}/{kind}.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).width >= 200

    test = client.post("/api/runs/live/occlusions", json={"test": 2, "window": 6, "stride": 3, "target": 1})
    trainer.train_step()
    body = client.get(f"/api/runs/live/occlusions/{test.json()['id']}").json()
    assert body["status"] == "done" and body["image"] == "test image 2" and body["target"] == 1
    assert body["layer"] == "conv3"  # the default: the last conv block
    assert body["rows"] == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27] and body["positions"] == 100
    want = brute_force(trainer, trainer.data.xtest[2], 6, 3, 1)
    np.testing.assert_allclose(np.array(body["probability"]), want, atol=2e-5)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"test": 0, "upload": 1}, 400, "exactly one"),
        ({}, 400, "exactly one"),
        ({"test": 9}, 400, "out of range"),
        ({"test": 0, "layer": "nope"}, 400, "unknown layer"),
        ({"test": 0, "window": 65}, 400, "window must be"),
        ({"test": 0, "stride": True}, 400, "stride must be"),
        ({"upload": 1}, 404, "no upload 1"),
    ],
)
def test_bad_occlusion_requests(live: Any, body: dict[str, Any], status: int, says: str) -> None:
    client, _ = live
    r = client.post("/api/runs/live/occlusions", json=body)
    assert r.status_code == status and says in r.json()["error"], r.text


def test_refused_by_the_trainer_is_failed_with_its_line(live: Any) -> None:
    client, trainer = live
    ident = client.post("/api/runs/live/occlusions", json={"test": 0, "target": 50}).json()["id"]
    trainer.train_step()
    body = client.get(f"/api/runs/live/occlusions/{ident}").json()
    assert body["status"] == "failed" and "target 50 is out of range" in body["error"], body
    assert body["panels"] == [] and body["probability"] == []
    assert client.get("/api/runs/live/occlusions/999").status_code == 404
    assert client.get(f"/api/runs/live/occlusions/{ident}/nope.png").status_code == 400
    assert client.get(f"/api/runs/live/occlusions/{ident}/d-overlay.png").status_code == 404


def test_ended_run_is_answered_by_the_worker(tmp_path: Path) -> None:
    import time

    from safetensors.torch import load_file


    Trainer(TrainConfig(steps=3, **SMALL), tmp_path / "done").run()  # type: ignore[arg-type]
    app = create_app(tmp_path, ServeConfig())
    app.state.dash.workers.idle_s = 2

    def poll(path: str) -> dict[str, Any]:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            body: dict[str, Any] = client.get(path).json()
            if body["status"] != "pending":
                return body
            time.sleep(0.2)
        raise AssertionError(f"no answer at {path}")

    with TestClient(app, base_url=BASE, headers={"Origin": BASE}) as client:
        occ = client.post("/api/runs/done/occlusions", json={"test": 1, "window": 8, "stride": 8})
        emb = client.post("/api/runs/done/embeddings", json={"n": 40})
        assert occ.status_code == 200 and emb.status_code == 200
        body = poll(f"/api/runs/done/occlusions/{occ.json()['id']}")
        assert body["status"] == "done" and body["weights"] == "checkpoint last (step 2)", body
        trainer = Trainer(TrainConfig(steps=1, **SMALL), tmp_path / "oracle")  # the same data, its model replaced  # type: ignore[arg-type]
        trainer.model.load_state_dict(load_file(str(tmp_path / "done" / "checkpoints" / "last.safetensors")))
        want = brute_force(trainer, trainer.data.xtest[1], 8, 8, body["target"])
        np.testing.assert_allclose(np.array(body["probability"]), want, atol=2e-5)
        m = poll(f"/api/runs/done/embeddings/{emb.json()['id']}")
        assert m["status"] == "done" and m["n"] == 40 and m["labels"] == trainer.data.yval[:40].tolist(), m
        trainer.recorder.close("stopped")


def test_embedding_map_and_placement(live: Any) -> None:
    client, trainer = live
    sent = client.post("/api/runs/live/embeddings", json={"n": 60})
    assert sent.status_code == 200, sent.text
    ident = sent.json()["id"]
    trainer.train_step()
    body = client.get(f"/api/runs/live/embeddings/{ident}").json()
    assert body["status"] == "done", body
    assert body["n"] == 60 and body["layer"] == "flatten" and body["base"] is None
    assert body["labels"] == trainer.data.yval[:60].tolist()
    assert body["classes"] == trainer.data.classes
    # the oracle: the same images, weights and seed through Embedding directly
    ref = Embedding(trainer.model, "flatten").run((trainer.data.xval[:60], trainer.data.yval[:60]), n=60, seed=0,
                                                   transform=trainer.data.norm, perplexity=59 / 3)  # fmt: skip
    np.testing.assert_allclose(np.array(body["xy"]), ref.xy, atol=1e-3)
    sheet = client.get(f"/api/runs/live/embeddings/{ident}/thumbs.png")
    assert sheet.status_code == 200
    assert Image.open(io.BytesIO(sheet.content)).size == (8 * 32, 8 * 32)  # ceil(sqrt(60)) = 8 columns, 8 rows

    save = client.post("/api/runs/live/controls", json={"key": "save_checkpoint", "value": "now"})
    assert save.status_code == 200
    trainer.train_step()
    placed = client.post("/api/runs/live/embeddings", json={"base": ident, "checkpoint": "now"})
    assert placed.status_code == 200, placed.text
    trainer.train_step()
    p = client.get(f"/api/runs/live/embeddings/{placed.json()['id']}").json()
    assert p["status"] == "done" and p["base"] == ident and p["checkpoint"] == "now" and p["thumbs"] == ident
    base_xy, new_xy = np.array(body["xy"]), np.array(p["xy"])
    span = float(np.ptp(base_xy, axis=0).max())
    # nearly the same weights: each image lands near where it is in the map
    assert float(np.median(np.linalg.norm(new_xy - base_xy, axis=1))) < 0.15 * span
    bad = client.post("/api/runs/live/embeddings", json={"checkpoint": "missing"})
    assert bad.status_code == 400 and "no checkpoint" in bad.json()["error"]
    assert client.post("/api/runs/live/embeddings", json={"n": 1}).status_code == 400


def test_an_embedding_of_fewer_than_four_images_is_refused_up_front(live: Any) -> None:
    """t-SNE's smallest perplexity (1) needs 4 images: n=2 was accepted and then failed in the
    trainer with "perplexity must be a number from 1 to 1000, got 0.3333", a setting never given."""
    client, trainer = live
    res = client.post("/api/runs/live/embeddings", json={"n": 3})
    assert (res.status_code, res.json()) == (400, {"error": "n must be an integer in 4..1000 or null"})
    sent = client.post("/api/runs/live/embeddings", json={"n": 4})
    assert sent.status_code == 200, sent.text
    trainer.train_step()
    body = client.get(f"/api/runs/live/embeddings/{sent.json()['id']}").json()
    assert body["status"] == "done" and body["n"] == 4 and body["perplexity"] == 1.0, body
