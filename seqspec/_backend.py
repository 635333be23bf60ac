"""The interface every backend implements, its shared services, and lazy discovery through the `seqspec.backends` entry points."""

from __future__ import annotations

import abc
import dataclasses
import difflib
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from ._errors import BackendError, BackendUnavailable
from ._spec import ACTIVATIONS, CELL_CLASSES, LAYER_CLASSES, Spec, _Layer

ENTRY_POINT_GROUP = "seqspec.backends"

if TYPE_CHECKING:
    import numpy as np

    from ._data import Split
    from ._train import Plan

Weights = dict[str, "np.ndarray"]


def _display_file(module: str) -> str:
    """A module's source file, relative to the working folder when it lies under it."""
    path = getattr(sys.modules.get(module), "__file__", None) or module.replace(".", "/") + ".py"
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith("..") else rel


class Table(dict):
    """One concern of one backend (its builders, its weight mappings, its activations), keyed by
    spec node class or by activation name; the same table runs and is read by the conformance test.

    `lookup` is the only way in: a missing entry is a BackendError that names the node type, the
    backend and the table's file, never a KeyError.
    """

    def __init__(self, backend: str, concern: str, name: str, module: str, entries: Mapping):
        super().__init__(entries)
        self.backend, self.concern, self.name, self.module = backend, concern, name, module

    @property
    def file(self) -> str:
        return _display_file(self.module)

    def missing(self, key, what: str = "") -> str:
        """What to add where, for a key (a node class or an activation name) the table lacks."""
        what = what or (key.__name__ if isinstance(key, type) else repr(key))
        return f"the {self.backend} backend has no {self.concern} for {what}: add one to {self.name} in {self.file}"

    def lookup(self, key, where: str = "") -> Callable:
        """The entry for a node (by its class), a node class or an activation name."""
        if isinstance(key, (str, type)):
            cls, what = key, ""
        else:
            cls, what = type(key), f"{key.type!r} ({type(key).__name__})"
        entry = self.get(cls)
        if entry is None:
            message = self.missing(cls, what)
            raise BackendError(f"{where}: {message}" if where else message)
        return entry


@dataclasses.dataclass(frozen=True)
class Site:
    """Where a node sits, as its backend's builder sees it: the spec, the node's path in the spec
    (`("layers", 2)`, `("layers", 2, "layer")` for a wrapped one) and the shape it receives."""

    backend: str
    spec: Spec
    path: tuple
    in_shape: tuple  # the core's input shape, (None, T, F) or (None, F)

    @property
    def index(self) -> int:
        """The position of the top-level layer this node is (or is inside of)."""
        return self.path[1]

    @property
    def top_level(self) -> bool:
        return len(self.path) == 2

    @property
    def n_in(self) -> int:
        return self.in_shape[-1]

    @property
    def dtype(self) -> str:
        return self.spec.dtype

    def where(self) -> str:
        """`file:line:col: layers[2].layer`, to start an error with."""
        return self.spec.locate(*self.path)

    def nested(self, key: str) -> "Site":
        """The site of the node under `key` (a wrapped layer, a cell)."""
        return dataclasses.replace(self, path=self.path + (key,))

    def unsupported(self, key: str, why: str) -> BackendError:
        """The error for a key this backend cannot honour exactly, located at the key in the file."""
        return BackendError(f"{self.spec.locate(*self.path, key)}: the {self.backend} backend {why}")


def has_arrays(node) -> bool:
    """Whether a node (or node class) can have canonical arrays, and so needs a weight mapping in every backend."""
    cls = node if isinstance(node, type) else type(node)
    return cls.arrays is not _Layer.arrays if issubclass(cls, _Layer) else True


class Backend(abc.ABC):
    """A compiler from a Spec to one framework's native model, with canonical weight exchange.

    Every array crossing this interface is a NumPy array in the spec's dtype; every input and
    output is batch-first and channels-last, [batch, time, features] or [batch, features].
    Weights are dicts in the canonical layout of seqspec.layout(spec).

    A backend declares three tables (seqspec.Table): `builders` maps every spec node class
    (seqspec.LAYER_CLASSES and seqspec.CELL_CLASSES) to the function that builds it;
    `weight_maps` maps every node class that has canonical arrays to its weight mapping;
    `activations` maps every activation name to the function that makes the framework's
    activation. `seqspec.missing_nodes(backend)` lists what a backend lacks; a test fails on it.
    A third backend is a package whose entry point in the group `seqspec.backends` names an
    instance (or a subclass) of this class: nothing in seqspec needs editing.
    """

    name: str  # "keras", "torch"
    extra: str  # the pip extra that installs its framework
    suffix: str  # the file suffix of `save`'s format: ".keras", ".pt"
    builders: Table
    weight_maps: Table
    activations: Table

    # --- shared services -----------------------------------------------------------------

    def build(self, spec: Spec, weights: Optional[Weights] = None) -> Any:
        """The native model in spec.dtype. With `weights`, or else with `spec.seed`, it starts from
        those canonical weights (seqspec.initial_weights(spec) for a seed); otherwise from the
        framework's own initialisation."""
        model = self.compile(spec)
        start = self.start_weights(spec, weights)
        if start is not None:
            self.set_weights(model, spec, start)
        return model

    @staticmethod
    def start_weights(spec: Spec, weights: Optional[Weights] = None) -> Optional[Weights]:
        """The canonical weights a model starts from: the given ones, else the spec's seeded ones, else None."""
        if weights is not None:
            return weights
        if spec.seed is not None:
            from ._weights import initial_weights

            return initial_weights(spec)
        return None

    @staticmethod
    def regular_file(path) -> os.stat_result:
        """The stat of a model file to load, refusing (BackendError, one line) anything but a
        regular file this process can open: reading a FIFO blocks, /dev/zero never ends."""
        from ._safeio import Refused, check_regular

        try:
            return check_regular(path)
        except Refused as e:
            raise BackendError(f"{os.fspath(path)}: {e}") from None

    def set_weights(self, model: Any, spec: Spec, weights: Weights) -> None:
        """Load canonical arrays, after checking every name and shape against the spec's layout
        (seqspec.WeightsError, naming what is missing, unexpected or misshapen)."""
        from ._weights import check_weights

        check_weights(spec, weights)
        self.assign_weights(model, spec, weights)

    # --- what each backend implements ----------------------------------------------------

    @abc.abstractmethod
    def compile(self, spec: Spec) -> Any:
        """The native model of `spec` in spec.dtype with the framework's own initial weights."""

    @abc.abstractmethod
    def assign_weights(self, model: Any, spec: Spec, weights: Weights) -> None:
        """Copy canonical arrays (already checked against the layout) into the model."""

    @abc.abstractmethod
    def get_weights(self, model: Any, spec: Spec) -> Weights:
        """Every canonical array of the model, trainable and not, in layout order."""

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
        """One forward pass in training mode (dropout active), for shape checks; leaves no trace
        (batch-norm statistics and random state are put back)."""

    @abc.abstractmethod
    def fit(self, spec: Spec, model: Any, plan: Plan, train: Split, validation: Split) -> list[dict]:
        """Train `model` in place to the semantics of seqspec.Plan; one record per epoch run:
        {"epoch", "loss", "val_loss", each metric and "val_" metric, "time_s"}."""

    def check_threads(self) -> None:
        """Before `seqspec check` runs, unless OMP_NUM_THREADS says otherwise: the framework's
        threads for its small batches. Nothing by default (TensorFlow keeps its own pools)."""

    def start_world(self, plan: Plan) -> None:
        """Before the model is built for data-parallel training on plan.nproc workers: what the
        framework must set up first (TensorFlow's devices and strategy). Nothing by default."""

    @abc.abstractmethod
    def save(self, model: Any, spec: Spec, path: str) -> None:
        """Write the framework's own saved model to `path` (the caller makes the write atomic)."""

    @abc.abstractmethod
    def load(self, path: str) -> Any:
        """Reload a model written by `save`."""

    @abc.abstractmethod
    def versions(self) -> dict[str, Any]:
        """The versions of the framework packages this backend runs on, for a run's record."""


def missing_nodes(backend: Backend) -> list[str]:
    """What a backend lacks, one line each, saying what to add to which table in which file:
    a builder for every spec node class, a weight mapping for every node class with arrays,
    an activation for every activation name."""
    missing = []
    for cls in LAYER_CLASSES + CELL_CLASSES:
        if cls not in backend.builders:
            missing.append(backend.builders.missing(cls))
        if cls not in backend.weight_maps and has_arrays(cls):
            missing.append(backend.weight_maps.missing(cls))
    for name in ACTIVATIONS:
        if name not in backend.activations:
            missing.append(backend.activations.missing(name))
    return missing


def backend_names() -> list[str]:
    """Names of the installed backends (without importing them)."""
    from importlib import metadata

    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


_loaded: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The backend called `name`, imported on first use.

    Raises BackendError for an unknown name (with the closest known one suggested) and
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
        import importlib.util

        missing = getattr(e, "name", None)
        try:
            # Only a top-level name: find_spec of "torch._C" would import torch, and fail again.
            installed = missing is None or importlib.util.find_spec(missing.partition(".")[0]) is not None
        except (ImportError, ValueError):
            installed = True
        if installed:  # a broken install, a missing shared library: "not installed" would mislead
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise BackendUnavailable(f"the {name} backend failed to import: {first}") from None
        raise BackendUnavailable(
            f"the {name} backend needs {missing}, which is not installed: pip install 'seqspec[{name}]'"
        ) from None
    if isinstance(backend, type) and issubclass(backend, Backend):
        backend = backend()
    if not isinstance(backend, Backend):
        raise BackendError(f"the entry point {name!r} of {ENTRY_POINT_GROUP} names {backend!r}, not a seqspec.Backend")
    _loaded[name] = backend
    return backend
