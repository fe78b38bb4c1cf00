"""Do the weights look untrained (still PyTorch's default random initialisation)? — https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html

At a random initialisation a diagnosis floods with findings that describe the initialisation,
not training: noisy first-layer filters, gradients "exploding" or "vanishing" between layers.
`nn.Conv2d` and `nn.Linear` start with weights drawn uniformly from ±1/√fan_in (kaiming_uniform
with a=√5; fan_in = C_in/groups·k·k, or in_features): std = 1/√(3·fan_in), none beyond the bound.
Training moves some weights past the bound within a few steps, so a layer whose weights all lie
within it with that std (±15%, on ≥ MIN_WEIGHTS weights) looks freshly initialised.

    default_init(diag.layers)   # "all 12 conv/linear layers ... look like PyTorch's default ..." or None
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .result import LayerSummary

MIN_WEIGHTS = 100  # fewer weights say too little about their distribution (a hand-set layer is small)
STD_TOLERANCE = 0.15  # the weights' std within ±15% of 1/√(3·fan_in)


def default_init(layers: Sequence[LayerSummary]) -> str | None:
    """Why the weights look untrained, or None: every conv/linear layer with at least MIN_WEIGHTS
    weights (and at least one) looks drawn from PyTorch's default initialisation."""
    judged = [s for s in layers if s.weight is not None and s.weight.numel() >= MIN_WEIGHTS]
    if not judged or not all(_looks_default(s) for s in judged):
        return None
    n = len(judged)
    return (
        f"{'the' if n == 1 else f'all {n}'} conv/linear layer{'s' if n > 1 else ''} with ≥ {MIN_WEIGHTS} "
        f"weights look like PyTorch's default random initialisation (uniform in ±1/√fan_in, std within "
        f"{STD_TOLERANCE:.0%} of 1/√(3·fan_in)): the model looks untrained"
    )


def _looks_default(s: LayerSummary) -> bool:
    w = s.weight
    assert w is not None
    # the stored weight is (C_out, C_in/groups, k..); a transposed conv's fan_in is its C_out/groups
    fan_in = w[0].numel() if "Transpose" not in (s.layer_type or "") else w.numel() // w.shape[1]
    bound = 1 / math.sqrt(fan_in)
    w64 = w.detach().to(torch.float64)
    if not bool(torch.isfinite(w64).all()) or float(w64.abs().max()) > bound * (1 + 1e-6):
        return False
    std = float(w64.std())
    return abs(std / (bound / math.sqrt(3)) - 1) <= STD_TOLERANCE
