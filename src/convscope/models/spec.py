"""Layer specs as text, ConvNetJS style — what the dashboard's "edit the layers" box sends.

    conv 16 5 pad 2 relu        # 16 filters of 5×5, stride 1, padding 2, then ReLU
    pool 2                      # 2×2 max-pool, stride 2
    conv 20 5 pad 2 stride 1 relu
    pool 2
    fc 10                       # the last fc layer gives the class scores

One layer per line (or separated by ';'); `#` starts a comment. Layers: `conv FILTERS SIZE
[stride S] [pad P] [ACT]`, `pool SIZE [stride S]`, `fc UNITS [ACT]`, `dropout P`, with ACT one
of relu, leaky_relu, tanh, sigmoid, gelu, none. `build_spec(text, input_shape)` returns an
nn.Sequential and checks every size fits; `spec_of(model)` writes the spec of a zoo-like net.
A spec that cannot be built is one SpecError line naming the line as the text box numbers it
(blank and comment lines counted) and what is wrong: "line 2: 'banana' is not a layer (conv,
pool, fc, dropout)".
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
}  # fmt: skip


class SpecError(ValueError):
    """A layer spec that cannot be built; the message names the line."""


MAX_NUMBER = 1_000_000  # no filter count, size, stride, padding or unit count may be larger
FORMS = {  # each layer's form, as the errors quote it
    "conv": "FILTERS SIZE [stride S] [pad P] [ACT], e.g. 'conv 16 5 pad 2 relu'",
    "pool": "SIZE [stride S], e.g. 'pool 2'",
    "fc": "UNITS [ACT], e.g. 'fc 10'",
    "dropout": "P, e.g. 'dropout 0.5'",
}
USAGE = {  # what a layer cannot do without
    "conv": "FILTERS SIZE, e.g. 'conv 16 5 pad 2 relu'", "pool": "SIZE, e.g. 'pool 2'",
    "fc": "UNITS, e.g. 'fc 10'", "dropout": "P, e.g. 'dropout 0.5'",
}  # fmt: skip


def build_spec(
    text: str,
    input_shape: tuple[int, int, int],
    *,
    max_params: int = 20_000_000,
    max_activations: int = 2**22,
) -> nn.Sequential:
    """Parse `text` into an nn.Sequential for inputs of `input_shape` (C, H, W).

    Refused with one SpecError line: unknown words, numbers over MAX_NUMBER, more than
    `max_params` parameters, and any layer whose output for one image holds more than
    `max_activations` values (checked before the test forward pass allocates it).
    """
    lines = spec_lines(text)
    if not lines:
        raise SpecError("the layer spec is empty")
    if len(lines) > 64:
        raise SpecError(f"at most 64 layers, got {len(lines)}")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c, h, w = input_shape
    flat: int | None = None
    counts: dict[str, int] = {}

    total = 0

    def budget(n: int) -> None:
        nonlocal total
        total += n
        if total > max_params:
            raise SpecError(f"{total:,} parameters is more than the limit of {max_params:,}")

    def add(kind: str, module: nn.Module) -> None:
        counts[kind] = counts.get(kind, 0) + 1
        layers[f"{kind}{counts[kind]}"] = module

    for n, line in lines:
        words = line.lower().split()
        op, rest = words[0], words[1:]
        try:
            if op not in USAGE:
                raise SpecError(f"{_show(op, 30)} is not a layer ({', '.join(USAGE)})")
            if len(rest) < (1 + (op == "conv")):
                raise SpecError(f"{op} needs {USAGE[op]}")
            if op == "conv":
                if flat is not None:
                    raise SpecError("conv after fc (the maps are flattened by then)")
                filters, size = _int(rest[0], op), _int(rest[1], op)
                opts, act = _options(op, rest[2:], ("stride", "pad"))
                stride, pad = opts.get("stride", 1), opts.get("pad", 0)
                if filters < 1 or size < 1 or stride < 1 or pad < 0:
                    raise SpecError("filters, size and stride must be ≥ 1 and pad ≥ 0")
                budget(filters * c * size * size + filters)
                add("conv", nn.Conv2d(c, filters, size, stride=stride, padding=pad))
                c, h, w = filters, (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
                if act:
                    add(act, ACTIVATIONS[act]())
            elif op == "pool":
                size = _int(rest[0], op)
                opts, act = _options(op, rest[1:], ("stride",))
                if act:
                    raise SpecError(f"pool takes no activation, got {act!r}")
                stride = opts.get("stride", size)
                if size < 1 or stride < 1:
                    raise SpecError("pool size and stride must be ≥ 1")
                add("pool", nn.MaxPool2d(size, stride=stride))
                h, w = (h - size) // stride + 1, (w - size) // stride + 1
            elif op == "fc":
                units = _int(rest[0], op)
                _, act = _options(op, rest[1:], ())
                if units < 1:
                    raise SpecError("fc units must be ≥ 1")
                if flat is None:
                    add("flatten", nn.Flatten())
                    flat = c * h * w
                budget(units * flat + units)
                add("fc", nn.Linear(flat, units))
                flat = units
                if act:
                    add(act, ACTIVATIONS[act]())
            else:  # dropout
                p = _float(rest[0])
                if not 0 <= p < 1:
                    raise SpecError("dropout p must be in [0, 1)")
                add("dropout", nn.Dropout(p))
        except (IndexError, ValueError) as exc:
            if isinstance(exc, SpecError) and "parameters is more than" in str(exc):
                raise
            msg = exc.args[0] if isinstance(exc, SpecError) else f"cannot read {_show(line)}"
            raise SpecError(f"line {n}: {msg}") from None
        if h < 1 or w < 1:
            raise SpecError(f"line {n}: {_show(line)} shrinks the maps to {h}×{w}; use padding or fewer pools")
        if flat is None and c * h * w > max_activations:
            raise SpecError(
                f"line {n}: {_show(line)} gives {c}×{h}×{w} values per image, more than the limit of "
                f"{max_activations:,}"
            )
    if flat is None:
        raise SpecError("the spec must end with an fc layer giving the class scores")
    model = nn.Sequential(layers)
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    return model


def spec_lines(text: str) -> list[tuple[int, str]]:
    """(line number in `text`, counting from 1, layer text) for each layer of a spec: lines split
    at ';', `#` comments and blank lines left out -- the line numbers the errors name are the
    ones the user sees in the text box."""
    return [
        (n, part.split("#", 1)[0].strip())
        for n, raw in enumerate(text.splitlines(), 1)
        for part in raw.split(";")
        if part.split("#", 1)[0].strip()
    ]


def _show(line: str, limit: int = 60) -> str:
    """The line as quoted in an error message, cut to `limit` characters."""
    return repr(line if len(line) <= limit else line[:limit] + "…")


def _int(word: str, op: str) -> int:
    """A whole number of at most MAX_NUMBER in size (a SpecError naming layer `op`'s form if not)."""
    try:
        value = int(word)
    except ValueError:
        raise SpecError(f"{_show(word, 30)} is not a whole number ({op} {FORMS[op]})") from None
    if abs(value) > MAX_NUMBER:
        raise SpecError(f"{word} is too large (at most {MAX_NUMBER:,})")
    return value


def _float(word: str) -> float:
    try:
        return float(word)
    except ValueError:
        raise SpecError(f"{_show(word, 30)} is not a number (dropout {FORMS['dropout']})") from None


def _options(op: str, words: list[str], allowed: tuple[str, ...]) -> tuple[dict[str, int], str | None]:
    opts: dict[str, int] = {}
    act: str | None = None
    i = 0
    while i < len(words):
        word = words[i]
        if word in allowed:
            if i + 1 == len(words):
                raise SpecError(f"{word} needs a number after it ({op} {FORMS[op]})")
            opts[word] = _int(words[i + 1], op)
            i += 2
        elif word in ACTIVATIONS:
            act = word
            i += 1
        elif word == "none":
            i += 1
        else:
            takes = {"conv": "stride S, pad P and an activation", "pool": "stride S", "fc": "an activation"}[op]
            acts = ", ".join([*ACTIVATIONS, "none"])
            raise SpecError(f"unknown option {_show(word, 30)}: {op} takes {takes}" + (f" ({acts})" if op != "pool" else ""))
    return opts, act


def spec_of(model: nn.Module) -> str | None:
    """The text spec of a plain conv/pool/fc net (the zoo's ConvNetJS nets), or None."""
    lines: list[str] = []
    for m in model.modules():
        if m is model or isinstance(m, nn.Flatten | nn.Sequential):
            continue
        if isinstance(m, nn.Conv2d):
            k, s, p = m.kernel_size[0], m.stride[0], m.padding
            pad = p[0] if isinstance(p, tuple) else 0
            lines.append(f"conv {m.out_channels} {k}" + (f" stride {s}" if s != 1 else "") + (f" pad {pad}" if pad else ""))
        elif isinstance(m, nn.MaxPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            lines.append(f"pool {k}" + (f" stride {s}" if s != k else ""))
        elif isinstance(m, nn.Linear):
            lines.append(f"fc {m.out_features}")
        elif type(m) in ACTIVATIONS.values() and lines:
            name = next(k for k, v in ACTIVATIONS.items() if v is type(m))
            lines[-1] += f" {name}"
        elif isinstance(m, nn.Dropout):
            lines.append(f"dropout {m.p}")
        else:
            return None
    return "\n".join(lines) if lines else None
