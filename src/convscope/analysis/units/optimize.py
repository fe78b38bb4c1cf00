"""A unit's optimal stimulus (feature visualisation, Olah et al. 2017): https://distill.pub/2017/feature-visualization/

    opt = Optimize(model, layer="conv3", channel=5, mean=(0.49, 0.42, 0.39), std=(0.23, 0.21, 0.21))
    stim = opt.run(steps=256, size=64, seed=0)
    stim.image        # (1, 3, 64, 64) in [0, 1]: the picture that most excites feature map 5
    stim.input        # the same after the model's normalisation (what the model is fed)
    stim.trace        # the objective at each step; stim.activation: its value on stim.input

The image is found by gradient ascent (Adam on the image's parameters only) on the feature
map's mean activation — `a` of the block `layer` names, as `convscope.Probe` pairs blocks
(a conv/linear, its norm or its activation name), or the output of any other module. The
forward stops at the layer (nothing after it runs), so the fully connected head never sees
the image and any size the convolutions accept works.

Two regularisations (param.py has the image side):

- `style="lucent"` (default), as Olah et al. / Lucent's `render_vis`: a Fourier
  parameterisation scaled by 1/frequency, optional colour decorrelation, a sigmoid into
  [0, 1], and (from 64 px on) at every step a randomly padded, jittered, scaled and rotated
  view of the image is what the model sees (robustness: the picture must work wherever it
  lands). Defaults differ from Lucent's for small images: see below.
- `style="yosinski"`, as Yosinski et al. 2015 (https://arxiv.org/abs/1506.06579): plain
  pixels, L2 decay toward the mean colour every step and a Gaussian blur every few steps,
  clamped to [0, 1]. Their pixel-norm/contribution clipping is left out.

A unit that is silent on the current view (its map all zero, a = relu(z): no gradient
reaches the image) is pushed for that step by the largest z of its map — the position
closest to firing — until it fires; `meta["silent_steps"]` counts those steps. Without
this a unit the start image leaves silent (5 of the 20 conv3 units of the trained
convnetjs-cifar on grey, 9 on uniform noise) would stay a grey picture.

Defaults for small images, measured on the trained convnetjs-cifar's 20 conv3 maps at 32²
and 128 steps against the best mean activation over the 2000 built-in validation crops.
Lucent's own (lr 0.05, Lucid's ImageNet colour matrix, pad 12 / jitter 8 / jitter 4 px,
±10°, ±10%, all meant for 224² images) left 5 maps below that image — 0, 2, 4, 14, 15 (map
2: 0.35 vs 3.08, 15: 1.38 vs 2.60) — with pixels held in 0.2..0.8: (1) the colour matrix,
scaled to a unit luminance column, gives the colour axes 1/5 and 1/10 of luminance's step
(map 15 wants orange); (2) 12 px of grey padding is 37% of a 32² view, and jitter, rotation
and scale move a 32² image by whole conv3 cells (stride 4), so a sparse unit (0, 8) sees
only noise of its objective; (3) lr 0.05 moves a 32² image little in 128 steps. So: colors
"none", lr 0.1, shifts scaled to the size (`OptimizeConfig.shifts`), transforms only from
64 px on, and the last `polish` steps on the image itself keeping the best — all 20 maps
then beat the best crop (by 3.7× at least, map 8), in less time. The report compares each
stimulus with the best dataset image when it has one (render/units_report.py).

Limit: Adam scales every Fourier coefficient's step to about `lr` however small its
gradient, so a unit whose optimum is flat (one colour everywhere) gets a saturated pattern
that reaches its optimum only on average (tests/analysis/test_units_optimize.py).

Deterministic: every random draw (initial parameters, transforms) comes from one
`torch.Generator` seeded with `seed`, so the same seed gives a bit-identical image on CPU.
The model is left as it was: eval mode during the run and each module's mode restored, no
hook left (also when the forward raises), parameters, their `.grad` and `requires_grad`
untouched — gradients are taken with `torch.autograd.grad` with respect to the image only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from convscope.analysis.attribution.base import Attribution, AttributionError, check_version
from convscope.analysis.units.param import FourierImage, PixelImage, color_matrix, robust_view

STYLES: tuple[str, ...] = ("lucent", "yosinski")
STEPS = (1, 100_000)  # accepted range of `steps`
SIZES = (8, 1024)  # accepted range of `size` (pixels a side)
ROBUST_FROM = 64  # style "lucent" uses the robustness transforms from this size on (robust=None)


class OptimizeError(AttributionError):
    """Bad input to `Optimize`; the message names the problem in one line."""


@dataclass(frozen=True, kw_only=True)
class OptimizeConfig:
    """The optimiser and regularisers. Style "lucent": Lucent's defaults. Style "yosinski":
    their blur (width 0.5 every 4 steps, as in their first setting) and a small decay, chosen
    here by looking at convnetjs-cifar's units (they used plain SGD steps, this uses Adam)."""

    # Adam's step size on the image parameters; None = 0.1 for "lucent" (Lucent's 0.05 moves a 32²
    # image too little in 128 steps), 0.05 for "yosinski" (at 0.1 its clamped pixels leave conv3
    # map 2 of convnetjs-cifar silent: 0.06 against 17.4 in 96 steps)
    lr: float | None = None
    sd: float = 0.01  # std of the random initial parameters (Lucent's), noise around grey/mean
    # the last `polish` steps see the image itself (no transforms): the objective is then the one
    # reported, and the best image among them (and the last) is returned; 0 = none
    polish: int = 16
    # -- style "lucent" -------------------------------------------------------------------
    decay_power: float = 1.0  # coefficient at frequency f scaled by 1/f**decay_power (Lucent: 1)
    # colour decorrelation: "imagenet" (Lucid's matrix), "builtin" (photo crops), "none".
    # Default "none": Lucid's matrix, scaled to a unit luminance column, gives the two colour
    # axes 1/5 and 1/10 of luminance's step, and a colour unit stays grey (module docstring)
    colors: str = "none"
    # robustness transforms; None = on for "lucent" at 64 px and more, else off (at 32 px they
    # keep sparse units of convnetjs-cifar conv3 below the best photo crop: module docstring)
    robust: bool | None = None
    # pad, jitter, jitter2: None = Lucent's 12, 8, 4 px at 224 px scaled to the image's size
    # (at least 2 px of jitter); at 32 px: 2, 2, 1 (1 = no shift)
    pad: int | None = None  # border added before the transforms, pixels (Lucent: 12, grey)
    pad_mode: str = "constant"  # "constant" (grey 0.5, Lucent), "circular" or "reflect"
    jitter: int | None = None  # random shift of up to this many pixels before scaling (Lucent: 8)
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))  # 0.90..1.10 (Lucent)
    # rotations in degrees, drawn uniformly from this list (Lucent: −10..10 and five more 0s)
    angles: tuple[float, ...] = tuple(float(a) for a in range(-10, 11)) + (0.0,) * 5
    jitter2: int | None = None  # a second random shift after the rotation (Lucent: 4)
    # -- style "yosinski" -----------------------------------------------------------------
    decay: float = 1e-3  # per step x ← m + (1 − decay)(x − m), m the mean colour (their θ_decay)
    blur_every: int = 4  # Gaussian blur every this many steps; 0 = never (their θ_b_every)
    blur_sigma: float = 0.5  # the blur's std in pixels (their θ_b_width)

    def __post_init__(self) -> None:
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise OptimizeError(f"lr must be a positive number or None, got {self.lr!r}")
        if not (math.isfinite(self.sd) and self.sd >= 0):
            raise OptimizeError(f"sd must be a non-negative number, got {self.sd!r}")
        if self.colors not in ("imagenet", "builtin", "none"):
            raise OptimizeError(f"colors must be imagenet, builtin or none; got {self.colors!r}")
        for name in ("pad", "jitter", "jitter2", "blur_every", "polish"):
            v = getattr(self, name)
            if v is None and name in ("pad", "jitter", "jitter2"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 256:
                raise OptimizeError(f"{name} must be an int in 0..256{' or None' if name in ('pad', 'jitter', 'jitter2') else ''}, got {v!r}")
        if self.pad_mode not in ("constant", "circular", "reflect"):
            modes = "constant, circular or reflect"
            raise OptimizeError(f"pad_mode must be {modes}; got {self.pad_mode!r}")
        if not 0 <= self.decay < 1:
            raise OptimizeError(f"decay must be in [0, 1), got {self.decay!r}")
        if not (math.isfinite(self.blur_sigma) and self.blur_sigma > 0):
            raise OptimizeError(f"blur_sigma must be a positive number, got {self.blur_sigma!r}")
        if any(not (math.isfinite(s) and 0.25 <= s <= 4) for s in self.scales):
            raise OptimizeError(f"scales must lie in 0.25..4, got {self.scales!r}")

    def step_size(self, style: str) -> float:
        """Adam's lr for `style` (the field, or its default for the style)."""
        if self.lr is not None:
            return self.lr
        return 0.05 if style == "yosinski" else 0.1

    def shifts(self, size: int) -> tuple[int, int, int]:
        """(pad, jitter, jitter2) in pixels for a size×size image (see the fields)."""
        s = size / 224
        pad = self.pad if self.pad is not None else round(12 * s)
        jitter = self.jitter if self.jitter is not None else max(2, round(8 * s))
        jitter2 = self.jitter2 if self.jitter2 is not None else round(4 * s)
        return pad, jitter, jitter2


@dataclass(frozen=True)
class Stimulus:
    """The result of `Optimize.run`."""

    image: Tensor  # (1, C, size, size) in [0, 1]: the optimal stimulus
    input: Tensor  # (1, C, size, size): image after the model's normalisation (what it is fed)
    trace: list[float]  # the objective at each step, on its transformed view (padding included)
    activation: float  # the feature map's mean activation on `input` (no transforms)
    start: float  # the same on the initial (random) image
    seconds: float  # wall-clock time of the run
    # layer, channel, style, steps, size, seed, tensor (which one was tapped), silent_steps, ...
    meta: dict[str, Any] = field(default_factory=dict)

    def _repr_png_(self) -> bytes:
        """Jupyter: the stimulus as a picture (scaled up by whole pixels to >= 128 px)."""
        import io

        from PIL import Image

        arr = (self.image[0].detach().clamp(0, 1) * 255).round().to(torch.uint8)  # (C, S, S)
        rgb = arr.expand(3, -1, -1) if arr.shape[0] == 1 else arr
        f = max(1, -(-128 // max(rgb.shape[1:])))
        hwc = rgb.permute(1, 2, 0).repeat_interleave(f, 0).repeat_interleave(f, 1).contiguous().numpy()
        buf = io.BytesIO()
        Image.fromarray(hwc).save(buf, format="PNG")
        return buf.getvalue()


class Optimize(Attribution):
    """Gradient ascent on one feature map's mean activation, over a regularised image."""

    method = "optimize"

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: str,
        channel: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channels: int = 3,
        style: str = "lucent",
        config: OptimizeConfig | None = None,
    ) -> None:
        super().__init__(model)
        if not isinstance(layer, str) or not layer:
            raise OptimizeError(f"layer must be a layer name, got {layer!r}")
        if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
            raise OptimizeError(f"channel must be a non-negative int, got {channel!r}")
        if style not in STYLES:
            raise OptimizeError(f"style must be one of {', '.join(STYLES)}; got {style!r}")
        if channels not in (1, 3):
            raise OptimizeError(f"channels must be 1 or 3, got {channels!r}")
        self.layer, self.channel, self.style, self.channels = layer, channel, style, channels
        self.config = config if config is not None else OptimizeConfig()
        self._has_mean = mean is not None
        self.mean = _per_channel("mean", mean, channels, 0.0)  # (1, C, 1, 1)
        self.std = _per_channel("std", std, channels, 1.0)  # (1, C, 1, 1)
        if bool((self.std <= 0).any()):
            raise OptimizeError(f"std must be positive, got {list(std or [])}")

    # ---- the objective -------------------------------------------------------------------
    def normalise(self, image: Tensor) -> Tensor:
        """The model's input for an image in [0, 1]: (image − mean) / std."""
        return (image - self.mean.to(image)) / self.std.to(image)

    def _objective(self, x: Tensor, seen: _SeeZ | None = None) -> tuple[Tensor, Tensor, str]:
        """The mean of feature map `channel` of `layer` on x, the value to step on, and which
        tensor it is (the session must be active; `seen` must be its rule). The value to step
        on is the objective, or — when the map is all zero and is relu(z) of the last
        activation's input z, so that no gradient flows — the mean of that z's map."""
        if seen is not None:
            seen.z = None
        _, tap = self._forward(x, self.layer, stop=True)
        assert tap is not None and tap.tensor is not None
        check_version(tap)
        a = tap.tensor  # (1, K, h, w) or (1, K)
        if a.dim() < 2 or not 0 <= self.channel < a.shape[1]:
            raise OptimizeError(
                f"channel {self.channel} is out of range for layer {self.layer!r}: 0..{a.shape[1] - 1}"
                if a.dim() >= 2
                else f"layer {self.layer!r} gives shape {tuple(a.shape)}: no channels to pick"
            )
        value = a[:, self.channel].mean()
        z = seen.z if seen is not None else None
        if z is not None and z.shape == a.shape:
            with torch.no_grad():
                silent = not bool(a[:, self.channel].any()) and torch.equal(a, z.clamp(min=0))
            if silent:
                return value, z[:, self.channel].amax(), tap.what
        return value, value, tap.what

    def activation(self, image: Tensor) -> float:
        """The feature map's mean activation on `image` (1, C, H, W) in [0, 1], no transforms."""
        with self._session(None), torch.no_grad():
            value, _, _ = self._objective(self.normalise(image).to(self._dtype()))
        return float(value)

    def _dtype(self) -> torch.dtype:
        p = next(self.model.parameters(), None)
        return p.dtype if p is not None and p.is_floating_point() else torch.float32

    def _device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    # ---- the run -------------------------------------------------------------------------
    def _image(self, size: int, generator: torch.Generator) -> FourierImage | PixelImage:
        cfg = self.config
        if self.style == "yosinski":
            centre = self.mean.flatten().tolist() if self._has_mean else None  # the data's mean
            return PixelImage(size, generator=generator, channels=self.channels, sd=cfg.sd,
                              centre=centre)  # fmt: skip
        colors = color_matrix(cfg.colors) if self.channels == 3 else None
        return FourierImage(size, generator=generator, channels=self.channels, sd=cfg.sd,
                            decay_power=cfg.decay_power, colors=colors)  # fmt: skip

    def run(self, steps: int = 256, size: int = 64, seed: int = 0) -> Stimulus:
        """Optimise for `steps` Adam steps on a size×size image from seed `seed`."""
        _check_int("steps", steps, *STEPS)
        _check_int("size", size, *SIZES)
        _check_int("seed", seed, 0, 2**63 - 1)
        cfg = self.config
        robust = cfg.robust if cfg.robust is not None else self.style == "lucent" and size >= ROBUST_FROM
        pad, jit1, jit2 = cfg.shifts(size)
        seen_px = size + 2 * pad - sum(d for d in (jit1, jit2) if d > 1)  # pre-scale
        if robust and seen_px < 8:
            raise OptimizeError(
                f"size {size} leaves a {seen_px}-px view after pad {pad} and jitter"
                f" {jit1}+{jit2}; give a larger size or smaller jitter"
            )
        t0 = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        image = self._image(size, generator).to(self._device())
        params = list(image.parameters())
        opt = torch.optim.Adam(params, lr=cfg.step_size(self.style))
        dtype, trace = self._dtype(), []
        seen, silent = _SeeZ(), 0
        polish_from = steps - min(cfg.polish, steps)  # steps from here on see the image itself
        best: tuple[float, Tensor] | None = None  # the best untransformed image of the polish steps
        with self._session(seen):
            with torch.no_grad():
                try:
                    start, _, what = self._objective(self.normalise(image()).to(dtype))
                except AttributionError as err:
                    raise OptimizeError(str(err)) from None
                except RuntimeError as err:  # torch's own (a shape mismatch): said in one line
                    if type(err) is not RuntimeError:
                        raise  # the model's own exceptions pass as they are
                    text = str(err).strip()
                    first = text.splitlines()[0] if text else "RuntimeError"
                    raise OptimizeError(
                        f"the model's forward failed on a {size}×{size} image: {first}"
                    ) from err
            for step in range(steps):
                view = image()  # (1, C, size, size)
                plain = step >= polish_from
                if robust and not plain:
                    view = robust_view(view, generator=generator, pad=pad, jitter1=jit1,
                                       scales=cfg.scales, angles=cfg.angles, jitter2=jit2, pad_mode=cfg.pad_mode)  # fmt: skip
                objective, push, _ = self._objective(self.normalise(view).to(dtype), seen)
                if plain and (best is None or float(objective.detach()) > best[0]):  # view is the image here
                    best = (float(objective.detach()), view.detach().clone())
                silent += push is not objective
                grads = torch.autograd.grad(-push, params)  # the image only: no .grad on the model
                for p, g in zip(params, grads, strict=True):
                    p.grad = g
                opt.step()
                if isinstance(image, PixelImage):
                    image.decay_(cfg.decay)
                    if cfg.blur_every and (step + 1) % cfg.blur_every == 0:
                        image.blur_(cfg.blur_sigma)
                    image.clamp_()
                trace.append(float(objective.detach()))
            with torch.no_grad():
                final = image().detach().clone()  # (1, C, size, size)
                x = self.normalise(final).to(dtype)
                value, _, _ = self._objective(x)
                if best is not None and best[0] > float(value):  # an earlier polish step was better
                    final = best[1]
                    x = self.normalise(final).to(dtype)
                    value, _, _ = self._objective(x)
        meta = {
            "method": self.method, "layer": self.layer, "channel": self.channel, "style": self.style,
            "steps": steps, "size": size, "seed": seed, "tensor": what, "silent_steps": silent,
            "robust": robust, "pad": pad if robust else 0, "polish": steps - polish_from,
            "colors": cfg.colors if self.style == "lucent" and self.channels == 3 else "none",
        }  # fmt: skip
        return Stimulus(image=final, input=x.detach(), trace=trace, activation=float(value), start=float(start),
                        seconds=time.perf_counter() - t0, meta=meta)  # fmt: skip


class _SeeZ:
    """A rule for the base's rule mode that changes nothing and keeps (a copy of, in case the
    activation works in place) the input z of the latest activation call: at a block's `a` the
    forward stops, so that is the block's own z."""

    def __init__(self) -> None:
        self.z: Tensor | None = None

    def __call__(self, z: Tensor, y: Tensor, shown: str) -> Tensor:
        self.z = z.clone()  # in the graph: the gradient flows through it to the layer's z
        return y


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise OptimizeError(f"{name} must be an int in {lo}..{hi}, got {value!r}")


def _per_channel(name: str, values: Sequence[float] | None, channels: int, fill: float) -> Tensor:
    if values is None:
        return torch.full((1, channels, 1, 1), fill)
    try:
        t = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError):
        raise OptimizeError(f"{name} must be {channels} numbers, got {values!r}") from None
    if t.numel() != channels or not bool(torch.isfinite(t).all()):
        raise OptimizeError(f"{name} must be {channels} finite numbers, got {list(values)}")
    return t.view(1, channels, 1, 1)
