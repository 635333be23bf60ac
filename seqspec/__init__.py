"""seqspec: define a sequence model once in YAML, compile it to Keras and PyTorch, prove they agree."""

from ._backend import Backend, Site, Table, backend_names, get_backend, has_arrays, missing_nodes
from ._errors import BackendError, BackendUnavailable, DataError, Problem, SpecError, WeightsError
from ._export import export
from ._loader import DEFAULT_MAX_PARAMS, DEFAULT_MAX_VALUES, load, parse
from ._models import load_model
from ._rules import Upsampling, Window
from ._shapes import LayerInfo, ModelInfo, ShapeError, TimeMap, infer
from ._spec import (
    ACTIVATIONS,
    CELL_CLASSES,
    FORMAT_VERSION,
    GRU_GATES,
    LAYER_CLASSES,
    LSTM,
    LSTM_GATES,
    GRU,
    PEEPHOLES,
    RNN,
    ActivationLayer,
    AvgPool1D,
    BatchNorm,
    Bidirectional,
    Conv1D,
    Cropping1D,
    Dense,
    Dropout,
    EarlyStopping,
    Flatten,
    GlobalAvgPool1D,
    GlobalMaxPool1D,
    GRUCell,
    LayerNorm,
    LNSimpleRNNCell,
    LSTMCell,
    MaxPool1D,
    Optimizer,
    PeepholeLSTMCell,
    RepeatVector,
    SimpleRNN,
    SimpleRNNCell,
    Spec,
    TimeDistributed,
    UpSampling1D,
    WaveNet,
    WaveNetConv,
    ZeroPadding1D,
    activation_name,
    activation_slope,
)
from ._weights import initial_weights, layout, load_weights, save_weights
from ._import import Imported, ImportRefused, import_model, prove_import, spec_name

# Variable-length sequences and tokens (issue #14): the two layers and the mask rules.
from ._masks import AVERAGES, MAKES, PASSES, READS, RECURRENT, REFUSES, Mask, MaskFlow, mask_flow
from ._spec import Embedding, Masking

__version__ = "0.1.0"

# Names whose modules import NumPy at import, loaded on first use so that `import seqspec` (and
# `seqspec validate`) stay fast: the training plan and data, and the pieces every backend's `fit`
# shares (progress, signals, divergence, early-stopping report).
_LAZY = {
    "Split": "._data",
    "Plan": "._train",
    "RunRecord": "._train",
    "POSTFIX_EVERY": "._train",
    "Progress": "._train",
    "StopRequest": "._train",
    "TrainingInterrupted": "._train",
    "diverged": "._train",
    "early_stop_line": "._train",
    "stop_on_signals": "._train",
    "shard_bounds": "._parallel",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'seqspec' has no attribute {name!r}")


def summary(spec: Spec) -> ModelInfo:
    """Shapes, parameter counts and time mapping of every layer (see seqspec.ModelInfo)."""
    return infer(spec)


def build(spec: Spec, backend: str = "keras", weights=None):
    """The native model of `spec` in `backend` ("keras" or "torch"): a keras.Model or a torch.nn.Module.

    A torch module comes back in eval mode (dropout off, batch norm on its moving statistics),
    unlike a fresh nn.Module: called as built, both backends compute the same function, the
    one `seqspec check` proves. Call `model.train()` before training it in your own loop.
    """
    return get_backend(backend).build(spec, weights)


__all__ = [
    "activation_name",
    "activation_slope",
    "ActivationLayer",
    "ACTIVATIONS",
    "AvgPool1D",
    "Backend",
    "backend_names",
    "BackendError",
    "BackendUnavailable",
    "BatchNorm",
    "Bidirectional",
    "build",
    "CELL_CLASSES",
    "Conv1D",
    "Cropping1D",
    "DataError",
    "DEFAULT_MAX_PARAMS",
    "DEFAULT_MAX_VALUES",
    "Dense",
    "diverged",
    "Dropout",
    "early_stop_line",
    "EarlyStopping",
    "export",
    "Flatten",
    "FORMAT_VERSION",
    "get_backend",
    "import_model",
    "Imported",
    "ImportRefused",
    "GlobalAvgPool1D",
    "GlobalMaxPool1D",
    "GRU",
    "GRU_GATES",
    "GRUCell",
    "has_arrays",
    "infer",
    "initial_weights",
    "LAYER_CLASSES",
    "LayerInfo",
    "LayerNorm",
    "layout",
    "LNSimpleRNNCell",
    "load",
    "load_model",
    "load_weights",
    "LSTM",
    "LSTM_GATES",
    "LSTMCell",
    "MaxPool1D",
    "missing_nodes",
    "ModelInfo",
    "Optimizer",
    "parse",
    "PeepholeLSTMCell",
    "PEEPHOLES",
    "Plan",
    "POSTFIX_EVERY",
    "Problem",
    "prove_import",
    "Progress",
    "RepeatVector",
    "RNN",
    "save_weights",
    "RunRecord",
    "ShapeError",
    "SimpleRNN",
    "shard_bounds",
    "SimpleRNNCell",
    "Site",
    "Spec",
    "spec_name",
    "SpecError",
    "Split",
    "stop_on_signals",
    "StopRequest",
    "summary",
    "Table",
    "TimeDistributed",
    "TimeMap",
    "TrainingInterrupted",
    "Upsampling",
    "UpSampling1D",
    "WaveNet",
    "WaveNetConv",
    "WeightsError",
    "Window",
    "ZeroPadding1D",
    # variable-length sequences and tokens
    "AVERAGES",
    "Embedding",
    "MAKES",
    "Mask",
    "MaskFlow",
    "mask_flow",
    "Masking",
    "PASSES",
    "READS",
    "RECURRENT",
    "REFUSES",
]
