"""A data-parallel training worker for the tests: trains specs on one backend with the world its
environment gives it (torchrun's variables, or none: one process), the specs made tiny, and saves
each trained model's canonical weights. Not a test module: tests/test_distributed.py launches it.

    python tests/dist_worker.py OUT BACKEND NPROCS EPOCHS SPEC... [--resume SPEC]

NPROCS is a list such as 2,1: each spec is trained with each N in turn, its weights written to
OUT/N/NAME.npz. Runs of N = 1 are trained by rank 0 alone (the other processes have nothing to do);
the keras backend's N replicas live in this one process, and its N = 1 runs use plain Keras.
`--resume SPEC` (keras) then trains SPEC through the command line in this same process (its
TensorFlow devices are set up for the replicas already): one epoch under --nproc 2 with a
checkpoint, resumed under --nproc 2 to EPOCHS, into OUT/resume.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

import seqspec
from seqspec import _train


def tiny(spec: seqspec.Spec, series: int = 17, steps: int = 8) -> seqspec.Spec:
    """`spec` in float64 on a few short synthetic series (or token sequences) in batches of 8 (8, 8,
    1: an uneven last batch, an empty shard for N = 2); a csv source keeps its file, in batches of 64. A synthetic spec
    of at most 100 series is a test's own and keeps its data and batch size."""
    data = spec.train.data
    if data.source == "synthetic" and data.series <= 100:
        return spec.model_copy(update={"dtype": "float64"})
    batch = 64
    if data.source in ("synthetic", "synthetic_tokens"):
        free = spec.input.shape[0] is None  # a fixed input length keeps its steps
        data = data.model_copy(update={"series": series + 10, "split": (series, 6, 4), **({"steps": steps} if free else {})})
        batch = 8
    train = spec.train.model_copy(update={"data": data, "batch_size": batch})
    return spec.model_copy(update={"dtype": "float64", "train": train})


def train_one(path: str, backend: str, nproc: int, epochs: int) -> dict[str, np.ndarray]:
    spec = tiny(seqspec.load(path))
    plan = dataclasses.replace(_train.make_plan(spec, epochs=epochs), nproc=nproc)
    run, prepared = _train.train(spec, backend, plan)
    return seqspec.get_backend(backend).get_weights(run.model, prepared.spec)


def resume_run(out: str, backend: str, epochs: int, path: str) -> None:
    from pathlib import Path

    from seqspec._train import RunRecord
    from seqspec.cli import main as cli

    # The plots prove nothing about resuming (test_train checks them): written empty.
    RunRecord.plot_learning_curves = RunRecord.plot_forecasts = lambda self, where: Path(where).write_bytes(b"")
    run = os.path.join(out, "resume")
    base = ["train", path, "--backend", backend, "--nproc", "2"]
    if cli([*base, "--epochs", "1", "--checkpoint-every", "1", "--out", run]) != 0:
        raise SystemExit(f"{run}: the first epoch failed")
    if cli([*base, "--epochs", str(epochs), "--resume", run]) != 0:
        raise SystemExit(f"{run}: the resume failed")


def main(argv: list[str]) -> int:
    resume = None
    if "--resume" in argv:
        i = argv.index("--resume")
        resume, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    out, backend, nprocs, epochs, *specs = argv
    rank = int(os.environ.get("RANK", "0"))
    for nproc in map(int, nprocs.split(",")):
        if nproc == 1 and rank != 0:
            continue
        os.makedirs(os.path.join(out, str(nproc)), exist_ok=True)
        for path in specs:
            weights = train_one(path, backend, nproc, int(epochs))
            if rank == 0:
                name = os.path.splitext(os.path.basename(path))[0]
                np.savez(os.path.join(out, str(nproc), f"{name}.npz"), **weights)
    if resume is not None:
        resume_run(out, backend, int(epochs), resume)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
