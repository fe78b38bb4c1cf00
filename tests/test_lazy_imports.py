"""`import convscope.cli` (so `convscope --help` and option errors) imports no torch, and the lazy
public names of convscope and convscope.models behave as the eager imports did (convscope/_lazy.py).
Each check runs in a fresh interpreter: this test process has long imported torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_command_line_imports_no_torch_before_it_runs_a_command() -> None:
    out = _run("""
        import sys
        import convscope.cli
        print("torch" in sys.modules)
        sys.argv = ["convscope", "inspect", "--help"]
        try:
            convscope.cli.main()
        except SystemExit as e:
            print("exit", e.code)
        print("torch" in sys.modules)
    """)
    lines = out.splitlines()
    assert lines[0] == "False"
    assert "--model" in out and "resnet18-shaped" in out  # inspect's help, with the zoo's names
    assert lines[-2:] == ["exit 0", "False"]


def test_an_option_out_of_range_is_reported_without_importing_torch() -> None:
    out = _run("""
        import sys
        import convscope.cli
        sys.argv = ["convscope", "occlusion", "--window", "0"]
        try:
            convscope.cli.main()
        except SystemExit as e:
            print("exit", e.code)
        print("torch" in sys.modules)
    """)
    assert out.splitlines()[-2:] == ["exit 2", "False"]


def test_public_names_resolve_on_first_use_with_the_display_hooks() -> None:
    out = _run("""
        import sys
        import convscope as cs
        print("torch" in sys.modules)
        print(cs.Probe.__module__, cs.Block.display is not None, cs.Trace.display is not None)
        print(sorted(set(cs.__all__) - set(dir(cs))))
        ns = {}
        exec("from convscope import *", ns)
        print(sorted(set(cs.__all__) - set(ns)))
    """)
    assert out.splitlines() == ["False", "convscope.capture.probe True True", "[]", "[]"]


@pytest.mark.parametrize("first", ["import convscope.capture", "import convscope.analysis", "from convscope.capture import Probe"])
def test_convscope_capture_stays_the_function_when_its_package_is_imported(first: str) -> None:
    """The package convscope/capture/ and the function convscope.capture share a name: importing
    the package (before or after the first use) must not make `convscope.capture(...)` a module."""
    out = _run(f"""
        {first}
        import convscope
        print(type(convscope.capture).__name__)
        import convscope.capture.trace
        print(type(convscope.capture).__name__, convscope.capture.__module__)
    """)
    assert out.splitlines() == ["function", "function convscope.capture.run"]


def test_subpackages_are_attributes_after_a_bare_import() -> None:
    """The README's `cs.analysis.Occlusion` and `convscope.distributed.top_patches` (the eager
    `__init__` bound every subpackage as a side effect)."""
    out = _run("""
        import convscope as cs
        import convscope.models as m
        print(cs.analysis.Occlusion.__name__, cs.distributed.top_patches.__name__, list(m.zoo.ZOO)[0])
    """)
    assert out == "Occlusion top_patches convnetjs-cifar"


def test_in_a_notebook_results_draw_themselves_whatever_was_imported() -> None:
    """Under IPython `import convscope` imports everything, so a Trace from `convscope.capture` and
    an attribution map from `convscope.analysis` have their Jupyter display (their hooks are set
    from the layers above, which importing only those packages would not load)."""
    out = _run("""
        import IPython  # what a Jupyter kernel has loaded before the user's first cell
        import torch
        from convscope.capture import Probe
        from convscope.analysis import Saliency
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(72, 3))
        x = torch.rand(1, 3, 8, 8)
        with Probe(m) as p:
            m(x).sum().backward()
        print(p.trace._repr_html_().startswith("<div"), Saliency(m).attribute(x, target=0)._repr_html_() is not None)
    """)
    assert out == "True True"


def test_unknown_names_raise_attribute_error_naming_them() -> None:
    out = _run("""
        import convscope, convscope.models
        for mod, name in ((convscope, "Probee"), (convscope.models, "load_modle")):
            try:
                getattr(mod, name)
            except AttributeError as e:
                print(e)
    """)
    assert out.splitlines() == ["module 'convscope' has no attribute 'Probee'",
                                "module 'convscope.models' has no attribute 'load_modle'"]


def test_models_names_match_the_registry_and_a_mismatch_is_refused() -> None:
    from convscope.models import ZOO, zoo, zoo_names
    from convscope.models.names import ZOO_NAMES

    assert zoo_names() == list(ZOO) == list(ZOO_NAMES)
    with pytest.raises(RuntimeError, match=r"ZOO_NAMES .* != the registered nets \('convnetjs-cifar',\)"):
        zoo._registry(ZOO["convnetjs-cifar"])


def test_the_package_lists_the_names_its_api_module_imports() -> None:
    import convscope
    import convscope._api

    assert convscope.__all__ == convscope._api.__all__
