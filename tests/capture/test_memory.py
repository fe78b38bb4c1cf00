"""convscope keeps freed memory in the process once a Probe is entered (capture/memory.py).

The allocator is process-wide, so each case runs in a fresh interpreter. Behaviour, not
timing: a round of big allocations that are all freed again page-faults its memory back in
every round under glibc's defaults (blocks over 32 MiB are unmapped when freed), and not at
all once convscope asked glibc to keep freed memory. Page-fault counts come from getrusage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

SCRIPT = textwrap.dedent(
    """
    import json, resource, torch
    from torch import nn
    import convscope as cs
    from convscope.capture import memory

    def faults_per_round():
        # 4 x 40 MiB held at once, then freed: above glibc's largest dynamic mmap threshold
        # (32 MiB), so by default each block is its own mmap, unmapped again when freed
        out = []
        for _ in range(4):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            held = [torch.ones(10 * 2**20) for _ in range(4)]
            del held
            out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return min(out[1:])

    first = faults_per_round()
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with cs.Probe(model) as probe:
        model(torch.ones(1, 1, 5, 5)).sum().backward()
    setting = memory.keep_freed_memory()
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    same = all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    print(json.dumps({"before": first, "after": faults_per_round(), "kept": setting.kept,
                      "reason": setting.reason, "z": probe.trace["0"].z.flatten().tolist(),
                      "hooks": hooks, "same": same, "again": memory.keep_freed_memory() is setting}))
    """
)


def _run(**env: str) -> dict[str, object]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "CONVSCOPE_MALLOC"}
    full.pop("LD_PRELOAD", None)
    full.update(env)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=full, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def test_first_probe_makes_glibc_keep_freed_memory() -> None:
    r = _run()
    assert r["kept"] is True and "keeps freed memory" in str(r["reason"])
    assert r["again"] is True  # once per process
    assert int(r["before"]) >= 30000  # 160 MiB faulted in anew each round: 40,960 pages
    assert int(r["after"]) <= 100  # the same round reuses the kept pages
    assert r["hooks"] == 0 and r["same"] is True  # the probe left the model as it was
    assert len(r["z"]) == 2 * 3 * 3  # it recorded (the allocator setting changes no value)


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"CONVSCOPE_MALLOC": "default"}, "CONVSCOPE_MALLOC=default"),
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "MALLOC_TRIM_THRESHOLD_ is set"),
        ({"LD_PRELOAD": "/nonexistent/libjemalloc.so.2"}, "jemalloc is preloaded"),
    ],
)
def test_a_chosen_allocator_is_left_alone(env: dict[str, str], reason: str) -> None:
    r = _run(**env)
    assert r["kept"] is False and reason in str(r["reason"])
    if "MALLOC_TRIM_THRESHOLD_" not in env:  # glibc's defaults: the churn is still there
        assert int(r["after"]) >= 30000


def test_bad_setting_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from convscope.capture import memory

    monkeypatch.setenv("CONVSCOPE_MALLOC", "fast")
    with pytest.raises(ValueError, match=r"CONVSCOPE_MALLOC must be 'keep' or 'default', got 'fast'"):
        memory.keep_freed_memory()
