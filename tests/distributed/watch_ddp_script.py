"""Under torchrun (2 ranks, gloo): a user's DDP loop with `cs.watch` on every rank.
Args: mode out_dir, mode one of
  equal  5 steps (3 of 4+4 examples, 2 of 5+3), rank 0 saves the weights it used each step;
  pause  steps until out_dir/stop exists (the test pauses and resumes from the store);
  kill   steps until killed (rank 1 writes its pid to out_dir/pid-1; no `with`, no close()).
Each rank writes its last finished step to out_dir/progress-RANK; rank 1 checks it never holds a
file of the run open and writes out_dir/rank1-clean at the end."""

import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import convscope as cs

GLOBAL = 8
SPLITS = [4, 4, 4, 5, 5]  # rank 0's share of the global batch of 8, per step (equal, then unequal)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.Tanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(5 * 3 * 3, 6), nn.ReLU(), nn.Linear(6, 3),
    )  # fmt: skip


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(GLOBAL, 3, 10, 10, generator=g)
    x[:, :, :2] = 0  # some maps stay at zero for the dead-fraction check
    return x, torch.randint(0, 3, (GLOBAL,), generator=g)


def split(step: int) -> int:
    return SPLITS[step] if step < len(SPLITS) else GLOBAL // 2


def _open_in(run_dir: Path) -> list[str]:
    where = str(run_dir.resolve())
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(where):
            found.append(target)
    return found


def _progress(out: Path, rank: int, step: int) -> None:
    tmp = out / f".progress-{rank}"
    tmp.write_text(str(step))
    os.replace(tmp, out / f"progress-{rank}")


def main(mode: str, out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = DistributedDataParallel(net())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run_dir = out / "run"
    run = cs.watch(model, run_dir, snapshot_every=0.0)
    if rank == 1:
        (out / "pid-1").write_text(str(os.getpid()))
        assert type(run).__name__ == "Follower" and not hasattr(run, "writer")
    used: list[dict[str, torch.Tensor]] = []
    steps = len(SPLITS) if mode == "equal" else 3000
    for step in range(steps):
        x, y = batch(step)
        cut = split(step)
        lo, hi = (0, cut) if rank == 0 else (cut, GLOBAL)
        if rank == 0:
            used.append({k: v.clone() for k, v in model.module.state_dict().items()})
        loss = F.cross_entropy(model(x[lo:hi]), y[lo:hi])
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.step(loss=loss)
        _progress(out, rank, step)
        if rank == 1:
            assert not hasattr(run, "writer"), "rank 1 has a writer"
            assert not _open_in(run_dir), f"rank 1 holds {_open_in(run_dir)}"
        if mode != "equal":
            time.sleep(0.02)
            stop = torch.tensor([float(rank == 0 and (out / "stop").exists())])
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
            if stop.item() > 0:
                break
    if mode == "kill":
        raise AssertionError("the kill test stops by a kill")
    run.close()
    if rank == 0:
        used.append({k: v.clone() for k, v in model.module.state_dict().items()})
        torch.save(used, out / "weights.pt")
    else:
        (out / "rank1-clean").write_text("ok")
    dist.barrier()  # both ranks done before gloo tears down (one rank alone aborted at exit, SIGABRT)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
