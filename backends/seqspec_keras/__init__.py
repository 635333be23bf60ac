"""seqspec's Keras backend: specs compiled to functional Keras 3 models on TensorFlow."""

import contextlib
import os
import sys

# TensorFlow logs at import unless told not to; set before anything imports it, and only
# as a default so that a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 on /dev/null for the block: TensorFlow's C++ runtime writes absl and
    oneDNN lines there at import (twice) whatever TF_CPP_MIN_LOG_LEVEL says, and its LiteRT
    converter prints its errors there before raising them, into the CLI's own output. What the
    block raises still propagates, after stderr is back; SEQSPEC_TF_LOGS=1 keeps the lines."""
    if os.environ.get("SEQSPEC_TF_LOGS"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 (an embedded interpreter)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow without its start-up lines on stderr (quiet_stderr)."""
    if "tensorflow" in sys.modules:
        return
    with quiet_stderr():
        import tensorflow  # noqa: F401


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
