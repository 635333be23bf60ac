"""Data-parallel training on tf.distribute: MirroredStrategy over N replicas on one host (N logical
CPU devices, or N GPUs), MultiWorkerMirroredStrategy across the workers of a TF_CONFIG; the same
training whatever N.

Keras's fit runs on a copy of the model built under the strategy, with its own train and test
steps: every global batch of the plan is cut into contiguous shards (seqspec.shard_bounds), one per
replica; a replica's loss is the sum of its shard's squared (absolute) errors over the global
batch's number of values, so that the replicas' gradients sum to the global mean's; the gradients
are summed first and clipped after (Keras's optimizer under a strategy clips each replica's own
gradient before it sums them); batch normalisation is synchronized (its sums over every replica).
Dropout is refused: Keras draws a replica's masks for its own shard, so they would depend on N.
"""

from __future__ import annotations

import os
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

import seqspec as s

_strategy: Optional[tf.distribute.Strategy] = None


def start_world(plan: s.Plan) -> None:
    """Make the strategy for plan.nproc replicas, before TensorFlow's devices are first used: N GPUs
    when there are that many, else N logical devices on the CPU; under TF_CONFIG one replica per worker."""
    global _strategy
    if plan.checkpoint is not None and plan.nproc > 1:  # before the model is built: nothing is trained to be lost
        raise s.SpecError("--checkpoint-every, --resume: the keras backend writes checkpoints in one process, not under --nproc (the torch backend does both)")
    if plan.nproc <= 1:
        _strategy = None
        return
    if _strategy is not None and _strategy.num_replicas_in_sync == plan.nproc:
        return
    if os.environ.get("TF_CONFIG"):
        # Measured with two workers on one host (2026-12-02): Keras 3.15's fit fails on
        # MultiWorkerMirroredStrategy before the first step (its symbolic build reduces the first
        # per-replica batch: "Attempt to convert a value (PerReplica...) to a Tensor").
        raise s.BackendError(
            f"TF_CONFIG: the keras backend cannot train across {plan.nproc} workers yet (Keras's fit fails on "
            "MultiWorkerMirroredStrategy's first batch); use --backend torch with torchrun across hosts, or --nproc on one host"
        )
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


def refuse_dropout(spec: s.Spec) -> None:
    """A one-line error for a spec with dropout: its masks would depend on the number of replicas."""

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "dropout" and node.get("rate", 0) > 0 or node.get("dropout", 0) > 0 or node.get("recurrent_dropout", 0) > 0:
                return path
            for k, v in node.items():
                found = walk(v, path)
                if found is not None:
                    return found
        elif isinstance(node, list):
            for v in node:
                found = walk(v, path)
                if found is not None:
                    return found
        return None

    for i, layer in enumerate(spec.layers):
        if walk(layer.model_dump(mode="json"), i) is not None:
            raise s.SpecError(
                f"{spec.where('layers', i)}: layers[{i}]: the keras backend trains dropout on one replica only "
                "(a replica draws masks for its own shard, so training would depend on --nproc); use --backend torch"
            )


def _replicated_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """`optimizer` receiving gradients already summed over the replicas (ReplicatedModel.train_step
    sums them before Keras clips them, as one process would): its own sum is skipped."""

    class Replicated(type(optimizer)):
        def _all_reduce_sum_gradients(self, grads_and_vars):
            return list(grads_and_vars)

    return Replicated.from_config(optimizer.get_config())


class ReplicatedModel(keras.Model):
    """The spec's model under a strategy, trained on one contiguous shard of each global batch per replica."""

    def __init__(self, inner: keras.Model, loss: str):
        super().__init__()
        self.inner, self.loss_name = inner, loss

    def call(self, x, training=False):
        return self.inner(x, training=training)

    def _global_loss(self, y, pred):
        """(this replica's part of the global batch's mean loss, the global mean, this shard's size)."""
        ctx = tf.distribute.get_replica_context()
        err = tf.square(y - pred) if self.loss_name == "mse" else tf.abs(y - pred)
        count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.size(err), err.dtype))
        part = tf.reduce_sum(err) / count
        return part, ctx.all_reduce(tf.distribute.ReduceOp.SUM, part), tf.shape(y)[0]

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
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
        return self.compute_metrics(x, y, pred, sample_weight=None)


def replicate(spec: s.Spec, model: keras.Model, plan: s.Plan, compile_model) -> ReplicatedModel:
    """A copy of `model` (its weights) built under the strategy and compiled for replicated training."""
    refuse_dropout(spec)
    with _strategy.scope():
        inner = s.get_backend("keras").build(spec)
        inner.set_weights(model.get_weights())
        for layer in inner._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True  # statistics over the global batch
        replicated = ReplicatedModel(inner, plan.loss)
        compile_model(replicated, spec, plan)
        replicated.optimizer = _replicated_optimizer(replicated.optimizer)
    return replicated


def dataset(split: s.Split, plan: s.Plan) -> tf.distribute.DistributedDataset:
    """Every epoch's global batches in the plan's order, each as one contiguous shard per replica:
    a pipeline (one per worker) yields its replicas' shards in turn, which the strategy hands to
    its replicas in that order."""
    world = _strategy.num_replicas_in_sync
    dtype = split.x.dtype

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_pipeline = world // context.num_input_pipelines
        replicas = range(context.input_pipeline_id * per_pipeline, (context.input_pipeline_id + 1) * per_pipeline)

        def shards():
            n, bs = len(split.x), plan.batch_size
            for epoch in range(plan.epochs):
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
    own evaluate under a strategy cannot build on replicas' shards of unequal size)."""

    def __init__(self, split: s.Split, loss: str, metrics: tuple[str, ...], batch: int):
        super().__init__()
        self.split, self.names, self.batch = split, (loss, *metrics), batch

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        x, y = self.split.x, self.split.y
        pred = np.concatenate([keras.ops.convert_to_numpy(self.model.inner(x[i : i + self.batch], training=False)) for i in range(0, len(x), self.batch)])
        for i, name in enumerate(self.names):
            logs["val_loss" if i == 0 else f"val_{name}"] = _score(name, y, pred)


def _score(name: str, y: np.ndarray, pred: np.ndarray) -> float:
    if name == "mae":
        return float(np.mean(np.abs(y - pred)))
    if name == "last_time_step_mse" and pred.ndim == 3:
        y, pred = y[:, -1], pred[:, -1]
    return float(np.mean(np.square(y - pred)))
