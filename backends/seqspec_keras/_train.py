"""Training with Keras's own `fit`, to the semantics of seqspec.Plan (batch order, optimizers, early stopping)."""

from __future__ import annotations

import time

import keras
import tensorflow as tf
from keras import ops

import seqspec as s
from seqspec import Plan, Split

EVAL_BATCH = 1024  # validation batch size: only speed depends on it, the mean is over every value


def last_time_step_mse(y_true, y_pred):
    """Per-series mse of the last output step (plain per-series mse when the output has no time axis)."""
    if len(y_pred.shape) == 3:
        y_true, y_pred = y_true[:, -1], y_pred[:, -1]
    return ops.mean(ops.square(y_true - y_pred), axis=-1)


def make_metric(name: str, dtype: str) -> keras.metrics.Metric:
    if name == "mse":
        return keras.metrics.MeanSquaredError(name="mse", dtype=dtype)
    if name == "mae":
        return keras.metrics.MeanAbsoluteError(name="mae", dtype=dtype)
    return keras.metrics.MeanMetricWrapper(last_time_step_mse, name="last_time_step_mse", dtype=dtype)


def make_loss(name: str, dtype: str) -> keras.losses.Loss:
    """The loss in the model's dtype: Keras losses otherwise compute in floatx (float32), even for a float64 model."""
    return keras.losses.MeanSquaredError(dtype=dtype) if name == "mse" else keras.losses.MeanAbsoluteError(dtype=dtype)


def make_optimizer(opt: s.Optimizer) -> keras.optimizers.Optimizer:
    """Keras's optimizer with the hyperparameters seqspec promises on every backend (Keras's defaults)."""
    common = {"learning_rate": opt.learning_rate, "clipnorm": opt.clipnorm}
    if opt.type == "adam":
        return keras.optimizers.Adam(beta_1=0.9, beta_2=0.999, epsilon=1e-7, **common)
    if opt.type == "rmsprop":
        return keras.optimizers.RMSprop(rho=0.9, momentum=opt.momentum, epsilon=1e-7, **common)
    return keras.optimizers.SGD(momentum=opt.momentum, nesterov=False, **common)


def compile_model(model: keras.Model, spec: s.Spec, plan: Plan) -> None:
    model.compile(
        optimizer=make_optimizer(plan.optimizer),
        loss=make_loss(plan.loss, spec.dtype),
        metrics=[make_metric(m, spec.dtype) for m in plan.metrics],
        jit_compile=False,  # one predictable CPU path (tf.function graphs); XLA was not measured
    )


def batches(split: Split, plan: Plan):
    """Every epoch's batches of training series in the plan's order (the torch backend's order),
    one epoch after the other. A generator, not a PyDataset: Keras reads a PyDataset ahead (a
    whole extra pass before the first epoch), so its on_epoch_end cannot keep the epochs in step."""
    n, bs = len(split.x), plan.batch_size
    for epoch in range(plan.epochs):
        order = plan.order(n, epoch)
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            yield split.x[idx], split.y[idx]


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, training and validation together."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def fit(spec: s.Spec, model: keras.Model, plan: Plan, train: Split, validation: Split) -> list[dict]:
    """Train `model` in place with keras.Model.fit (progress printed one line per epoch); returns per-epoch records
    {epoch, loss, <metric>..., val_loss, val_<metric>..., time_s}."""
    keras.utils.set_random_seed(plan.seed)  # dropout masks
    compile_model(model, spec, plan)
    timer = EpochTimer()
    callbacks: list[keras.callbacks.Callback] = [timer]
    if plan.early_stopping is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=plan.early_stopping.patience, restore_best_weights=plan.early_stopping.restore_best_weights
            )
        )
    history = model.fit(
        batches(train, plan),
        steps_per_epoch=plan.batches(len(train.x)),  # the generator runs on from one epoch to the next
        epochs=plan.epochs,
        shuffle=False,  # the generator yields the plan's order already
        # A dataset, not arrays: Keras casts float64 arrays to float32 (floatx), a dataset keeps the spec's dtype.
        validation_data=tf.data.Dataset.from_tensor_slices((validation.x, validation.y)).batch(EVAL_BATCH),
        callbacks=callbacks,
        verbose=2,
    )
    h = history.history
    keys = ["loss", *plan.metrics]
    records = []
    for i, t in enumerate(timer.times):
        record = {"epoch": i + 1}
        record.update({k: float(h[k][i]) for k in keys})
        record.update({f"val_{k}": float(h[f"val_{k}"][i]) for k in keys})
        record["time_s"] = t
        records.append(record)
    return records
