"""Python's full collection after the recorder's set-up, where its imports left one due: else it
comes in the training loop, one step ~0.12 s longer (docs/speed.md, "Python's collector after the
set-up").

    collect_imports()   # at the end of Recorder.__init__: a full gc pass if sys.modules changed
"""

from __future__ import annotations

import gc
import sys

_modules_collected = 0  # len(sys.modules) at the last `collect_imports` that collected


def collect_imports() -> None:
    """Python's full collection now where sys.modules changed since the last one here (a first
    recorder imports ~800 modules, ~60,000 objects): else the pass they leave due comes in the
    loop. A later recorder imports nothing new and pays nothing."""
    global _modules_collected
    if len(sys.modules) != _modules_collected:
        gc.collect()
        _modules_collected = len(sys.modules)
