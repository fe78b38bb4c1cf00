"""The built-in trainer's batches and memory format: channels-last weights and batches, normalised
once (speed choices, bench/trainer.py), the same images as an explicit construction from the
generated set, and the same training as a plain NCHW loop."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from convscope.config import TrainConfig
from convscope.data import photo_crops
from convscope.train import Trainer

SMALL = dict(train_size=64, val_size=16, test_images=2, batch_size=8, val_every=1000, snapshot_every=0.0)


def test_batches_are_the_indexed_images_flipped_by_a_coin(tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig(**SMALL), tmp_path / "run")  # type: ignore[arg-type]
    try:
        raw, ytr = photo_crops("train", 64, size=32, seed=0)  # the built-in set, generated again
        assert torch.equal(ytr, trainer.data.ytr)
        mean, std = raw.mean(dim=(0, 2, 3)), raw.std(dim=(0, 2, 3)).clamp_min(1e-3)
        xtr = (raw - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)  # normalised once, kept
        perm, cursor = trainer._perm.clone(), trainer._cursor
        state = torch.get_rng_state()
        xb, yb = trainer._batch()
        torch.set_rng_state(state)
        coins = torch.rand(8) < 0.5  # the trainer's draw, replayed
        idx = perm[cursor : cursor + 8]
        for k in range(8):  # an explicit construction, image by image
            want = xtr[idx[k]].flip(-1) if coins[k] else xtr[idx[k]]
            assert torch.equal(xb[k], want)
        assert torch.equal(yb, ytr[idx])
        assert 0 < int(coins.sum()) < 8  # this seed flips some and keeps some
        assert xb.is_contiguous(memory_format=torch.channels_last)
        conv_weights = [p for p in trainer.model.parameters() if p.dim() == 4]
        assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    finally:
        trainer.recorder.close()


def test_a_step_trains_as_a_plain_nchw_loop(tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig(**SMALL), tmp_path / "run")  # type: ignore[arg-type]
    try:
        plain = type(trainer.model)().train()
        plain.load_state_dict({k: v.contiguous() for k, v in trainer.model.state_dict().items()})
        opt = torch.optim.SGD(plain.parameters(), lr=trainer.lr, momentum=trainer.momentum,
                              weight_decay=trainer.weight_decay)  # fmt: skip
        state, cursor = torch.get_rng_state(), trainer._cursor
        xb, yb = trainer._batch()
        torch.set_rng_state(state)
        trainer._cursor = cursor  # train_step takes the same batch
        trainer.train_step()
        loss = F.cross_entropy(plain(xb.contiguous()), yb)  # batches arrive normalised
        opt.zero_grad()
        loss.backward()
        opt.step()
        for (name, p), q in zip(plain.state_dict().items(), trainer.model.state_dict().values(), strict=True):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    finally:
        trainer.recorder.close()
