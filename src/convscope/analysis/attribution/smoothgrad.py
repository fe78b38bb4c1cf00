"""SmoothGrad (Smilkov et al. 2017): https://arxiv.org/abs/1706.03825

    g = torch.Generator().manual_seed(0)
    SmoothGrad(model, base="saliency", samples=50, sigma=0.15, generator=g).attribute(x, target=3)

The mean of a base method's map over `samples` noisy copies of x: x + ε, ε ~ N(0, σ²) with
σ = sigma × (max − min of that example), as in the paper. The noise is drawn as one
`torch.randn((samples, *x.shape), generator=generator)` tensor, so a given generator state
gives the same maps; copies run in chunks of `batch` inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from convscope.analysis.attribution.base import (
    Attribution,
    AttributionError,
    AttributionMap,
    Target,
)
from convscope.analysis.attribution.deconvnet import Deconvnet
from convscope.analysis.attribution.guided_backprop import GuidedBackprop
from convscope.analysis.attribution.saliency import Saliency

BASES: dict[str, type[Saliency] | type[GuidedBackprop] | type[Deconvnet]] = {
    "saliency": Saliency,
    "guided": GuidedBackprop,
    "deconvnet": Deconvnet,
}


class SmoothGrad(Attribution):
    """Noise-averaged saliency, guided backprop or deconvnet."""

    method = "smoothgrad"

    def __init__(
        self,
        model: nn.Module,
        *,
        base: str = "saliency",
        samples: int = 50,
        sigma: float = 0.15,
        generator: torch.Generator | None = None,
        batch: int = 64,
    ) -> None:
        super().__init__(model)
        if base not in BASES:
            raise AttributionError(f"base must be one of {', '.join(BASES)}; got {base!r}")
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= 10_000:
            raise AttributionError(f"samples must be an integer in 1..10000; got {samples!r}")
        if not (isinstance(sigma, int | float) and 0 <= sigma <= 10):
            raise AttributionError(f"sigma must be a number in 0..10 (a fraction of the input's range); got {sigma!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise AttributionError(f"batch must be a positive integer; got {batch!r}")
        self.base = BASES[base](model)
        self.base_name, self.samples, self.sigma = base, samples, float(sigma)
        self.generator, self.batch = generator, batch

    def noise(self, x: Tensor) -> Tensor:
        """(samples, B, C, H, W): the noise this call adds (drawn from the generator)."""
        eps = torch.randn((self.samples, *x.shape), generator=self.generator, dtype=x.dtype)
        span = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).reshape(1, -1, 1, 1, 1)  # (1, B, 1, 1, 1)
        return eps.to(x.device) * (self.sigma * span)

    def attribute(self, x: Tensor, target: Target = None) -> AttributionMap:
        xd = self._input(x).detach()
        b = xd.shape[0]
        t = self.base._targets(_scores(self.base, xd), target)  # fix the class once, on clean x
        noisy = (xd.unsqueeze(0) + self.noise(xd)).reshape(-1, *xd.shape[1:])  # (S·B, C, H, W)
        targets = t.repeat(self.samples)  # (S·B,)
        step = max(1, self.batch // b) * b
        total = torch.zeros_like(xd)
        meta: dict[str, object] = {}
        for i in range(0, noisy.shape[0], step):
            part = self.base.attribute(noisy[i : i + step], targets[i : i + step])
            total += part.as_subclass(Tensor).reshape(-1, *xd.shape).sum(dim=0)
            meta = part.meta
        meta.update(method=self.method, base=self.base_name, samples=self.samples, sigma=self.sigma, target=t.tolist())
        return AttributionMap.wrap(total / self.samples, meta, x)


def _scores(method: Attribution, x: Tensor) -> Tensor:
    with method._session(None), torch.no_grad():
        out: Tensor = method.model(x)
    return out
