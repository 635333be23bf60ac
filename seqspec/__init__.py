"""seqspec: define a sequence model once in YAML, compile it to Keras and PyTorch, prove they agree."""

from ._backend import Backend, backend_names, get_backend, missing_nodes
from ._errors import BackendError, BackendUnavailable, DataError, Problem, SpecError
from ._loader import DEFAULT_MAX_PARAMS, load, parse
from ._shapes import LayerInfo, ModelInfo, ShapeError, TimeMap, infer
from ._spec import (
    ACTIVATIONS,
    CELL_CLASSES,
    FORMAT_VERSION,
    LAYER_CLASSES,
    Spec,
    activation_name,
    activation_slope,
)
from ._weights import initial_weights, layout, load_weights, save_weights

__version__ = "0.1.0"


def summary(spec: Spec) -> ModelInfo:
    """Shapes, parameter counts and time mapping of every layer (see seqspec.ModelInfo)."""
    return infer(spec)


def build(spec: Spec, backend: str = "keras", weights=None):
    """The native model of `spec` in `backend` ("keras" or "torch"): a keras.Model or a torch.nn.Module."""
    return get_backend(backend).build(spec, weights)


__all__ = [
    "ACTIVATIONS",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "CELL_CLASSES",
    "DEFAULT_MAX_PARAMS",
    "DataError",
    "FORMAT_VERSION",
    "LAYER_CLASSES",
    "LayerInfo",
    "ModelInfo",
    "Problem",
    "ShapeError",
    "Spec",
    "SpecError",
    "TimeMap",
    "activation_name",
    "activation_slope",
    "backend_names",
    "build",
    "get_backend",
    "infer",
    "initial_weights",
    "layout",
    "load",
    "load_weights",
    "missing_nodes",
    "parse",
    "save_weights",
    "summary",
]
