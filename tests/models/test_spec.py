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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("conv 8 3\npool 2", "must end with an fc"),
        ("conv 8 9\nfc 2", "line 1 ('conv 8 9'): the maps shrink to -3×-3"),
        ("conv 8 three\nfc 2", "line 1 ('conv 8 three'): cannot read"),
        ("fc 4\nconv 2 3", "conv after fc"),
        ("conv 8 3 swish\nfc 2", "unknown option 'swish'"),
        ("blur 3\nfc 2", "unknown layer 'blur'"),
        ("fc 100000\nfc 100000", "parameters is more than the limit"),
    ],
)
def test_spec_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        build_spec(text, (3, 5, 5))
    assert message in str(err.value)
