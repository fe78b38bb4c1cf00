"""The image side of feature visualisation (Olah et al. 2017): https://distill.pub/2017/feature-visualization/

    image = FourierImage(64, generator=g, colors=color_matrix("imagenet"))   # nn.Module
    img = image()                                   # (1, 3, 64, 64) in [0, 1], differentiable
    seen = robust_view(img, generator=g, config)    # padded, jittered, scaled, rotated copy

What `Optimize` (optimize.py) changes and what the model sees:

- `FourierImage`: Lucent's `fft_image` + `to_valid_rgb` — the parameters are the image's 2-D
  real spectrum, each frequency f's coefficient scaled by 1/max(f, 1/size)**decay_power (so
  an equal step moves low frequencies more: Adam's steps no longer favour pixel noise), the
  inverse FFT divided by Lucid's "magic" 4, then colour decorrelation, then a sigmoid.
- `PixelImage`: Yosinski et al. 2015's plain pixels, kept in [0, 1] by clamping after each
  step (projected gradient ascent), with `decay_` (their L2 decay toward the mean colour) and
  `blur_` (their periodic Gaussian blur): https://arxiv.org/abs/1506.06579
- `color_matrix`: the 3×3 M with M·Mᵀ = the RGB covariance of natural photos (a "square
  root" by SVD: U·√S), divided by its largest column norm as Lucid does. The decorrelated
  parameters v give pixels M·v, so independent steps on v are steps along the photos'
  principal colour axes (luminance first). "imagenet" is Lucid's ImageNet matrix (from
  lucid/optvis/param/color.py, Apache-2.0, as Lucent copies it); "builtin" is computed here
  from convscope.data's photo crops (deterministic, no download).
- `robust_view`: Lucent's `standard_transforms` — pad 12 px of grey, jitter 8 (here Lucid's
  random crop), scale by 0.9..1.1, rotate by −10..10°, jitter 4 — drawn from a seeded
  `torch.Generator`. Scale and rotation are one bilinear `grid_sample` whose outside takes
  the border's value (the padding); "circular" padding, the Fourier image's own periodic
  continuation, is an option.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Lucid's ImageNet colour correlation, square-rooted by SVD (columns: U·√S, luminance first)
IMAGENET_COLOR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
#: Lucid's constant dividing the inverse FFT ("increasing this seems to reduce saturation")
MAGIC = 4.0


def color_sqrt(pixels: Tensor) -> Tensor:
    """M (3, 3) with M·Mᵀ = the covariance of `pixels` (N, 3): U·√S of its SVD, sign-fixed so
    each column's largest entry is positive (a deterministic choice)."""
    centred = pixels.to(torch.float64) - pixels.to(torch.float64).mean(dim=0)  # (N, 3)
    cov = centred.T @ centred / (pixels.shape[0] - 1)  # (3, 3)
    u, s, _ = torch.linalg.svd(cov)
    signs = torch.sign(u.gather(0, u.abs().argmax(dim=0, keepdim=True)))  # (1, 3)
    m: Tensor = (u * signs * s.sqrt()).to(torch.float32)
    return m


@functools.lru_cache(maxsize=4)
def _builtin_sqrt() -> Tensor:
    from convscope.data.builtin import photo_crops

    x, _ = photo_crops("train", 1000, size=32, seed=0)  # (1000, 3, 32, 32)
    return color_sqrt(x.permute(0, 2, 3, 1).reshape(-1, 3))


def color_matrix(colors: str) -> Tensor | None:
    """The decorrelation matrix (3, 3), divided by its largest column norm; None for "none"."""
    if colors == "none":
        return None
    if colors == "imagenet":
        m = torch.tensor(IMAGENET_COLOR_SQRT)
    elif colors == "builtin":
        m = _builtin_sqrt().clone()
    else:
        raise ValueError(f"colors must be 'imagenet', 'builtin' or 'none'; got {colors!r}")
    normed: Tensor = m / m.norm(dim=0).max()
    return normed


def rfft2d_freqs(h: int, w: int) -> Tensor:
    """|f| (cycles per pixel) of each coefficient of `torch.fft.rfft2` on an h×w image: (h, w//2+1)."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]  # (h, 1)
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]  # (1, w//2+1)
    f: Tensor = (fx * fx + fy * fy).sqrt()
    return f


class FourierImage(nn.Module):
    """Lucent's decorrelated Fourier image: sigmoid(M · irfft2(scale · spectrum) / 4)."""

    scale: Tensor  # (1, 1, H, W//2+1, 1): 1/max(|f|, 1/size)**decay_power
    colors: Tensor | None  # (3, 3) decorrelation matrix, or None

    def __init__(
        self,
        size: int,
        *,
        generator: torch.Generator,
        channels: int = 3,
        sd: float = 0.01,
        decay_power: float = 1.0,
        colors: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.size = size
        freqs = rfft2d_freqs(size, size)  # (H, W//2+1)
        scale = 1.0 / freqs.clamp(min=1.0 / size) ** decay_power
        self.register_buffer("scale", scale.to(torch.float32)[None, None, :, :, None])
        # (1, C, H, W//2+1, 2): real and imaginary parts of each coefficient
        init = torch.randn((1, channels, *freqs.shape, 2), generator=generator) * sd
        self.spectrum = nn.Parameter(init)
        self.register_buffer("colors", colors)

    def forward(self) -> Tensor:
        spectrum = torch.view_as_complex(self.scale * self.spectrum)  # (1, C, H, W//2+1) complex
        t = torch.fft.irfftn(spectrum, s=(self.size, self.size), norm="ortho")  # (1, C, H, W)
        t = t / MAGIC
        if self.colors is not None:
            t = torch.einsum("dc,bchw->bdhw", self.colors, t)  # pixel = M · v
        return torch.sigmoid(t)  # (1, C, H, W) in (0, 1)


class PixelImage(nn.Module):
    """Yosinski's pixels: the image itself, kept in [0, 1] by `clamp_` after each step."""

    centre: Tensor  # (1, C, 1, 1): what decay pulls toward (the mean colour)

    def __init__(
        self,
        size: int,
        *,
        generator: torch.Generator,
        channels: int = 3,
        sd: float = 0.01,
        centre: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        c = list(centre) if centre is not None else [0.5] * channels
        self.register_buffer("centre", torch.tensor(c).view(1, channels, 1, 1))
        noise = torch.randn((1, channels, size, size), generator=generator)  # (1, C, H, W)
        init = self.centre + noise * sd
        self.pixels = nn.Parameter(init.clamp(0, 1))

    def forward(self) -> Tensor:
        return self.pixels  # (1, C, H, W) in [0, 1]

    @torch.no_grad()
    def decay_(self, decay: float) -> None:
        """Yosinski's r(x) = (1 − θ_decay)·x on the mean-subtracted image."""
        self.pixels.sub_(self.centre).mul_(1.0 - decay).add_(self.centre)

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        self.pixels.copy_(gaussian_blur(self.pixels, sigma))

    @torch.no_grad()
    def clamp_(self) -> None:
        self.pixels.clamp_(0.0, 1.0)


def gaussian_kernel(sigma: float) -> Tensor:
    """The normalised 1-D Gaussian on −⌈3σ⌉..⌈3σ⌉ (sums to 1)."""
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float64) ** 2) / (2 * sigma * sigma))
    return (k / k.sum()).to(torch.float32)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of each channel of x (B, C, H, W), reflected at the borders."""
    k = gaussian_kernel(sigma).to(x)  # (2r+1,)
    r, c = k.numel() // 2, x.shape[1]
    row, col = k.view(1, 1, 1, -1).expand(c, 1, 1, -1), k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), row, groups=c)  # along W
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), col, groups=c)  # along H


def _randint(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator).item())


def jitter(x: Tensor, d: int, generator: torch.Generator) -> Tensor:
    """Lucid's jitter(d), a random crop: a random (H−d)×(W−d) window of x (B, C, H, W); d ≤ 1: x."""
    if d <= 1:
        return x
    h, w = x.shape[-2:]
    dy, dx = _randint(d, generator), _randint(d, generator)
    return x[..., dy : dy + h - d, dx : dx + w - d]


def scale_rotate(x: Tensor, scale: float, degrees: float) -> Tensor:
    """x (B, C, H, W) resampled to round(scale·H)×round(scale·W) and rotated by `degrees` about
    its centre (bilinear; corners outside take the border's value — the grey padding)."""
    b, c, h, w = x.shape
    oh, ow = max(1, round(h * scale)), max(1, round(w * scale))
    t = math.radians(degrees)
    cos, sin = math.cos(t), math.sin(t)
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype)  # (2, 3)
    grid = F.affine_grid(theta.expand(b, 2, 3).to(x.device), [b, c, oh, ow], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def robust_view(
    x: Tensor,
    *,
    generator: torch.Generator,
    pad: int,
    jitter1: int,
    scales: Sequence[float],
    angles: Sequence[float],
    jitter2: int,
    pad_mode: str = "constant",
) -> Tensor:
    """Lucent's standard_transforms on x (B, C, H, W) in [0, 1]: pad with grey 0.5, jitter,
    random scale, random rotation, jitter again; every draw from `generator`."""
    if pad > 0:
        if pad_mode == "constant":
            x = F.pad(x, (pad, pad, pad, pad), mode="constant", value=0.5)
        else:  # "circular": the Fourier image's own periodic continuation; "reflect"
            x = F.pad(x, (pad, pad, pad, pad), mode=pad_mode)
    x = jitter(x, jitter1, generator)
    s = scales[_randint(len(scales), generator)] if scales else 1.0
    a = angles[_randint(len(angles), generator)] if angles else 0.0
    if s != 1.0 or a != 0.0:
        x = scale_rotate(x, s, a)
    return jitter(x, jitter2, generator)
