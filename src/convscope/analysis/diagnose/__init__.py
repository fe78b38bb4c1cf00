"""Filter diagnosis: dead, mostly-dead, noisy and saturated filters, gradient health — https://cs231n.github.io/neural-networks-1/#actfun

CS231n: "a large gradient flowing through a ReLU neuron could cause the weights to update in
such a way that the neuron will never activate on any datapoint again ... you may find that as
much as 40% of your network can be 'dead' (i.e. neurons that never activate across the entire
training dataset) if the learning rate is set too high." `diagnose` streams a dataset through
the model and counts per filter on how many inputs its activation map is all zero (memory does
not grow with the dataset). It scores the filters' smoothness (smoothness.py) and, when labels
are given and fit the model's head, samples gradient health (gradient_health.py). Every finding
carries its numbers and advice no stronger than they are; repeats are grouped per layer kind,
and a model that looks untrained (random initialisation) is said to be.

    diag = cs.diagnose(model, (X, y), lr=0.01)      # X (N, C, H, W), y (N,) class indices
    for g in diag.groups:
        print(g.severity, g.summary)                  # "3 of 16 filters of conv1 are dead on this data: ..."
    open("diagnosis.json", "w").write(diag.to_json())

`Diagnoser` is the streaming part on its own: feed it every trace of a Probe (e.g. inside a
training loop) and ask for `result()` at any time.

One purpose per file: run.py (the stream), tap.py (its fast path of plain hooks), tally.py
(streaming tallies → Diagnosis), findings.py (findings and their advice), groups.py (repeats
told once), labels.py (do the labels fit the head?), untrained.py (a default initialisation?),
result.py (the report data).
"""

from .findings import findings
from .groups import group_findings
from .labels import LabelFit
from .result import (
    KINDS,
    SEVERITIES,
    THRESHOLD_TEXT,
    Diagnosis,
    Finding,
    FindingGroup,
    LayerSummary,
)
from .run import GRAD_BATCHES, MAP_BATCHES, LossFn, Part, diagnose
from .tally import Diagnoser
from .tap import _Tap as _Tap
from .untrained import default_init

__all__ = [
    "GRAD_BATCHES", "KINDS", "MAP_BATCHES", "SEVERITIES", "THRESHOLD_TEXT", "Diagnoser", "Diagnosis",
    "Finding", "FindingGroup", "LabelFit", "LayerSummary", "LossFn", "Part", "default_init", "diagnose", "findings",
    "group_findings",
]  # fmt: skip
