"""Writing files: every file seqspec writes goes through `atomic_write`; `write_run` writes a training run's files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ._train import RunRecord


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it over `path`: a failure
    leaves neither a half-written file nor a clobbered old one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_run(out: Path, record: RunRecord) -> list[Path]:
    """Write the run's files atomically into `out` (created here): the saved model, weights.safetensors,
    metrics.json, learning_curves.png and forecasts.png."""
    import numpy as np
    from safetensors.numpy import save_file

    from . import _data
    from ._train import plot_forecasts, plot_learning_curves, predict

    backend, model, spec, prepared = record.backend, record.run.model, record.spec, record.prepared
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def put(name: str, write) -> None:
        target = out / name
        atomic_write(str(target), write, suffix=target.suffix)
        paths.append(target)

    weights = {k: np.ascontiguousarray(v) for k, v in backend.get_weights(model, spec).items()}
    # Save a fresh build with the trained weights: the trained model also carries its training
    # setup (Keras saves the compiled loss, metrics and optimizer, which load only where this
    # module's metric is registered), and the saved model is the spec's model, nothing more.
    clean = backend.build(spec, weights)
    put("model" + backend.suffix, lambda tmp: backend.save(clean, spec, tmp))
    put("weights.safetensors", lambda tmp: save_file(weights, tmp, metadata={"spec": spec.name, "backend": backend.name}))
    put("metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(record.metrics, indent=2) + "\n"))
    put("learning_curves.png", lambda tmp: plot_learning_curves(tmp, record.metrics))
    val = prepared.splits["validation"]
    pred = predict(backend, model, val.x[:3])
    put("forecasts.png", lambda tmp: plot_forecasts(tmp, record.metrics, _data.Split(val.x[:3], val.y[:3]), pred, prepared.targets))
    return paths
