"""`seqspec.load_model`: a saved model file back as the native model of the backend that wrote it."""

from __future__ import annotations

import os
from typing import Any, Union

from . import _safeio
from ._backend import Backend, backend_names, get_backend
from ._errors import BackendError, BackendUnavailable, SpecError

# Which backend to ask first for a suffix, so that loading a .pt does not import TensorFlow to
# learn the Keras backend's suffix; any other installed backend is still asked.
_LIKELY = {".keras": "keras", ".pt": "torch"}


def _installed() -> list[Backend]:
    found = []
    for name in backend_names():
        try:
            found.append(get_backend(name))
        except BackendUnavailable:
            continue
    return found


def _backend_for(path: str) -> Backend:
    suffix = os.path.splitext(path)[1].lower()
    likely = _LIKELY.get(suffix)
    if likely in backend_names():
        backend = get_backend(likely)  # BackendUnavailable names the extra to install
        if backend.suffix == suffix:
            return backend
    backends = _installed()
    for backend in backends:
        if backend.suffix == suffix:
            return backend
    known = ", ".join(f"{b.suffix} ({b.name})" for b in backends) or "none: no backend is installed"
    raise BackendError(f"{path}: not a saved model file by its suffix {suffix or '(none)'!r}; the installed backends read {known}")


def load_model(path: Union[str, os.PathLike]) -> Any:
    """The native model saved at `path` by `seqspec compile` or a backend's `save`: a keras.Model
    for `.keras`, a torch.nn.Module for `.pt`. Raises SpecError in one line for a missing or
    unreadable file, an unknown suffix or a file the backend refuses."""
    path = os.fspath(path)
    try:
        _safeio.check_regular(path)
    except _safeio.Refused as e:
        raise SpecError(f"{path}: {e}") from None
    return _backend_for(path).load(path)
