"""The shared base of the attribution methods: `Method(model).attribute(x, ...)` → a map shaped like x.

Every method in this package (saliency, smoothgrad, guided_backprop, deconvnet, gradcam,
guided_gradcam) is a small subclass. What they share lives here:

- **the start of the backward**: a class score (`target`: an index, one per example, or the
  top class when omitted), or one feature map of one layer (`layer`, `channel`, `position`:
  Zeiler & Fergus's "set all other activations in the layer to zero");
- **backward rules**: a `TorchFunctionMode` active only during the attribution's forward
  replaces every activation call — `nn.ReLU` modules, `F.relu`, `torch.relu`, `x.relu_()`,
  a shared ReLU called twice — by the same values with the method's gradient rule. The
  user's modules are never swapped or mutated; max-pool switches, BatchNorm (eval mode:
  the affine map it is), residual adds and concatenation are plain autograd;
- **housekeeping**: eval mode during the call and each module's mode restored after it,
  every hook removed in `finally` (also when the forward raises), no `.grad` written to the
  parameters, `requires_grad` untouched.

`layer=` names a block of `convscope.Probe`'s trace (a conv/linear, its norm or its
activation: all mean the block's activation map `a`, the feature map — DESIGN.md §1) or,
failing that, any module (its output: `layer4` of a ResNet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from convscope.analysis.attribution.rules import PLAIN, RULES, Rule, RuleMode, rule_text
from convscope.capture.naming import role, selectable_names
from convscope.capture.probe import Block, Probe, UnknownLayerError
from convscope.capture.run import batch_problem

Target = int | Tensor | list[int] | None
Position = str | tuple[int, int] | None


class AttributionError(ValueError):
    """Bad input to an attribution method; the message names the problem in one line."""


class AttributionMap(Tensor):
    """A plain tensor of attributions (shaped like x, or like the layer for Grad-CAM), plus
    `.meta` (method, target, layer, the rule applied at each activation) and `.input` (the x
    it explains). Arithmetic on it gives plain tensors. In Jupyter it draws itself."""

    #: set by convscope.render (the layer below may not import it): AttributionMap → PNG bytes
    display: ClassVar[Callable[[AttributionMap], bytes] | None] = None
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    meta: dict[str, Any]
    input: Tensor | None

    @staticmethod
    def wrap(values: Tensor, meta: dict[str, Any], x: Tensor | None) -> AttributionMap:
        out = Tensor._make_subclass(AttributionMap, values.detach(), False)
        out.meta, out.input = meta, None if x is None else x.detach()
        return out

    def _repr_png_(self) -> bytes | None:
        draw = AttributionMap.display
        return None if draw is None else draw(self)

    def _repr_html_(self) -> str | None:
        import base64

        png = self._repr_png_()
        if png is None:
            return None
        meta = getattr(self, "meta", {})
        caption = " · ".join(f"{k}={v}" for k, v in meta.items() if k in ("method", "target", "layer", "channel"))
        uri = base64.b64encode(png).decode()
        return f'<figure><img src="data:image/png;base64,{uri}"><figcaption>{caption}</figcaption></figure>'


@dataclass
class _Tap:
    """What the forward found at the requested layer."""

    name: str
    catch: bool = False  # also keep the value and catch dL/d(tensor) as it is at the layer
    tensor: Tensor | None = None  # live, in the graph
    version: int = -1
    what: str = ""  # "a of block conv2 (after relu2)", "output of module layer4"
    value: Tensor | None = None  # with catch: a copy, safe from later in-place ops
    grad: Tensor | None = None  # with catch: dL/d(tensor) of the version seen at the layer
    handle: Any = None

    def take(self, t: Tensor, what: str) -> None:
        """Hold t (a later in-place op changes its version: the hook still sees this one)."""
        self.release()
        self.tensor, self.version, self.what = t, t._version, what
        if self.catch and t.requires_grad:
            self.value = t.detach().clone()
            self.handle = t.register_hook(self._store)

    def _store(self, g: Tensor) -> None:
        self.grad = g

    def release(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class _Stop(Exception):
    """Raised inside the forward once the tapped layer has its tensor (nothing after it runs)."""


class Attribution:
    """Base of every method: model housekeeping, targets, layer taps, the rule mode."""

    method: ClassVar[str] = "gradient"  # "saliency", "guided", "deconvnet", ... (RULES keys pick a rule)

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__} needs an nn.Module, got {type(model).__name__}")
        self.model = model

    # ---- the forward ---------------------------------------------------------------------
    @contextmanager
    def _session(self, rule: Rule | None) -> Iterator[RuleMode | None]:
        """Eval mode and the rule mode for the duration; each module's mode restored after."""
        training = [m for m in self.model.modules() if m.training]
        for m in training:
            m.training = False
        mode = RuleMode(rule, self.method) if rule is not None else None
        try:
            if mode is None:
                yield None
            else:
                with mode:
                    yield mode
        finally:
            for m in training:
                m.training = True

    def _input(self, x: Tensor) -> Tensor:
        problem = batch_problem(x)  # (B, C, H, W), float, finite: as capture() checks it
        if problem is not None:
            raise AttributionError(problem[1])
        return x.detach().clone().requires_grad_(True)

    def _forward(
        self, x: Tensor, layer: str | None, *, stop: bool, catch: bool = False
    ) -> tuple[Tensor | None, _Tap | None]:
        """Run the model on x (the rule mode must be active); tap `layer` if given.

        With `stop`, the forward ends at the layer (nothing after it runs) and the output is None.
        With `catch`, the tap keeps the layer's value and catches its gradient in the backward
        (the caller must `tap.release()` after it).
        """
        if layer is None:
            return self.model(x), None
        tap = _Tap(layer, catch=catch)
        module = dict(self.model.named_modules()).get(layer)
        try:
            if module is not None and _is_container(module):
                out = self._forward_module_tap(x, module, tap, stop=stop)
            else:
                out = self._forward_block_tap(x, tap, stop=stop)
        except _Stop:
            out = None
        except BaseException:
            tap.release()
            raise
        if tap.tensor is None:
            raise AttributionError(f"layer {layer!r} was not called in the model's forward")
        return out, tap

    def _forward_module_tap(self, x: Tensor, module: nn.Module, tap: _Tap, *, stop: bool) -> Tensor:
        def hook(m: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                raise AttributionError(f"layer {tap.name!r} does not output one tensor ({type(output).__name__})")
            if tap.tensor is None:
                tap.take(output, f"output of module {tap.name} ({type(m).__name__})")
                if stop:
                    raise _Stop

        handle = module.register_forward_hook(hook)
        try:
            out: Tensor = self.model(x)
        finally:
            handle.remove()
        return out

    def _forward_block_tap(self, x: Tensor, tap: _Tap, *, stop: bool) -> Tensor:
        def seen(block: Block, field: str, t: Tensor) -> None:
            if tap.name not in (block.name, block.norm_name, block.act_name):
                return
            if field in ("z", "a"):  # z until the activation comes; a ends the search
                tap.take(
                    t,
                    f"a of block {block.name} (after {block.act_name})"
                    if field == "a"
                    else f"z of block {block.name} (no activation follows)",
                )
                if field == "a" and stop:
                    raise _Stop

        try:
            probe = Probe(self.model, layers=[tap.name], keep=(), tap=seen)
        except UnknownLayerError:
            valid = ", ".join(selectable_names(self.model))
            raise AttributionError(
                f"unknown layer {tap.name!r}; valid: {valid}; or any module name (its output),"
                " or '<module>.<activation function>' for a functional activation"
            ) from None
        with probe:
            out: Tensor = self.model(x)
        return out

    def layer_output(self, x: Tensor, layer: str) -> tuple[Tensor, str]:
        """The tensor the methods start from at `layer` (detached), and which tensor it is."""
        with self._session(None):
            _, tap = self._forward(self._input(x), layer, stop=True)
        assert tap is not None and tap.tensor is not None
        return tap.tensor.detach(), tap.what

    # ---- targets -------------------------------------------------------------------------
    @staticmethod
    def _targets(out: Tensor, target: Target) -> Tensor:
        """(B,) class indices into the model's (B, K) class scores."""
        if not isinstance(out, Tensor) or out.dim() != 2:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise AttributionError(
                f"target needs a model that returns class scores shaped (B, classes); this one returns {shape}"
            )
        b, k = out.shape
        if target is None:
            return out.detach().argmax(dim=1)
        t = torch.as_tensor(target)
        if t.dtype in (torch.float16, torch.float32, torch.float64, torch.bool) or t.dim() > 1:
            raise AttributionError(f"target must be a class index or one index per example; got {target!r}")
        t = t.to(torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        if t.numel() != b:
            raise AttributionError(f"target has {t.numel()} indices for a batch of {b}")
        if bool((t < 0).any()) or bool((t >= k).any()):
            raise AttributionError(f"target {t.tolist()} is out of range: the model has classes 0..{k - 1}")
        return t.to(out.device)

    @staticmethod
    def _seed(a: Tensor, tap: _Tap, channel: int | None, position: Position) -> Tensor:
        """ZF: a copy of the layer's maps with all other activations set to zero."""
        if channel is None:
            return a.detach().clone()
        c = a.shape[1]
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < c:
            raise AttributionError(f"channel {channel!r} is out of range for layer {tap.name!r}: 0..{c - 1}")
        seed = torch.zeros_like(a)
        if position is None:
            seed[:, channel] = a.detach()[:, channel]
            return seed
        if a.dim() != 4:
            raise AttributionError(
                f"layer {tap.name!r} has no spatial maps (shape {tuple(a.shape)}): position needs (B, C, H, W)"
            )
        maps = a.detach()[:, channel]  # (B, H, W)
        b, h, w = maps.shape
        if position == "max":
            flat = maps.reshape(b, -1).argmax(dim=1)  # first maximum in row-major order
            ii, jj = flat // w, flat % w
        elif isinstance(position, tuple) and len(position) == 2 and all(isinstance(p, int) for p in position):
            i, j = position
            if not (0 <= i < h and 0 <= j < w):
                raise AttributionError(f"position {position} is outside layer {tap.name!r}'s {h}×{w} maps")
            ii = torch.full((b,), i, dtype=torch.long, device=a.device)
            jj = torch.full((b,), j, dtype=torch.long, device=a.device)
        else:
            raise AttributionError(f"position must be 'max', an (i, j) pair or None; got {position!r}")
        rows = torch.arange(b, device=a.device)
        seed[rows, channel, ii, jj] = maps[rows, ii, jj]
        return seed

    # ---- one backward --------------------------------------------------------------------
    def _gradient(
        self,
        x: Tensor,
        target: Target = None,
        *,
        layer: str | None = None,
        channel: int | None = None,
        position: Position = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """d(start)/dx under this method's rule, and the metadata of the call."""
        if layer is None and (channel is not None or position is not None):
            raise AttributionError("channel and position need a layer")
        if layer is not None and target is not None:
            raise AttributionError("give either target (a class score) or layer (a feature map), not both")
        xg = self._input(x)
        meta: dict[str, Any] = {"method": self.method}
        with self._session(RULES.get(self.method)) as mode:
            if layer is None:
                out, _ = self._forward(xg, None, stop=False)
                assert out is not None
                t = self._targets(out, target)
                score = out.gather(1, t[:, None]).sum()
                (grad,) = torch.autograd.grad(score, xg)
                meta["target"] = t.tolist()
            else:
                _, tap = self._forward(xg, layer, stop=True)
                assert tap is not None and tap.tensor is not None
                check_version(tap)
                seed = self._seed(tap.tensor, tap, channel, position)
                if not bool(seed.any()):  # nothing to project: the answer is exactly zero
                    grad = torch.zeros_like(xg)
                else:
                    (grad,) = torch.autograd.grad(tap.tensor, xg, grad_outputs=seed)
                meta.update(layer=layer, channel=channel, position=position, tensor=tap.what)
            meta["rules"] = rule_text(self.method, mode.seen) if mode else dict(PLAIN)
        return grad, meta


class GradientMethod(Attribution):
    """A method whose answer is the rule's input gradient itself (guided backprop, deconvnet)."""

    def attribute(
        self,
        x: Tensor,
        target: Target = None,
        *,
        layer: str | None = None,
        channel: int | None = None,
        position: Position = None,
    ) -> AttributionMap:
        """From the class score `target`, or from one feature map (`layer`, `channel`, `position`)."""
        grad, meta = self._gradient(x, target, layer=layer, channel=channel, position=position)
        return AttributionMap.wrap(grad, meta, x)  # (B, C, H, W)


def _is_container(module: nn.Module) -> bool:
    """A module that is not a conv/linear/norm/activation the probe pairs into blocks."""
    return role(module) is None


def check_version(tap: _Tap) -> None:
    assert tap.tensor is not None
    if tap.tensor._version != tap.version:
        raise AttributionError(
            f"layer {tap.name!r}'s output was changed in place later in the forward"
            " (e.g. `out += identity`); pick the layer after that operation"
        )
