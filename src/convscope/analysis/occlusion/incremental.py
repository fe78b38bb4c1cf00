"""Exact incremental inference for occlusion (Krypton, Nakandala et al., SIGMOD 2019): https://arxiv.org/abs/1807.05675

    engine = Incremental(model, x)                  # x: (1, C, H, W); traces the model, keeps every layer's output
    out, taps = engine.run(patch, rows, cols)       # patch: (N, C, h, w) placed at (rows[n], cols[n])
    engine.fallback                                 # None, or why some layers ran on full tensors

An occluder changes only a small square of the input. Krypton's observation: layer by layer,
only the outputs whose window reads a changed input can change — the patch's projective
field. For a conv/pool with kernel k, stride s, padding p, dilation d the changed input rows
[a, a + h) change the output rows ceil((a + p − d(k − 1)) / s) .. floor((a + h − 1 + p) / s);
an elementwise op (ReLU, eval-mode BatchNorm, residual add) changes the union of its inputs'
regions. Each layer recomputes only that region (for a batch of N occluder positions at
once, one fixed region size per layer), reading the rest of its input window from the
clean image's pass. The answer is the full forward's, up to float rounding.

What it cannot restrict — global/adaptive pooling, flatten → linear, attention, ceil-mode or
non-zero-padded convs, anything it does not know — it runs on full tensors from that node on
(the clean map with the patch written in, batched): still exact, only slower, and the node is
named in `fallback_nodes`. A model torch.fx cannot trace raises `IncrementalUnsupported`; the
caller then runs plain batched full forwards.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from convscope.analysis.occlusion.region import Value, affected, gather, paste, truncate, union


class IncrementalUnsupported(RuntimeError):
    """The model cannot be run layer by layer here (the message says why)."""


_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.Hardtanh, nn.Identity,
)  # fmt: skip
_ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.mul, operator.sub, operator.iadd, torch.add, torch.mul, torch.relu,
    F.relu, torch.sigmoid, torch.tanh, F.gelu, F.silu, F.leaky_relu,
}  # fmt: skip
_ELEMENTWISE_METHODS = {"relu", "relu_", "add", "add_", "mul", "sigmoid", "tanh"}


class Incremental:
    """A model traced by torch.fx, its clean pass kept, run incrementally for occluded batches."""

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        *,
        leaves: frozenset[str] = frozenset(),
        dense: float = 0.5,
        traced: fx.GraphModule | None = None,
        tau: float | None = None,
    ) -> None:
        if x.dim() != 4 or x.shape[0] != 1:
            raise IncrementalUnsupported(f"x must be one image (1, C, H, W); got {tuple(x.shape)}")
        self.model = model

        class _Tracer(fx.Tracer):
            def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
                return qualname in leaves or super().is_leaf_module(m, qualname)

        if traced is None:  # `traced`: an earlier Incremental's .gm (the clean pass below checks it still fits)
            try:
                graph = _Tracer().trace(model)
            except Exception as e:  # torch.fx raises many kinds (TraceError, TypeError, ...) on dynamic code
                raise IncrementalUnsupported(f"torch.fx cannot trace the model ({type(e).__name__}: {e})") from None
            traced = fx.GraphModule(model, graph)
        self.gm = traced
        self.modules = dict(self.gm.named_modules())
        self.nodes = list(self.gm.graph.nodes)
        if sum(n.op == "placeholder" for n in self.nodes) != 1:
            raise IncrementalUnsupported("the model's forward must take exactly one input")
        self.clean: dict[fx.Node, Any] = {}
        self.const: set[fx.Node] = set()  # nodes that do not depend on the input
        with torch.no_grad():
            interp = _Recorder(self.gm, self.clean)
            out = interp.run(x)
            ref = model(x)
        if not isinstance(out, Tensor) or not isinstance(ref, Tensor) or not torch.equal(out, ref):
            raise IncrementalUnsupported("the traced graph does not reproduce the model's output")
        seen_input: set[fx.Node] = set()
        for n in self.nodes:
            if n.op == "placeholder" or any(a in seen_input for a in _args(n)):
                seen_input.add(n)
            else:
                self.const.add(n)
        self.fallback_nodes: list[str] = []
        #: past this fraction of a map's area, a region is computed as the whole map (gathering
        #: windows costs more than the few outputs it saves; measured on resnet18-shaped at 224²)
        self.dense = dense
        #: None: exact. A fraction τ: APPROXIMATE — each conv/pool recomputes at most τ of its
        #: output side (Krypton's projective-field threshold), the rest is read from the clean pass
        self.tau = tau
        self._padded: dict[tuple[fx.Node, int, int, float], Tensor] = {}
        self.macs = 0  # multiply-accumulates of the conv and linear layers computed so far (the FLOP count)

    def node_for(self, module_name: str, call: int = 0) -> fx.Node | None:
        """The `call`-th call_module node of `module_name` (a shared ReLU is called twice)."""
        calls = [n for n in self.nodes if n.op == "call_module" and n.target == module_name]
        return calls[call] if call < len(calls) else None

    # ---- one batch ---------------------------------------------------------------------------
    def run(
        self, patch: Tensor, rows: Tensor, cols: Tensor, *, keep: tuple[fx.Node, ...] = ()
    ) -> tuple[Tensor, dict[fx.Node, Value]]:
        """The model's output (N, ...) for N inputs = x with `patch[n]` written at (rows[n], cols[n])."""
        n_pos = patch.shape[0]
        vals: dict[fx.Node, Value] = {}
        fallback: list[str] = []
        out: Tensor | None = None
        with torch.no_grad():
            for node in self.nodes:
                if node.op == "placeholder":
                    vals[node] = Value("patch", patch, rows, cols)
                elif node.op == "output":
                    (res,) = node.args
                    if not isinstance(res, fx.Node):
                        raise IncrementalUnsupported("the model must return one tensor")
                    out = self.full(res, vals[res], n_pos)
                elif node in self.const or all(vals[a].kind == "clean" for a in _args(node)):
                    vals[node] = Value("clean")
                else:
                    vals[node] = self._step(node, vals, n_pos, fallback)
        self.fallback_nodes = fallback
        assert out is not None
        return out, {k: vals[k] for k in keep}

    def _step(self, node: fx.Node, vals: dict[fx.Node, Value], n_pos: int, fallback: list[str]) -> Value:
        mod = self.modules.get(str(node.target)) if node.op == "call_module" else None
        kinds = {vals[a].kind for a in _args(node)}
        window = _window_op(mod) if mod is not None else None
        if window is not None and len(node.args) == 1 and not node.kwargs:
            return self._windowed(node, vals, n_pos, *window)
        if _is_elementwise(node, mod):
            got = self._elementwise(node, vals, n_pos) if "full" not in kinds else self._generic(node, vals, n_pos)
            if got is not None:
                return got
        if kinds != {"full"}:  # an op it cannot restrict (global pooling, flatten, unknown): full tensors from here
            fallback.append(node.name)
        return self._generic(node, vals, n_pos)

    def _generic(self, node: fx.Node, vals: dict[fx.Node, Value], n_pos: int) -> Value:
        """Run the node on full batched tensors (exact for any op)."""

        def arg(a: fx.Node) -> Any:
            return self.clean[a] if a in self.const else self.full(a, vals[a], n_pos)

        if _inplace(node, self.modules.get(str(node.target))):  # never write into a kept value

            def arg(a: fx.Node) -> Any:
                got = self.clean[a] if a in self.const else self.full(a, vals[a], n_pos)
                return got.clone() if isinstance(got, Tensor) else got

        args = fx.node.map_arg(node.args, arg)
        kwargs = fx.node.map_arg(node.kwargs, arg)
        out = _call(self.gm, self.modules, node, args, kwargs)
        self.macs += macs(self.modules.get(str(node.target)) if node.op == "call_module" else None, out)
        return Value("full", out)

    def full(self, node: fx.Node, v: Value, n_pos: int) -> Any:
        """The value as full batched tensors (N, ...)."""
        clean = self.clean[node]
        if v.kind == "full":
            return v.t
        if v.kind == "clean":
            if isinstance(clean, Tensor) and clean.dim() > 0 and clean.shape[0] == 1:
                return clean.expand(n_pos, *clean.shape[1:])
            return clean
        return paste(clean, v)

    # ---- conv / pool: the projective field ----------------------------------------------------
    def _windowed(
        self, node: fx.Node, vals: dict[fx.Node, Value], n_pos: int, k: tuple[int, int], s: tuple[int, int],
        p: tuple[int, int], d: tuple[int, int], pad_value: float,
    ) -> Value:  # fmt: skip
        (src,) = _args(node)
        v, clean_in = vals[src], self.clean[src]
        clean_out = self.clean[node]
        h_in, w_in = clean_in.shape[-2:]
        h_out, w_out = clean_out.shape[-2:]
        if v.kind == "full" or v.t is None or v.r is None or v.c is None:
            return self._generic(node, vals, n_pos)
        h, w = v.t.shape[-2:]
        r0, ho = affected(v.r, h, k[0], s[0], p[0], d[0], h_out)
        c0, wo = affected(v.c, w, k[1], s[1], p[1], d[1], w_out)
        if self.tau is not None:  # APPROXIMATE (Krypton's projective-field threshold): keep the centre
            r0, ho = truncate(r0, ho, self.tau, h_out)
            c0, wo = truncate(c0, wo, self.tau, w_out)
        if ho * wo > self.dense * h_out * w_out:  # (nearly) the whole map changes: a plain batched call
            return self._generic(node, vals, n_pos)
        lr, lc = (ho - 1) * s[0] + d[0] * (k[0] - 1) + 1, (wo - 1) * s[1] + d[1] * (k[1] - 1) + 1
        padded = self._pad(src, clean_in, p, pad_value)  # (1, C, H + 2p, W + 2p)
        win = gather(padded, v, r0 * s[0], c0 * s[1], lr, lc, p)  # (N, C, lr, lc)
        mod = self.modules[str(node.target)]
        out = _apply_unpadded(mod, win)  # (N, C', ho, wo)
        self.macs += macs(mod, out)
        assert out.shape[-2:] == (ho, wo), (out.shape, ho, wo, h_in, w_in)
        return Value("patch", out, r0, c0)

    def _pad(self, node: fx.Node, clean: Tensor, p: tuple[int, int], value: float) -> Tensor:
        key = (node, p[0], p[1], value)
        if key not in self._padded:
            self._padded[key] = F.pad(clean, (p[1], p[1], p[0], p[0]), value=value) if any(p) else clean
        return self._padded[key]

    # ---- elementwise: the union of the inputs' regions ----------------------------------------
    def _elementwise(self, node: fx.Node, vals: dict[fx.Node, Value], n_pos: int) -> Value | None:
        clean_out = self.clean[node]
        if not isinstance(clean_out, Tensor) or clean_out.dim() != 4:
            return None
        shape = clean_out.shape
        patches = [vals[a] for a in _args(node) if vals[a].kind == "patch"]
        for a in _args(node):
            if a not in self.const and self.clean[a].shape != shape:
                return None  # broadcasting between maps: not a plain elementwise op
        h_map, w_map = shape[-2:]
        r0, hu = union([(q.r, q.t.shape[-2]) for q in patches if q.r is not None and q.t is not None], h_map)
        c0, wu = union([(q.c, q.t.shape[-1]) for q in patches if q.c is not None and q.t is not None], w_map)
        if hu * wu > self.dense * h_map * w_map:  # (nearly) the whole map: a plain batched call
            return self._generic(node, vals, n_pos)

        same = all(
            q.t is not None and q.t.shape[-2:] == (hu, wu) and torch.equal(q.r, r0) and torch.equal(q.c, c0)  # type: ignore[arg-type]
            for q in patches
        )
        if same and all(a in self.const or vals[a].kind == "patch" for a in _args(node)):
            copy = _inplace(node, self.modules.get(str(node.target)))  # never write into a kept value
            gathered = {a: _clone(vals[a].t) if copy else vals[a].t for a in _args(node) if a not in self.const}
        else:
            gathered = {a: gather(self.clean[a], vals[a], r0, c0, hu, wu, (0, 0)) for a in _args(node) if a not in self.const}

        def arg(a: fx.Node) -> Any:
            return self.clean[a] if a in self.const else gathered[a]

        args = fx.node.map_arg(node.args, arg)
        kwargs = fx.node.map_arg(node.kwargs, arg)
        out = _call(self.gm, self.modules, node, args, kwargs)  # (N, C, hu, wu)
        return Value("patch", out, r0, c0)


class _Recorder(fx.Interpreter):
    """An fx interpreter that keeps every node's output (the clean pass)."""

    def __init__(self, gm: fx.GraphModule, store: dict[fx.Node, Any]) -> None:
        super().__init__(gm)
        self.store = store

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.store[n] = out.clone() if isinstance(out, Tensor) else out  # safe from later in-place ops
        return out


def _args(node: fx.Node) -> list[fx.Node]:
    return list(node.all_input_nodes)


def _call(gm: fx.GraphModule, modules: dict[str, nn.Module], node: fx.Node, args: Any, kwargs: Any) -> Any:
    if node.op == "call_module":
        return modules[str(node.target)](*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)  # type: ignore[operator]
    if node.op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, str(node.target))(*rest, **kwargs)
    if node.op == "get_attr":
        return getattr(gm, str(node.target))
    raise IncrementalUnsupported(f"node {node.name}: op {node.op} is not supported")


def macs(mod: nn.Module | None, out: Any) -> int:
    """Multiply-accumulates a conv or linear module spent on `out` (0 for anything else)."""
    if not isinstance(out, Tensor):
        return 0
    if isinstance(mod, nn.Conv2d):
        kh, kw = _pair(mod.kernel_size)
        return out.numel() * (mod.in_channels // mod.groups) * kh * kw
    if isinstance(mod, nn.Linear):
        return out.numel() * mod.in_features
    return 0


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window_op(
    mod: nn.Module,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int], float] | None:
    """(kernel, stride, padding, dilation, pad value) of a conv/pool it can restrict, else None."""
    if type(mod) is nn.Conv2d:
        if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            return None
        return _pair(mod.kernel_size), _pair(mod.stride), _pair(mod.padding), _pair(mod.dilation), 0.0
    if type(mod) is nn.MaxPool2d:
        if mod.ceil_mode or mod.return_indices:
            return None
        return _pair(mod.kernel_size), _pair(mod.stride), _pair(mod.padding), _pair(mod.dilation), float("-inf")
    if type(mod) is nn.AvgPool2d:
        if mod.ceil_mode or not mod.count_include_pad or mod.divisor_override is not None:
            return None
        return _pair(mod.kernel_size), _pair(mod.stride), _pair(mod.padding), (1, 1), 0.0
    return None


def _apply_unpadded(mod: nn.Module, win: Tensor) -> Tensor:
    """The conv/pool on an already padded window (padding 0)."""
    if isinstance(mod, nn.Conv2d):
        return F.conv2d(win, mod.weight, mod.bias, mod.stride, 0, mod.dilation, mod.groups)
    if isinstance(mod, nn.MaxPool2d):
        return F.max_pool2d(win, mod.kernel_size, mod.stride, 0, mod.dilation)
    assert isinstance(mod, nn.AvgPool2d)
    return F.avg_pool2d(win, mod.kernel_size, mod.stride, 0)


def _clone(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clone()


def _inplace(node: fx.Node, mod: nn.Module | None) -> bool:
    if mod is not None:
        return bool(getattr(mod, "inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_")
    return node.target in (operator.iadd, operator.imul, operator.isub) or bool(node.kwargs.get("inplace", False))


def _is_elementwise(node: fx.Node, mod: nn.Module | None) -> bool:
    if mod is not None:
        if isinstance(mod, _ELEMENTWISE_MODULES):
            return True
        if isinstance(mod, nn.BatchNorm2d | nn.Dropout | nn.Dropout2d):
            return not mod.training and (not isinstance(mod, nn.BatchNorm2d) or mod.track_running_stats)
        return False
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in _ELEMENTWISE_METHODS
