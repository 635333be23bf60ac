"""The PyTorch backend of seqspec: compiles a spec to a torch.nn.Module with Keras's exact mathematics."""

from ._backend import SAVE_FORMAT, TorchBackend, backend
from ._builders import BUILDERS, Site
from ._cells import CANONICAL_TO_TORCH_GRU, TORCH_GRU_GATES, TORCH_LSTM_GATES
from ._import import FUNCTIONS, METHODS, MODULES, read_module
from ._layers import Model
from ._weights import WEIGHT_MAPS, Binding

__all__ = [
    "BUILDERS",
    "Binding",
    "CANONICAL_TO_TORCH_GRU",
    "FUNCTIONS",
    "METHODS",
    "Model",
    "MODULES",
    "read_module",
    "SAVE_FORMAT",
    "Site",
    "TORCH_GRU_GATES",
    "TORCH_LSTM_GATES",
    "TorchBackend",
    "WEIGHT_MAPS",
    "backend",
]
