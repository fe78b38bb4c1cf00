"""Layer specs as text: exact shapes and parameter counts, round trip with the zoo, clear errors."""

from __future__ import annotations

import pytest
import torch

from convscope.models import ZOO
from convscope.models.spec import SpecError, build_spec, spec_of


def test_convnetjs_cifar_spec_round_trip() -> None:
    zoo_net = ZOO["convnetjs-cifar"].factory()
    text = spec_of(zoo_net)
    assert text == "conv 16 5 pad 2 relu\npool 2\nconv 20 5 pad 2 relu\npool 2\nconv 20 5 pad 2 relu\npool 2\nfc 10"
    net = build_spec(text, (3, 32, 32))
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in zoo_net.parameters()) == 22_466
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert list(dict(net.named_children())) == [
        "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3", "flatten1", "fc1",
    ]  # fmt: skip


def test_spec_options_and_semicolons() -> None:
    net = build_spec("conv 4 3 stride 2 tanh; fc 8 relu; dropout 0.5; fc 3  # head", (1, 9, 9))
    assert net.conv1.stride == (2, 2) and type(net.tanh1).__name__ == "Tanh"
    assert net.fc1.in_features == 4 * 4 * 4 and net(torch.zeros(1, 1, 9, 9)).shape == (1, 3)


CONV_FORM = "conv FILTERS SIZE [stride S] [pad P] [ACT], e.g. 'conv 16 5 pad 2 relu'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the layer spec is empty"),
        ("conv 8 3\npool 2", "the spec must end with an fc layer giving the class scores"),
        ("conv 8 9\nfc 2", "line 1: 'conv 8 9' shrinks the maps to -3×-3; use padding or fewer pools"),
        ("conv 8 three\nfc 2", f"line 1: 'three' is not a whole number ({CONV_FORM})"),
        ("fc 4\nconv 2 3", "line 2: conv after fc (the maps are flattened by then)"),
        (
            "conv 8 3 swish\nfc 2",
            "line 1: unknown option 'swish': conv takes stride S, pad P and an activation "
            "(relu, leaky_relu, tanh, sigmoid, gelu, none)",
        ),
        ("blur 3\nfc 2", "line 1: 'blur' is not a layer (conv, pool, fc, dropout)"),
        ("fc 100000\nfc 100000", "10,007,700,000 parameters is more than the limit of 20,000,000"),  # 7,600,000 + 10,000,100,000
        # the line numbers are the text box's: blank and comment lines count, ';' parts share one
        ("conv 8 3 relu\nbanana 3\nfc 10", "line 2: 'banana' is not a layer (conv, pool, fc, dropout)"),
        ("# a net\n\nconv ten 3 relu\nfc 10", f"line 3: 'ten' is not a whole number ({CONV_FORM})"),
        ("conv 4 3; bla 2\nfc 3", "line 1: 'bla' is not a layer (conv, pool, fc, dropout)"),
        ("conv 8\nfc 2", "line 1: conv needs FILTERS SIZE, e.g. 'conv 16 5 pad 2 relu'"),
        ("conv 8 3\nfc", "line 2: fc needs UNITS, e.g. 'fc 10'"),
        ("conv 8 3 pad\nfc 2", f"line 1: pad needs a number after it ({CONV_FORM})"),
        ("dropout half\nfc 2", "line 1: 'half' is not a number (dropout P, e.g. 'dropout 0.5')"),
        ("pool 2 relu\nfc 2", "line 1: pool takes no activation, got 'relu'"),
    ],
)
def test_spec_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        build_spec(text, (3, 5, 5))
    assert str(err.value) == message
