"""The interface every backend implements, and lazy discovery through the `seqspec.backends` entry points."""

from __future__ import annotations

import abc
import difflib
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ._errors import BackendError, BackendUnavailable
from ._spec import CELL_CLASSES, LAYER_CLASSES, Spec

ENTRY_POINT_GROUP = "seqspec.backends"

if TYPE_CHECKING:
    import numpy as np

Weights = dict[str, "np.ndarray"]


class Backend(abc.ABC):
    """A compiler from a Spec to one framework's native model, with canonical weight exchange.

    Every array crossing this interface is a NumPy array in the spec's dtype; every input and
    output is batch-first and channels-last, [batch, time, features] or [batch, features].
    Weights are dicts in the canonical layout of seqspec.layout(spec).

    `builders` maps every spec node class (seqspec.LAYER_CLASSES and seqspec.CELL_CLASSES) to
    the function that builds it; `weight_maps` maps every node class to its weight mapping
    (an entry exists even for a node without weights). A test fails when one is missing.
    """

    name: str  # "keras", "torch"
    extra: str  # the pip extra that installs its framework
    builders: Mapping[type, Callable[..., Any]]
    weight_maps: Mapping[type, Any]

    @abc.abstractmethod
    def build(self, spec: Spec, weights: Weights | None = None) -> Any:
        """The native model in spec.dtype. With `weights`, or else with `spec.seed`, it starts from
        those canonical weights (seqspec.initial_weights(spec) for a seed); otherwise from the
        framework's own initialisation."""

    @abc.abstractmethod
    def get_weights(self, model: Any, spec: Spec) -> Weights:
        """Every canonical array of the model, trainable and not."""

    @abc.abstractmethod
    def set_weights(self, model: Any, spec: Spec, weights: Weights) -> None:
        """Load canonical arrays; a missing name or a wrong shape is a ValueError naming it."""

    @abc.abstractmethod
    def count_params(self, model: Any) -> tuple[int, int]:
        """(trainable, non-trainable) as the framework itself counts them."""

    @abc.abstractmethod
    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        """The output in inference mode (dropout off, batch-norm on its moving statistics)."""

    @abc.abstractmethod
    def layer_outputs(self, model: Any, x: np.ndarray) -> list[np.ndarray]:
        """The output of every top-level spec layer, in inference mode, in order."""

    @abc.abstractmethod
    def gradients(self, model: Any, spec: Spec, x: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, Weights]:
        """For the scalar loss sum(output * r) in inference mode: (output, dloss/dx, dloss/dw)
        with the weight gradients named in the canonical layout (trainable arrays only)."""

    @abc.abstractmethod
    def training_output(self, model: Any, x: np.ndarray, seed: int) -> np.ndarray:
        """One forward pass in training mode (dropout active), for shape checks."""

    @abc.abstractmethod
    def save(self, model: Any, spec: Spec, path: str) -> None:
        """Write the framework's own saved model to `path` (the caller makes the write atomic)."""

    @abc.abstractmethod
    def load(self, path: str) -> Any:
        """Reload a model written by `save`."""

    suffix: str  # the file suffix of `save`'s format: ".keras", ".pt"


def missing_nodes(backend: Backend) -> list[str]:
    """Spec node classes that a backend has no builder or no weight mapping for."""
    missing = []
    for cls in LAYER_CLASSES + CELL_CLASSES:
        kind = "cell" if cls in CELL_CLASSES else "layer"
        if cls not in backend.builders:
            missing.append(f"builder for {kind} {cls.__name__}")
        if cls not in backend.weight_maps:
            missing.append(f"weight mapping for {kind} {cls.__name__}")
    return missing


def backend_names() -> list[str]:
    """Names of the installed backends (without importing them)."""
    from importlib import metadata

    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


_loaded: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The backend called `name`, imported on first use.

    Raises SeqspecError for an unknown name (with the closest known one suggested) and
    BackendUnavailable when its framework is not installed (naming the extra to install).
    """
    if name in _loaded:
        return _loaded[name]
    from importlib import metadata  # here, not at import: `seqspec validate` never needs it

    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if name not in eps:
        close = difflib.get_close_matches(name, list(eps), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(eps)) or "none installed"
        raise BackendError(f"unknown backend {name!r}{hint} (known: {known})")
    try:
        backend = eps[name].load()
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        raise BackendUnavailable(
            f"the {name} backend needs {missing}, which is not installed: pip install 'seqspec[{name}]'"
        ) from None
    if callable(backend) and not isinstance(backend, Backend):
        backend = backend()
    _loaded[name] = backend
    return backend
