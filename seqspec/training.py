"""What a backend's `fit` is written with: the plan and data it gets, and the progress, signal,
divergence and early-stopping pieces that make every backend train and report alike.

Public, so that backends need no private core name; it imports NumPy, so `import seqspec`
does not import it.
"""

from ._data import Split
from ._train import (
    POSTFIX_EVERY,
    Plan,
    Progress,
    StopRequest,
    TrainingInterrupted,
    diverged,
    early_stop_line,
    stop_on_signals,
)

__all__ = [
    "POSTFIX_EVERY",
    "Plan",
    "Progress",
    "Split",
    "StopRequest",
    "TrainingInterrupted",
    "diverged",
    "early_stop_line",
    "stop_on_signals",
]
