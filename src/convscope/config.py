"""Frozen configuration dataclasses, one per side of convscope, with a comment on each default."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Every tensor a block can hold; `CaptureConfig.keep` picks a subset.
FIELDS: tuple[str, ...] = (
    "x",  # the block's input
    "conv",  # W*x + b, before any norm
    "z",  # pre-activation: what enters the nonlinearity
    "a",  # activation map = feature map
    "weight",  # the filters W
    "bias",  # b
    "grad_weight",  # dL/dW
    "grad_bias",  # dL/db
    "grad_z",  # dL/dz
    "grad_a",  # dL/da
)


@dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    """What a `Probe` keeps, and where."""

    keep: frozenset[str] = field(default_factory=lambda: frozenset(FIELDS))  # all fields
    device: torch.device | str | None = None  # move kept tensors here (e.g. "cpu"); None = leave them
    dtype: torch.dtype | None = None  # e.g. torch.float16 to halve memory; None = the model's dtype

    def __post_init__(self) -> None:
        unknown = sorted(set(self.keep) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) to keep: {unknown}; valid: {list(FIELDS)}")
        if self.dtype is not None and not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {self.dtype}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The built-in trainer (`convscope demo` / `convscope train`)."""

    model: str = "zoo:convnetjs-cifar"  # zoo:NAME or layer-spec text (never an import path: see README Security)
    data: str = "builtin:photo-crops"  # builtin:photo-crops, builtin:digits, or a dataset folder/file
    train_size: int = 20_000  # training examples (generated, or the first N of a dataset)
    val_size: int = 1_000  # validation examples
    test_images: int = 16  # test images shown on the page with their predictions
    batch_size: int = 32  # ConvNetJS's demo uses 4; 32 keeps a 2-core CPU busy
    lr: float = 0.002  # SGD learning rate: keeps the measured update/weight ratio ‖ΔW‖/‖W‖ of the
    #                     demo net near the page's "about 1e-3" (median 3e-3, 90% under 7e-3 over
    #                     2,000 steps; lr 0.01 gave 6e-3, 90% up to 1.2e-2: scripts/demo_health.py)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 2e-3  # L2 weight decay (ConvNetJS's l2_decay), as the shipped weights used
    #                             (1e-4 overfit: 98% training vs 86% validation accuracy)
    steps: int | None = None  # stop after this many steps; None = until stopped
    val_every: int = 100  # steps between validation passes
    snapshot_every: float = 2.0  # seconds between tensor snapshots
    seed: int = 0  # data order and initialisation
    threads: int = 0  # torch threads; 0 = from the cores free now, one left to the server (train/threads.py)
    max_data_bytes: int = 512 * 2**20  # the in-memory training set is cut to fit this
    evolution_checkpoints: int = 16  # checkpoints evo-NNNNNN after 1, 2, 5, 10, 20, 50, ... steps of each
    #                                  net (a restart starts anew) for `convscope evolution` (16 reach step 100,000); 0 = none
    evolution_max_bytes: int = 64 * 2**20  # and no more once they would pass this in total (64 MiB:
    #                                        16 of zfnet-small's 1.8 MB; one of resnet18-shaped's 45 MB)
    run_budget_bytes: int = 10**9  # run.sqlite's byte budget (1 GB, >= 1 MiB): past it the oldest snapshots of
    #                                the biggest tensors are thinned; scalars and stats are never dropped

    def __post_init__(self) -> None:
        checks = {  # setting -> (holds, the allowed range as said in the error)
            "train_size": (self.train_size >= 1, "train_size >= 1"),
            "val_size": (self.val_size >= 1, "val_size >= 1"),
            "test_images": (0 <= self.test_images <= 64, "0 <= test_images <= 64"),
            "val_every": (self.val_every >= 1, "val_every >= 1"),
            "snapshot_every": (self.snapshot_every >= 0, "snapshot_every >= 0 seconds"),
            "steps": (self.steps is None or self.steps >= 1, "steps >= 1 (or None: until stopped)"),
            "evolution_checkpoints": (self.evolution_checkpoints >= 0, "evolution_checkpoints >= 0"),
            "evolution_max_bytes": (self.evolution_max_bytes >= 0, "evolution_max_bytes >= 0"),
            "run_budget_bytes": (self.run_budget_bytes >= 2**20, "run_budget_bytes >= 1048576 (1 MiB)"),
            "threads": (self.threads >= 0, "threads >= 0 (0: from the cores free)"),
        }
        for key, (allowed, fits) in CONTROL_RANGES.items():  # the dashboard's controls: one range each
            checks[key] = (fits(getattr(self, key)), allowed)
        bad = [f"{k}={getattr(self, k)!r} (must be {allowed})" for k, (ok, allowed) in checks.items() if not ok]
        if bad:
            raise ValueError(f"bad training setting(s): {'; '.join(bad)}")


LOCAL_HOSTS: frozenset[str] = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """How the dashboard server listens, guards itself and refreshes (convscope.server)."""

    host: str = "127.0.0.1"  # loopback only; any other address needs a token
    port: int = 8000  # 0 = let the OS pick a free port
    token: str | None = None  # when set, every request needs `Authorization: Bearer T` or ?token=T
    #                           (a ?token=T is exchanged for an HttpOnly SameSite=Strict cookie)
    allow_hosts: tuple[str, ...] = ()  # Host names answered besides localhost, 127.0.0.1, [::1]
    #                                    and `host` (DNS-rebinding guard; CLI --allow-host NAME)
    max_upload_bytes: int = 5 * 2**20  # largest image a user may upload (5 MiB)
    max_upload_pixels: int = 25_000_000  # and its pixel limit, checked before decoding
    image_cache_items: int = 512  # rendered PNGs kept in the LRU cache (all runs together)
    poll_s: float = 0.05  # how often the live channel looks for new steps (20 Hz: an idle poll is
    # one PRAGMA data_version, ~0.2 ms; a commit reaches the page within ~50 ms, issue 10)
    heartbeat_s: float = 15.0  # a comment line on the live channel when nothing else was sent
    stale_after_s: float = 15.0  # a live run whose trainer has not committed or polled controls
    #                              for this long is shown as "trainer not responding"
    embed: bool = False  # let pages on this machine (a Jupyter notebook: cs.show) frame the page;
    #                      False (the CLI): frame-ancestors 'none' and X-Frame-Options: DENY

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("ServeConfig.host must not be empty (use 127.0.0.1)")
        if self.token is not None and (len(self.token) < 8 or not self.token.isprintable()):
            raise ValueError("ServeConfig.token must be at least 8 printable characters")
        if self.host not in LOCAL_HOSTS and not self.token:
            raise ValueError(
                f"host {self.host!r} is reachable from other machines: a token is required "
                "(ServeConfig(token=...); the CLI generates one with --host)"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"ServeConfig.port must be in 0..65535, got {self.port}")
        if isinstance(self.allow_hosts, str):
            raise TypeError("ServeConfig.allow_hosts is a tuple of names, e.g. ('mybox.lan',)")
        for name in self.allow_hosts:
            bare = name.removeprefix("[").removesuffix("]") if name.startswith("[") else name
            if (
                not bare
                or len(bare) > 253
                or not bare.isprintable()
                or any(c in bare for c in "/\\@ *")
                or (":" in bare and not name.startswith("["))
            ):
                raise ValueError(
                    f"ServeConfig.allow_hosts: {name!r} is not a host name (give a name or "
                    "address without scheme or port; an IPv6 address in square brackets)"
                )
        for name in ("max_upload_bytes", "max_upload_pixels", "image_cache_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("poll_s", "heartbeat_s", "stale_after_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ServeConfig.{name} must be > 0, got {getattr(self, name)}")


MAX_LR = 10.0  # an lr above this diverges any of the zoo nets in a few steps
MAX_WEIGHT_DECAY = 1.0
MAX_BATCH = 4096
#: the dashboard's numeric controls and their sane bounds: the server checks them at its edge (a
#: 400 with the text), the trainer again on what it reads from the store (ok: false with the text)
CONTROL_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "lr": (f"0 < lr <= {MAX_LR:g}", lambda v: 0 < v <= MAX_LR),
    "momentum": ("0 <= momentum < 1", lambda v: 0 <= v < 1),
    "weight_decay": (f"0 <= weight_decay <= {MAX_WEIGHT_DECAY:g}", lambda v: 0 <= v <= MAX_WEIGHT_DECAY),
    "batch_size": (f"an integer in 1..{MAX_BATCH}", lambda v: 1 <= v <= MAX_BATCH and v == int(v)),
}

EVOLUTION_PREFIX = "evo-"  # the built-in trainer's checkpoint evo-000100 holds the weights after 100 steps

