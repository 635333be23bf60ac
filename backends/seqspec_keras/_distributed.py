"""Data-parallel training on tf.distribute: MirroredStrategy over N replicas on one host (N logical
CPU devices, or N GPUs), MultiWorkerMirroredStrategy across the workers of a TF_CONFIG; the same
training whatever N.

Keras's fit runs on a copy of the model built under the strategy, with its own train and test
steps: every global batch of the plan is cut into contiguous shards (seqspec.shard_bounds), one per
replica; a replica's loss is the sum of its shard's unreduced loss values (Keras's own loss function)
over the global batch's count of them, so that the replicas' gradients sum to the global mean's; the gradients
are summed first and clipped after (Keras's optimizer under a strategy clips each replica's own
gradient before it sums them); batch normalisation is synchronized (its sums over every replica);
dropout draws each mask for the whole global batch on every replica, from the same seed state, and
keeps the replica's rows (`global_masks`): every example gets the mask it gets in one process.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, Optional

import keras
import numpy as np
import tensorflow as tf

import seqspec as s
from keras.src.backend.tensorflow import random as _keras_random

_strategy: Optional[tf.distribute.Strategy] = None


def start_world(plan: s.Plan) -> None:
    """Make the strategy for plan.nproc replicas, before TensorFlow's devices are first used: N GPUs
    when there are that many, else N logical devices on the CPU; under TF_CONFIG one replica per worker."""
    global _strategy
    if plan.nproc <= 1:
        _strategy = None
        return
    if _strategy is not None and _strategy.num_replicas_in_sync == plan.nproc:
        return
    if os.environ.get("TF_CONFIG"):
        _strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) >= plan.nproc:
            devices = [f"/gpu:{i}" for i in range(plan.nproc)]
        else:
            cpu = tf.config.list_physical_devices("CPU")[0]
            if len(tf.config.get_logical_device_configuration(cpu) or []) != plan.nproc:
                try:
                    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * plan.nproc)
                except RuntimeError:
                    raise s.BackendError(
                        f"--nproc {plan.nproc}: TensorFlow's devices were set up before this run (train with --nproc in a fresh process)"
                    ) from None
            devices = [d.name for d in tf.config.list_logical_devices("CPU")][: plan.nproc]
        _strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if _strategy.num_replicas_in_sync != plan.nproc:
        raise s.BackendError(f"--nproc {plan.nproc}: the strategy has {_strategy.num_replicas_in_sync} replicas")


def strategy() -> Optional[tf.distribute.Strategy]:
    """The strategy start_world made (None: one replica, plain Keras)."""
    return _strategy


def _multi_worker() -> bool:
    return isinstance(_strategy, tf.distribute.MultiWorkerMirroredStrategy)


def any_worker(stop: bool) -> bool:
    """Whether any worker was asked to stop (SIGINT/SIGTERM), asked at every batch boundary, so that
    every worker stops at the same batch; under one process, its own request."""
    if not _multi_worker():
        return stop
    return bool(_strategy.reduce(tf.distribute.ReduceOp.SUM, tf.constant(1.0 if stop else 0.0), axis=None) > 0)


def writes() -> bool:
    """Whether this process writes checkpoints: every process but TF_CONFIG's workers other than 0."""
    return not _multi_worker() or _strategy.cluster_resolver.task_id == 0


_shard = threading.local()  # per replica thread (MirroredStrategy traces each replica in its own): (start, global batch)
_keras_dropout = _keras_random.dropout


@contextlib.contextmanager
def global_masks(start: tf.Tensor, total: tf.Tensor) -> Iterator[None]:
    """While a replica's training step is traced: every dropout mask (the Dropout layer's, the
    recurrent layers' dropout and recurrent_dropout, every one Keras draws through
    keras.src.backend.random.dropout) is drawn for the global batch of `total` examples, then cut
    to this replica's rows [start, start + its batch).

    Every replica's seed-generator states start equal and advance once a draw, so each draws what
    one process draws for the whole batch: Philox's stateless draw of the same shape from the same
    state. Keras has no public hook for it: the function its layers call is replaced for the
    duration of the replicated fit (`drawing_global_masks`); outside a replica's step it is Keras's own."""
    previous = getattr(_shard, "bounds", None)
    _shard.bounds = (start, total)
    try:
        yield
    finally:
        _shard.bounds = previous


def _dropout(inputs, rate, noise_shape=None, seed=None):
    bounds = getattr(_shard, "bounds", None)
    per_example = noise_shape is None or noise_shape[0] is None
    if bounds is None or rate in (0.0, 1.0) or not per_example:
        return _keras_dropout(inputs, rate, noise_shape=noise_shape, seed=seed)
    start, total = bounds
    shape = tf.unstack(tf.shape(inputs)) if noise_shape is None else [tf.shape(inputs)[i] if d is None else d for i, d in enumerate(noise_shape)]
    # Keras's draw on ones is the mask (0 or 1 / (1 - rate)); inputs * mask is what it computes on the inputs.
    mask = _keras_dropout(tf.ones(tf.stack([total, *shape[1:]]), dtype=inputs.dtype), rate, seed=seed)
    return inputs * mask[start : start + tf.shape(inputs)[0]]


@contextlib.contextmanager
def drawing_global_masks() -> Iterator[None]:
    """Keras's dropout replaced by one that honours global_masks, for the replicated fit."""
    _keras_random.dropout = _dropout
    try:
        yield
    finally:
        _keras_random.dropout = _keras_dropout


def _replicated_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """`optimizer` receiving gradients already summed over the replicas (ReplicatedModel.train_step
    sums them before Keras clips them, as one process would): its own sum is skipped."""

    class Replicated(type(optimizer)):
        def _all_reduce_sum_gradients(self, grads_and_vars):
            return list(grads_and_vars)

    return Replicated.from_config(optimizer.get_config())


class ReplicatedModel(keras.Model):
    """The spec's model under a strategy, trained on one contiguous shard of each global batch per replica."""

    def __init__(self, inner: keras.Model, loss: keras.losses.Loss, sample: tuple[np.ndarray, np.ndarray]):
        super().__init__()
        self.inner, self.per_example, self.sample = inner, loss, sample

    def call(self, x, training=False):
        return self.inner(x, training=training)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras's fit builds the metrics and the compiled loss from the first batch of the
        # distributed data, reduced to one tensor across the replicas: MultiWorkerMirroredStrategy
        # cannot reduce it ("Attempt to convert a value (PerReplica...) to a Tensor"). From one
        # training example instead (shapes and dtypes are all the build reads).
        super()._maybe_symbolic_build(data_batch=self.sample if iterator is not None else data_batch)

    def _global_loss(self, y, pred):
        """(this replica's part of the global batch's mean loss, the global mean, this shard's size):
        the loss's unreduced values (per value, or per example and step: Keras's own function)
        summed over the shard, over the global batch's count of them, as Keras's mean in one process."""
        ctx = tf.distribute.get_replica_context()
        dtype = self.per_example.dtype
        values = self.per_example.call(tf.cast(y, dtype), tf.cast(pred, dtype))
        count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.size(values), values.dtype))
        part = tf.reduce_sum(values) / count
        return part, ctx.all_reduce(tf.distribute.ReduceOp.SUM, part), tf.shape(y)[0]

    def train_step(self, data):
        x, y = data
        ctx = tf.distribute.get_replica_context()
        world, replica = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group
        batch = tf.cast(ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.shape(x)[0], tf.float64)), tf.int32)
        base, extra = batch // world, batch % world  # this replica's first row, as seqspec.shard_bounds
        start = replica * base + tf.minimum(replica, extra)
        with tf.GradientTape() as tape, global_masks(start, batch):
            pred = self.inner(x, training=True)  # not self(x): a subclassed Model casts its inputs to floatx
            part, total, k = self._global_loss(y, pred)
        weights = self.trainable_weights
        grads = tape.gradient(part, weights)
        grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        self.optimizer.apply_gradients(zip(grads, weights))
        return self._update_metrics(x, y, pred, total, k)

    def test_step(self, data):
        x, y = data
        pred = self.inner(x, training=False)
        _, total, k = self._global_loss(y, pred)
        return self._update_metrics(x, y, pred, total, k)

    def _update_metrics(self, x, y, pred, total, k):
        # The loss tracker's mean over the replicas weighted by shard size: the global mean, weighted by the global batch.
        self._loss_tracker.update_state(total, sample_weight=tf.cast(k, total.dtype))
        logs = self.compute_metrics(x, y, pred, sample_weight=None)
        if _multi_worker():
            # Keras reduces a step's logs across workers with reduce("MEAN", axis=0), which a scalar
            # has no axis for: each a vector of one. (The epoch's logs are the metrics' own results.)
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs


def replicate(spec: s.Spec, model: keras.Model, plan: s.Plan, compile_model, loss: keras.losses.Loss, train: s.Split) -> ReplicatedModel:
    """A copy of `model` (its weights) built under the strategy and compiled for replicated training
    on `loss` (the run's, whose unreduced values each replica sums) and the `train` split."""
    with _strategy.scope():
        inner = s.get_backend("keras").build(spec)
        inner.set_weights(model.get_weights())
        for layer in inner._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True  # statistics over the global batch
        replicated = ReplicatedModel(inner, loss, (train.x[:1], train.y[:1]))
        compile_model(replicated, spec, plan)
        replicated.optimizer = _replicated_optimizer(replicated.optimizer)
        replicated.optimizer.build(replicated.trainable_variables)  # before a checkpoint's state is restored into it
    return replicated


def dataset(split: s.Split, plan: s.Plan, first: int = 0) -> tf.distribute.DistributedDataset:
    """Every epoch's global batches in the plan's order from epoch `first` (a resumed run's), each as one contiguous shard per replica:
    a pipeline (one per worker) yields its replicas' shards in turn, which the strategy hands to
    its replicas in that order."""
    world = _strategy.num_replicas_in_sync
    dtype = split.x.dtype

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_pipeline = world // context.num_input_pipelines
        replicas = range(context.input_pipeline_id * per_pipeline, (context.input_pipeline_id + 1) * per_pipeline)

        def shards():
            n, bs = len(split.x), plan.batch_size
            for epoch in range(first, plan.epochs):
                order = plan.order(n, epoch)
                for i in range(0, n, bs):
                    idx = order[i : i + bs]
                    for r in replicas:
                        a, b = s.shard_bounds(len(idx), world, r)
                        yield split.x[idx[a:b]], split.y[idx[a:b]]

        signature = (
            tf.TensorSpec((None, *split.x.shape[1:]), dtype),
            tf.TensorSpec((None, *split.y.shape[1:]), split.y.dtype),
        )
        return tf.data.Dataset.from_generator(shards, output_signature=signature)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
    return _strategy.distribute_datasets_from_function(make, options)


class Validation(keras.callbacks.Callback):
    """The epoch's validation loss and metrics into its logs, before the other callbacks read them:
    the replicated model's weights, in inference mode, over the whole split in one process (Keras's
    own evaluate under a strategy cannot build on replicas' shards of unequal size), computed as one
    process's evaluate computes them: the run's loss and metric objects batch by batch, the loss
    into a Mean weighted by batch size, as Keras's loss tracker (in floatx, float32: early stopping
    compares the same rounded values whatever N)."""

    def __init__(self, split: s.Split, loss: keras.losses.Loss, metrics: dict[str, keras.metrics.Metric], batch: int):
        super().__init__()
        self.split, self.loss, self.metrics, self.batch = split, loss, metrics, batch
        self.tracker = keras.metrics.Mean(name="loss")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        x, y = self.split.x, self.split.y
        for m in (self.tracker, *self.metrics.values()):
            m.reset_state()
        for i in range(0, len(x), self.batch):
            xb, yb = x[i : i + self.batch], y[i : i + self.batch]
            pred = self.model.inner(xb, training=False)
            self.tracker.update_state(self.loss(yb, pred), sample_weight=len(xb))
            for metric in self.metrics.values():
                metric.update_state(yb, pred)
        logs["val_loss"] = float(self.tracker.result())
        logs.update({f"val_{name}": float(metric.result()) for name, metric in self.metrics.items()})
