"""seqspec's Keras backend: specs compiled to functional Keras 3 models on TensorFlow."""

import os

# TensorFlow logs at import unless told not to; set before anything imports it, and only
# as a default so that a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ._backend import KerasBackend  # noqa: E402
from ._builders import BUILDERS, Site  # noqa: E402
from ._layers import ACTIVATIONS, LeakyReLU, LNSimpleRNNCell, PeepholeLSTMCell, WaveNet, keras_activation  # noqa: E402
from ._weights import CANONICAL_GATE, KERAS_GRU_GATES, KERAS_LSTM_GATES, WEIGHT_MAPS, Binding  # noqa: E402

backend = KerasBackend()

__all__ = [
    "ACTIVATIONS",
    "BUILDERS",
    "Binding",
    "CANONICAL_GATE",
    "KERAS_GRU_GATES",
    "KERAS_LSTM_GATES",
    "KerasBackend",
    "LNSimpleRNNCell",
    "LeakyReLU",
    "PeepholeLSTMCell",
    "Site",
    "WEIGHT_MAPS",
    "WaveNet",
    "backend",
    "keras_activation",
]
