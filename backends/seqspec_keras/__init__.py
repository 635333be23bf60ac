"""seqspec's Keras backend: specs compiled to functional Keras 3 models on TensorFlow."""

import os
import sys

# TensorFlow logs at import unless told not to; set before anything imports it, and only
# as a default so that a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 on /dev/null: its C++ runtime writes absl and
    oneDNN lines there at import (twice) whatever TF_CPP_MIN_LOG_LEVEL says, into the CLI's
    own output. A failing import still raises, after stderr is back."""
    if "tensorflow" in sys.modules or os.environ.get("SEQSPEC_TF_LOGS"):
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 (an embedded interpreter)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

from ._backend import KerasBackend  # noqa: E402
from ._builders import BUILDERS, Site  # noqa: E402
from ._import import READERS, read_model  # noqa: E402
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
    "READERS",
    "read_model",
    "Site",
    "WEIGHT_MAPS",
    "WaveNet",
    "backend",
    "keras_activation",
]
