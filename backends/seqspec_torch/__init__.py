"""The PyTorch backend of seqspec: compiles a spec to a torch.nn.Module with Keras's exact mathematics."""

from ._backend import SAVE_FORMAT, TorchBackend, backend
from ._cells import CANONICAL_TO_TORCH_GRU, TORCH_GRU_GATES, TORCH_LSTM_GATES
from ._layers import Model

__all__ = [
    "CANONICAL_TO_TORCH_GRU",
    "Model",
    "SAVE_FORMAT",
    "TORCH_GRU_GATES",
    "TORCH_LSTM_GATES",
    "TorchBackend",
    "backend",
]
