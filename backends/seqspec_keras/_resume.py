"""Checkpoints of a Keras training run, and exact resume (the core writes the checkpoint's record).

A checkpoint is one .npz (no pickles: np.load(allow_pickle=False) reads it): the model's weights
(batch-norm moving statistics included), the optimizer's variables (its iteration count, moments,
momentums), the dropout layers' seed-generator states, and early stopping's best weights, with a
JSON entry for the epoch, the history so far and early stopping's counters. Restored into a model
built and compiled as the run builds it, the next epoch draws the same batches, the same dropout
masks and takes the same steps as the run that was not stopped.
"""

from __future__ import annotations

import json
from typing import Optional

import keras
import numpy as np

import seqspec as s

SUFFIX = ".npz"


def seed_states(model: keras.Model) -> list:
    """A model's variables that are not weights: the dropout layers' seed-generator states."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def seed_dropout(model: keras.Model, seed: int) -> None:
    """Each seed-generator state set from `seed`: the masks training draws (fit, training_output)."""
    rng = np.random.default_rng(seed)
    for v in seed_states(model):
        v.assign(np.array([rng.integers(0, 2**31 - 1), 0], dtype=keras.backend.standardize_dtype(v.dtype)))


def snapshot(epoch: int, model: keras.Model, stopper: Optional[keras.callbacks.EarlyStopping], records: list[dict]) -> dict:
    """Everything the run needs to continue after `epoch` epochs, as NumPy arrays and plain values."""
    es = None
    if stopper is not None:
        es = {
            "best": None if stopper.best is None else float(stopper.best),
            "best_epoch": int(stopper.best_epoch),
            "wait": int(stopper.wait),
            "best_weights": None if stopper.best_weights is None else [np.array(w) for w in stopper.best_weights],
        }
    return {
        "epoch": epoch,
        "weights": [np.array(w) for w in model.get_weights()],
        "optimizer": [np.array(v.numpy()) for v in model.optimizer.variables],
        "seeds": [np.array(v.numpy()) for v in seed_states(model)],
        "early_stopping": es,
        "records": [dict(r) for r in records],
    }


def write(state: dict, path: str) -> None:
    arrays = {}
    for group in ("weights", "optimizer", "seeds"):
        arrays.update({f"{group}/{i}": a for i, a in enumerate(state[group])})
    es = state["early_stopping"]
    if es is not None and es["best_weights"] is not None:
        arrays.update({f"best_weights/{i}": a for i, a in enumerate(es["best_weights"])})
    meta = {
        "epoch": state["epoch"],
        "records": state["records"],
        "counts": {g: len(state[g]) for g in ("weights", "optimizer", "seeds")},
        "early_stopping": None if es is None else {k: es[k] for k in ("best", "best_epoch", "wait")} | {"best_weights": None if es["best_weights"] is None else len(es["best_weights"])},
    }
    with open(path, "wb") as f:  # a file object: np.savez would add .npz to a temporary's name
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def read(checkpoint) -> Optional[dict]:
    """The state of the checkpoint a resumed run continues from (None for a fresh run)."""
    path = checkpoint.resume_state() if checkpoint is not None else None
    if path is None:
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            state = {g: [data[f"{g}/{i}"] for i in range(meta["counts"][g])] for g in ("weights", "optimizer", "seeds")}
            es = meta["early_stopping"]
            if es is not None:
                n = es["best_weights"]
                es = {**es, "best_weights": None if n is None else [data[f"best_weights/{i}"] for i in range(n)]}
    except Exception as e:
        raise s.SpecError(f"--resume {checkpoint.folder}: {path.name}: not a keras checkpoint seqspec can read ({type(e).__name__}: {e})") from None
    if meta["epoch"] != checkpoint.resume["epoch"]:
        raise s.SpecError(f"--resume {checkpoint.folder}: {path.name} is of epoch {meta['epoch']}, its record says {checkpoint.resume['epoch']}")
    return {**state, "epoch": meta["epoch"], "records": meta["records"], "early_stopping": es}


def restore_model(checkpoint, state: dict, model: keras.Model) -> None:
    """The checkpoint's weights, optimizer variables and seed states into a compiled `model` whose
    optimizer is built."""
    mine = (model.get_weights(), model.optimizer.variables, seed_states(model))
    theirs = (state["weights"], state["optimizer"], state["seeds"])
    for what, a, b in zip(("weights", "optimizer state", "random state"), mine, theirs):
        if len(a) != len(b) or any(tuple(x.shape) != tuple(y.shape) for x, y in zip(a, b)):
            raise s.SpecError(f"--resume {checkpoint.folder}: {checkpoint.resume_state().name}: its {what} does not fit the model")
    model.set_weights(state["weights"])
    for v, value in zip(model.optimizer.variables, state["optimizer"]):
        v.assign(value)
    for v, value in zip(seed_states(model), state["seeds"]):
        v.assign(value)


class Checkpoints(keras.callbacks.Callback):
    """Placed after early stopping (whose counters it records): after each epoch, the run's state;
    written when the schedule says so or training stops early. `restore` (a checkpoint's early
    stopping counters) is applied after EarlyStopping.on_train_begin has reset them."""

    def __init__(self, spec: s.Spec, plan: s.Plan, stopper, records: list[dict], first: int, restore: Optional[dict]):
        super().__init__()
        self.spec, self.plan, self.stopper, self.records, self.restore = spec, plan, stopper, records, restore
        self.state: Optional[dict] = None  # the last completed epoch's
        self.written = first  # the epoch of the newest checkpoint on disk

    def on_train_begin(self, logs=None):
        if self.restore is not None and self.stopper is not None:
            es = self.restore
            self.stopper.best = es["best"]
            self.stopper.best_epoch, self.stopper.wait = es["best_epoch"], es["wait"]
            self.stopper.best_weights = es["best_weights"]

    def on_epoch_end(self, epoch, logs=None):
        self.state = snapshot(epoch + 1, self.model, self.stopper, self.records)
        if self.plan.checkpoint.due(epoch + 1, self.plan.epochs) or self.model.stop_training:
            self.save()

    def save(self) -> None:
        """Write the last completed epoch's state, unless it is on disk already (also on Ctrl-C)."""
        if self.state is not None and self.state["epoch"] > self.written:
            self.plan.checkpoint.save(self.state["epoch"], SUFFIX, lambda path: write(self.state, path), self.spec, self.plan, "keras")
            self.written = self.state["epoch"]
