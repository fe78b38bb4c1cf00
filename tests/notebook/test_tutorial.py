"""docs/notebooks/*.ipynb execute top to bottom in a fresh kernel of this venv's python (nbclient +
ipykernel, offline, in a temp dir) and show their pictures: image/png outputs or inline
`<img src="data:image/png...">` in HTML outputs."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="dev extra: pip install -e '.[dev]'")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs" / "notebooks"
INLINE_PNG = re.compile(r"""<img src=["']data:image/png;base64,""")


def kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel of *this* interpreter (sys.executable), whatever kernelspecs the machine has."""
    spec_dir = tmp_path / "kernels" / "convscope-test"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "convscope test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="convscope-test", kernel_spec_manager=ksm)


def images_in(output: dict[str, object]) -> int:
    data = output.get("data", {})
    assert isinstance(data, dict)
    html = data.get("text/html", "")
    return int("image/png" in data) + len(INLINE_PNG.findall(html if isinstance(html, str) else "".join(html)))


def execute(path: Path, tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    work = tmp_path / "work"
    work.mkdir()
    client = NotebookClient(
        nb, km=kernel_manager(tmp_path), timeout=600, allow_errors=False,
        resources={"metadata": {"path": str(work)}},
    )  # fmt: skip
    client.execute()
    return nb


def test_there_is_a_tutorial() -> None:
    assert (DOCS / "feature-maps.ipynb").is_file()


def test_the_feature_map_tutorial_runs_and_shows_its_pictures(tmp_path: Path) -> None:
    nb = execute(DOCS / "feature-maps.ipynb", tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]  # no warning
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "a == relu(z): True" in text
    by_source = {c.source.strip().splitlines()[-1]: c for c in code}

    def result(last_line: str) -> dict[str, object]:
        """The cell's displayed value (its execute_result)."""
        return next(o for o in by_source[last_line].outputs if o.output_type == "execute_result")

    # the input picture, the trace's table (one thumbnail per block), conv1's seven panels
    assert images_in(result("cs.render.Picture(shown.repeat(4, 0).repeat(4, 1))  # the image the net sees: 32×32, drawn 4× larger")) == 1
    assert images_in(result("trace")) == 4  # conv1, conv2, conv3, fc
    block = result("b")
    assert images_in(block) == 7
    html = block["data"]["text/html"]  # type: ignore[index]
    assert all(s in html for s in ("dL/dW", "dL/dz", "dL/da", "a = f(z)"))
    assert images_in(result('trace["conv2"]')) == 7
    assert images_in(result("])")) == 1  # the image gradient beside dL/dW
    assert images_in(result('trace_after["conv1"]')) == 7
    # the live dashboard: an iframe of a loopback server with a token, to the run the loop wrote
    dash = result("dashboard")["data"]["text/html"]  # type: ignore[index]
    assert re.search(r'<iframe id="convscope-[0-9a-f]+" src="http://localhost:\d+/\?token=[\w-]+#run=notebook-demo"', dash)
    assert (tmp_path / "work" / "runs" / "notebook-demo" / "run.sqlite").is_file()
    assert re.search(r"step 59: loss \d\.\d{3}", text)
    assert sum(images_in(o) for o in outputs) >= 20
