"""Under torchrun: convscope.diagnose over (X, y) whose size is not a multiple of the batch or the
world size; rank 0 writes the Diagnosis as JSON. Args: out_path n."""

import sys

import torch
import torch.distributed as dist
from torch import nn

import convscope as cs
from convscope.distributed import init_from_env


def net() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 3),
    )
    with torch.no_grad():
        m[0].bias[:2] = -50.0  # filters 0 and 1 of the first conv: dead on every input
        m[3].bias[5] = -0.6  # filter 5 of the second: dead on these inputs
    return m


def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 20, 20, generator=g), torch.arange(n) % 3


if __name__ == "__main__":
    out, n = sys.argv[1], int(sys.argv[2])
    w = init_from_env()
    assert w is not None and w.size == 2
    model = net()
    seen = [0]
    hook = model.register_forward_pre_hook(lambda _m, args: seen.__setitem__(0, seen[0] + args[0].shape[0]))
    diag = cs.diagnose(model, data(n), batch_size=4, grad_batches=3, lr=0.1)
    hook.remove()
    with open(f"{out}.{w.rank}.seen", "w") as f:  # the inputs this rank's model saw
        f.write(str(seen[0]))
    if w.main:
        with open(out, "w") as f:
            f.write(diag.to_json())
    dist.destroy_process_group()
