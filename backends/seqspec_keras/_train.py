"""Training with Keras's own `fit`, to the semantics of seqspec.Plan (batch order, optimizers, early stopping)."""

from __future__ import annotations

import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf
from keras import ops

import seqspec as s
from seqspec import Plan, Split

from . import _distributed, _resume

EVAL_BATCH = 1024  # validation batch size: only speed depends on it, the mean is over every value


def last_time_step_mse(y_true, y_pred):
    """Per-series mse of the last output step (plain per-series mse when the output has no time axis)."""
    if len(y_pred.shape) == 3:
        y_true, y_pred = y_true[:, -1], y_pred[:, -1]
    return ops.mean(ops.square(y_true - y_pred), axis=-1)


def make_metric(name: str, dtype: str, loss: str = "mse") -> keras.metrics.Metric:
    if name == "accuracy":  # as Keras resolves the string "accuracy" for the loss
        if loss == "binary_crossentropy":
            return keras.metrics.BinaryAccuracy(name="accuracy", dtype=dtype)
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy", dtype=dtype)
    if name == "mse":
        return keras.metrics.MeanSquaredError(name="mse", dtype=dtype)
    if name == "mae":
        return keras.metrics.MeanAbsoluteError(name="mae", dtype=dtype)
    return keras.metrics.MeanMetricWrapper(last_time_step_mse, name="last_time_step_mse", dtype=dtype)


def make_loss(name: str, dtype: str) -> keras.losses.Loss:
    """The loss in the model's dtype: Keras losses otherwise compute in floatx (float32), even for a float64 model."""
    if name == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy(dtype=dtype)
    if name == "sparse_categorical_crossentropy":
        return keras.losses.SparseCategoricalCrossentropy(dtype=dtype)
    return keras.losses.MeanSquaredError(dtype=dtype) if name == "mse" else keras.losses.MeanAbsoluteError(dtype=dtype)


def _dense_gradients(cls: type) -> type:
    """`cls` with every gradient made dense before its update rule sees it.

    An Embedding's gradient reaches the optimizer as tf.IndexedSlices with one row per token
    occurrence; Keras's elementwise ops then act on those rows one by one, so Adam's and RMSprop's
    second moment sums the squares of the occurrences' gradients instead of squaring their sum
    (measured on specs/sentiment_tokens.yaml in float64: the embeddings 0.016 away from the dense
    rule's after one step, every other array within 1e-15). Densified, the update is the rule
    seqspec promises and the torch backend applies.
    """

    class Dense(cls):
        def apply(self, grads, trainable_variables=None):
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
            return super().apply(grads, trainable_variables)

    Dense.__name__ = Dense.__qualname__ = cls.__name__
    return Dense


def make_optimizer(opt: s.Optimizer) -> keras.optimizers.Optimizer:
    """Keras's optimizer with the hyperparameters seqspec promises on every backend (Keras's
    defaults), on dense gradients (see _dense_gradients)."""
    common = {"learning_rate": opt.learning_rate, "clipnorm": opt.clipnorm}
    if opt.type == "adam":
        return _dense_gradients(keras.optimizers.Adam)(beta_1=0.9, beta_2=0.999, epsilon=1e-7, **common)
    if opt.type == "rmsprop":
        return _dense_gradients(keras.optimizers.RMSprop)(rho=0.9, momentum=opt.momentum, epsilon=1e-7, **common)
    return _dense_gradients(keras.optimizers.SGD)(momentum=opt.momentum, nesterov=False, **common)


def compile_model(model: keras.Model, spec: s.Spec, plan: Plan) -> None:
    model.compile(
        optimizer=make_optimizer(plan.optimizer),
        loss=make_loss(plan.loss, spec.dtype),
        metrics=[make_metric(m, spec.dtype, plan.loss) for m in plan.metrics],
        jit_compile=False,  # one predictable CPU path (tf.function graphs); XLA was not measured
    )


def batches(split: Split, plan: Plan, first: int = 0):
    """Every epoch's batches of training series in the plan's order (the torch backend's order),
    one epoch after the other, from epoch `first` (a resumed run's). A generator, not a PyDataset:
    Keras reads a PyDataset ahead (a whole extra pass before the first epoch), so its on_epoch_end
    cannot keep the epochs in step."""
    n, bs = len(split.x), plan.batch_size
    for epoch in range(first, plan.epochs):
        order = plan.order(n, epoch)
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            yield split.x[idx], split.y[idx]


class _Stop(Exception):
    """Raised by _Loop at a batch boundary after SIGINT/SIGTERM: out of Keras's fit, caught by `fit`."""


class _Loop(keras.callbacks.Callback):
    """Per-epoch records and wall times (training and validation together), the same progress display
    as the torch backend (seqspec.Progress), a stop between batches on SIGINT/SIGTERM, and a
    stop on a loss that became nan or infinite."""

    def __init__(self, spec: s.Spec, plan: Plan, batches: int, stop: s.StopRequest, keep_last: bool):
        super().__init__()
        self.spec, self.plan, self.batches, self.stop, self.keep_last = spec, plan, batches, stop, keep_last
        self.records: list[dict] = []
        self.last_weights = None  # the last completed epoch's, for an interrupt mid-epoch
        self.progress: Optional[s.Progress] = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self.progress = s.Progress(epoch + 1, self.plan.epochs, self.batches)

    def on_train_batch_begin(self, batch, logs=None):
        if _distributed.any_worker(bool(self.stop)):
            raise _Stop

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % s.POSTFIX_EVERY == 0 and self.progress is not None and self.progress.bar is not None:
            self.progress.update(s.POSTFIX_EVERY, {k: float(np.mean(v)) for k, v in (logs or {}).items()})

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        keys = ["loss", *self.plan.metrics]
        record = {"epoch": epoch + 1}
        record.update({k: float(logs[k]) for k in keys})
        record.update({f"val_{k}": float(logs[f"val_{k}"]) for k in keys})
        record["time_s"] = time.perf_counter() - self._start
        progress, self.progress = self.progress, None
        progress.update(self.batches % s.POSTFIX_EVERY)
        error = s.diverged(self.spec, record)
        if error is not None:
            progress.close(None, self.batches)
            raise error
        progress.close(record, self.batches)
        self.records.append(record)
        if self.keep_last:
            self.last_weights = self.model.get_weights()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close(None, self.batches)
            self.progress = None


def fit(spec: s.Spec, model: keras.Model, plan: Plan, train: Split, validation: Split) -> list[dict]:
    """Train `model` in place with keras.Model.fit; returns per-epoch records
    {epoch, loss, <metric>..., val_loss, val_<metric>..., time_s}. SIGINT/SIGTERM stop it between
    batches with seqspec.TrainingInterrupted; a loss that becomes nan or infinite stops it
    with a SpecError."""
    keras.utils.set_random_seed(plan.seed)  # dropout masks
    replicated = loss = None
    if _distributed.strategy() is not None:
        # Data-parallel: Keras's fit on a copy built under the strategy, whose weights come back.
        loss = make_loss(plan.loss, spec.dtype)  # each replica sums its values; validation reduces them as evaluate
        replicated = _distributed.replicate(spec, model, plan, compile_model, loss, train)
    else:
        compile_model(model, spec, plan)
        # The optimizer's slots before the first step: Keras defers them (without a strategy) into
        # the traced step, which TensorFlow then traces twice, once to lift the new variables out
        # (1.2 s of a 7 s two-epoch fit of conv_gru). The same zeros, made eagerly.
        model.optimizer.build(model.trainable_variables)
    trained = model if replicated is None else replicated
    # The dropout layers' seed generators drew their states when the model was built, from
    # Python's global generator: a second run in one process drew others. From the plan's seed
    # instead, every run of a spec draws the same masks (and a resumed run its checkpoint's);
    # under a strategy every replica starts from these states.
    _resume.seed_dropout(trained, plan.seed)
    resumed = _resume.read(plan.checkpoint)
    if resumed is not None:
        _resume.restore_model(plan.checkpoint, resumed, trained)
    first = 0 if resumed is None else resumed["epoch"]
    if replicated is None:
        # A dataset, not arrays: Keras casts float64 arrays to float32 (floatx), a dataset keeps the spec's dtype.
        val = tf.data.Dataset.from_tensor_slices((validation.x, validation.y)).batch(EVAL_BATCH)
        return _fit(spec, model, plan, batches(train, plan, first), val, len(train.x), resumed=resumed)
    try:
        metrics = {m: make_metric(m, spec.dtype, plan.loss) for m in plan.metrics}
        check = _distributed.Validation(validation, loss, metrics, EVAL_BATCH)
        with _distributed.drawing_global_masks():
            return _fit(spec, replicated, plan, _distributed.dataset(train, plan, first), None, len(train.x), [check], resumed)
    finally:
        model.set_weights(replicated.inner.get_weights())


def _fit(spec: s.Spec, model: keras.Model, plan: Plan, data, val, n: int, first: list = (), resumed: Optional[dict] = None) -> list[dict]:
    es = plan.early_stopping
    restores = es is not None and es.restore_best_weights
    n_batches = plan.batches(n)
    start = 0 if resumed is None else resumed["epoch"]
    with s.stop_on_signals() as stop:
        loop = _Loop(spec, plan, n_batches, stop, keep_last=not restores)
        if resumed is not None:
            loop.records = [dict(r) for r in resumed["records"]]
            loop.last_weights = None if restores else [np.array(w) for w in resumed["weights"]]
        # First, so that a nan epoch stops training before EarlyStopping records it.
        callbacks: list[keras.callbacks.Callback] = [*first, loop]
        stopper = None
        if es is not None:
            stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=es.patience, restore_best_weights=es.restore_best_weights)
            callbacks.append(stopper)
        saver = None
        if plan.checkpoint is not None and _distributed.writes():  # after early stopping, whose counters it records
            saver = _resume.Checkpoints(spec, plan, stopper, loop.records, start, None if resumed is None else resumed["early_stopping"])
            callbacks.append(saver)
        try:
            model.fit(
                data,
                steps_per_epoch=n_batches,  # the generator runs on from one epoch to the next
                epochs=plan.epochs,
                initial_epoch=start,
                shuffle=False,  # the generator yields the plan's order already
                validation_data=val,
                callbacks=callbacks,
                verbose=0,  # progress is _Loop's, the same as the torch backend's
            )
        except (_Stop, KeyboardInterrupt):
            loop.close()
            if saver is not None:
                saver.save()  # Ctrl-C leaves a checkpoint of the last completed epoch to resume
            # Keras's on_train_end (where EarlyStopping restores) does not run when fit is left by an exception.
            restored = None
            if restores and stopper is not None and stopper.best_weights is not None:
                model.set_weights(stopper.best_weights)
                restored = stopper.best_epoch + 1
            elif loop.last_weights is not None:
                model.set_weights(loop.last_weights)
                restored = len(loop.records)
            raise s.TrainingInterrupted(loop.records, restored) from None
        except BaseException:
            loop.close()
            raise
    if stopper is not None:
        stopped = stopper.stopped_epoch + 1 if stopper.stopped_epoch > 0 else None
        restored = stopper.best_epoch + 1 if restores and stopper.best_weights is not None else None
        line = s.early_stop_line(stopped, es.patience, restored, len(loop.records))
        if line:
            print(line, flush=True)
    return loop.records
