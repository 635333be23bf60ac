"""The torch backend: builders and weight mappings per spec node, and the seqspec.Backend methods."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

import seqspec
from seqspec import BackendError
from seqspec import _spec as s

from . import _cells as c
from . import _layers as ly
from . import _weights as w

SAVE_FORMAT = "seqspec-torch/1"


@dataclass(frozen=True)
class Context:
    """What a layer builder knows besides its node: where it sits and what it receives."""

    spec: s.Spec
    index: int
    in_shape: tuple  # the core's input shape, (None, T, F) or (None, F)
    layout: str  # how a sequence arrives: channels_last or channels_first

    @property
    def n_in(self) -> int:
        return self.in_shape[-1]


def build_recurrent(node, ctx: Context) -> c.Recurrent:
    cell = node.cell if node.type == "rnn" else node
    return c.Recurrent(c.CELL_BUILDERS[cell.type](cell, ctx.n_in), node.return_sequences)


def build_bidirectional(node, ctx: Context) -> c.Bidirectional:
    inner = node.layer.cell if node.layer.type == "rnn" else node.layer
    make = c.CELL_BUILDERS[inner.type]
    seqs = node.layer.return_sequences
    return c.Bidirectional(c.Recurrent(make(inner, ctx.n_in), seqs), c.Recurrent(make(inner, ctx.n_in), seqs, reverse=True), node.merge_mode)


def build_dense(node, ctx: Context) -> ly.Dense:
    return ly.Dense(node, ctx.n_in)


def build_time_distributed(node, ctx: Context) -> ly.TimeDistributed:
    return ly.TimeDistributed(LAYER_BUILDERS[type(node.layer)](node.layer, ctx))


def build_flatten(node, ctx: Context) -> ly.Flatten:
    return ly.Flatten()


def build_repeat_vector(node, ctx: Context) -> ly.RepeatVector:
    return ly.RepeatVector(node)


def build_dropout(node, ctx: Context) -> ly.Dropout:
    return ly.Dropout(node)


def build_activation(node, ctx: Context) -> ly.Activation:
    return ly.Activation(node)


def build_batch_norm(node, ctx: Context) -> ly.BatchNorm:
    # Normalise in whatever layout the sequence arrives, so conv -> batch_norm -> conv never transposes.
    channels_first = len(ctx.in_shape) == 3 and ctx.layout == ly.CHANNELS_FIRST
    return ly.BatchNorm(node, ctx.n_in, channel_axis=1 if channels_first else -1)


def build_layer_norm(node, ctx: Context) -> ly.LayerNorm:
    return ly.LayerNorm(node, ctx.n_in)


def build_conv1d(node, ctx: Context) -> ly.Conv1d:
    return ly.build_conv(node, ctx.n_in)


def build_max_pool1d(node, ctx: Context) -> ly.MaxPool1d:
    return ly.MaxPool1d(node)


def build_avg_pool1d(node, ctx: Context) -> ly.AvgPool1d:
    return ly.AvgPool1d(node)


def build_global_max_pool1d(node, ctx: Context) -> ly.GlobalPool:
    return ly.GlobalPool("max", ctx.layout)


def build_global_avg_pool1d(node, ctx: Context) -> ly.GlobalPool:
    return ly.GlobalPool("mean", ctx.layout)


def build_wavenet(node, ctx: Context) -> ly.WaveNet:
    convs = []
    for name, k, rate, c_in, c_out in seqspec._weights.wavenet_conv_names(node):
        # Gated: the block's convolutions are linear, the gate supplies the nonlinearity.
        act = "linear" if node.gated else node.activation
        convs.append(ly.Conv1d(c_in or ctx.n_in, c_out, k, padding="causal", dilation_rate=rate, activation=act))
    return ly.WaveNet(convs, node.gated, node.filters)


LAYER_BUILDERS = {
    s.SimpleRNN: build_recurrent,
    s.LSTM: build_recurrent,
    s.GRU: build_recurrent,
    s.RNN: build_recurrent,
    s.Bidirectional: build_bidirectional,
    s.Dense: build_dense,
    s.TimeDistributed: build_time_distributed,
    s.Flatten: build_flatten,
    s.RepeatVector: build_repeat_vector,
    s.Dropout: build_dropout,
    s.ActivationLayer: build_activation,
    s.BatchNorm: build_batch_norm,
    s.LayerNorm: build_layer_norm,
    s.Conv1D: build_conv1d,
    s.MaxPool1D: build_max_pool1d,
    s.AvgPool1D: build_avg_pool1d,
    s.GlobalMaxPool1D: build_global_max_pool1d,
    s.GlobalAvgPool1D: build_global_avg_pool1d,
    s.WaveNet: build_wavenet,
}

CELL_BUILDERS = {
    s.SimpleRNNCell: c.build_simple_rnn_cell,
    s.LSTMCell: c.build_lstm_cell,
    s.GRUCell: c.build_gru_cell,
    s.LNSimpleRNNCell: c.build_ln_simple_rnn_cell,
    s.PeepholeLSTMCell: c.build_peephole_lstm_cell,
}

WEIGHT_MAPS = {
    s.SimpleRNN: w.recurrent_layer_slots,
    s.LSTM: w.recurrent_layer_slots,
    s.GRU: w.recurrent_layer_slots,
    s.RNN: w.recurrent_layer_slots,
    s.Bidirectional: w.bidirectional_slots,
    s.Dense: w.dense_slots,
    s.TimeDistributed: w.time_distributed_slots,
    s.Flatten: w.no_slots,
    s.RepeatVector: w.no_slots,
    s.Dropout: w.no_slots,
    s.ActivationLayer: w.no_slots,
    s.BatchNorm: w.batch_norm_slots,
    s.LayerNorm: w.layer_norm_slots,
    s.Conv1D: w.conv1d_slots,
    s.MaxPool1D: w.no_slots,
    s.AvgPool1D: w.no_slots,
    s.GlobalMaxPool1D: w.no_slots,
    s.GlobalAvgPool1D: w.no_slots,
    s.WaveNet: w.wavenet_slots,
    s.SimpleRNNCell: w.simple_rnn_slots,
    s.LSTMCell: w.lstm_slots,
    s.GRUCell: w.gru_slots,
    s.LNSimpleRNNCell: w.ln_simple_rnn_slots,
    s.PeepholeLSTMCell: w.peephole_lstm_slots,
}

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@contextlib.contextmanager
def _mode(model: nn.Module, training: bool):
    """Run in training or inference mode, then restore the model's previous mode."""
    was = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was)


class TorchBackend(seqspec.Backend):
    """Compiles a spec to a torch.nn.Module (see seqspec.Backend for the contract)."""

    name = "torch"
    extra = "torch"
    suffix = ".pt"
    builders = {**LAYER_BUILDERS, **CELL_BUILDERS}
    weight_maps = WEIGHT_MAPS

    def build(self, spec: s.Spec, weights=None) -> ly.Model:
        info = seqspec.infer(spec)
        layers, flips, layouts = [], [], []
        layout = ly.CHANNELS_LAST
        for i, (node, li) in enumerate(zip(spec.layers, info.layers)):
            builder = LAYER_BUILDERS.get(type(node))
            if builder is None:
                raise BackendError(f"{spec.where('layers', i)}: layers[{i}]: the torch backend cannot build a {node.type!r} layer")
            module = builder(node, Context(spec, i, li.input_shape, layout))
            sequence = len(li.input_shape) == 3
            flip = sequence and module.takes not in (ly.ANY, layout)
            if flip:
                layout = module.takes
            layout = layout if module.gives == ly.ANY else module.gives
            if len(li.output_shape) == 2:
                layout = ly.CHANNELS_LAST  # a vector has no layout; a later sequence starts channels-last
            layers.append(module)
            flips.append(flip)
            layouts.append(layout)
        model = ly.Model(spec, layers, flips, layouts).to(_DTYPES[spec.dtype])
        model.eval()
        if weights is not None:
            self.set_weights(model, spec, weights)
        elif spec.seed is not None:
            self.set_weights(model, spec, seqspec.initial_weights(spec))
        return model

    def get_weights(self, model: ly.Model, spec: s.Spec) -> dict[str, np.ndarray]:
        return {slot.name: slot.get().cpu().numpy().copy() for slot in w.model_slots(model, spec)}

    def set_weights(self, model: ly.Model, spec: s.Spec, weights: dict[str, np.ndarray]) -> None:
        expected = seqspec.layout(spec)
        missing = [n for n in expected if n not in weights]
        extra = [n for n in weights if n not in expected]
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
            raise ValueError(f"weights for {spec.name!r} do not match its layout: {'; '.join(parts)}")
        for name, shape in expected.items():
            got = tuple(np.shape(weights[name]))
            if got != shape:
                raise ValueError(f"weight {name!r} has shape {list(got)}, the layout of {spec.name!r} says {list(shape)}")
        for slot in w.model_slots(model, spec):
            slot.set(torch.as_tensor(np.asarray(weights[slot.name]), dtype=slot.tensor.dtype))

    def count_params(self, model: nn.Module) -> tuple[int, int]:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        # Persistent buffers are the batch-norm moving statistics; the zero bias_hh of
        # nn.RNN/nn.LSTM is a non-persistent buffer and no weight of the spec.
        params = {id(p) for p in model.parameters()}
        buffers = sum(t.numel() for t in model.state_dict(keep_vars=True).values() if id(t) not in params)
        return trainable, frozen + buffers

    def _tensor(self, model: ly.Model, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=_DTYPES[model.spec.dtype])

    def predict(self, model: ly.Model, x: np.ndarray) -> np.ndarray:
        with _mode(model, False), torch.inference_mode():
            return model(self._tensor(model, x)).numpy().copy()

    def layer_outputs(self, model: ly.Model, x: np.ndarray) -> list[np.ndarray]:
        with _mode(model, False), torch.inference_mode():
            return [y.numpy().copy() for y in model.layer_outputs(self._tensor(model, x))]

    def gradients(self, model: ly.Model, spec: s.Spec, x: np.ndarray, r: np.ndarray):
        xt = self._tensor(model, x).requires_grad_(True)
        model.zero_grad(set_to_none=True)
        # cuDNN refuses backward through its RNN kernel in eval mode; the native kernel does not.
        with _mode(model, False), torch.backends.cudnn.flags(enabled=False):
            y = model(xt)
            (y * self._tensor(model, r)).sum().backward()
        grads = {}
        for slot in w.model_slots(model, spec):
            if slot.trainable:
                g = slot.grad()
                grads[slot.name] = np.zeros(slot.get().shape, dtype=spec.dtype) if g is None else g.numpy().copy()
        model.zero_grad(set_to_none=True)
        return y.detach().numpy().copy(), xt.grad.numpy().copy(), grads

    def training_output(self, model: ly.Model, x: np.ndarray, seed: int) -> np.ndarray:
        # A look at training mode, not a training step: the batch-norm moving statistics it
        # updates are put back, and the global torch RNG is left as it was.
        buffers = [(b, b.clone()) for b in model.buffers()]
        with _mode(model, True), torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            y = model(self._tensor(model, x)).numpy().copy()
            for b, saved in buffers:
                b.copy_(saved)
        return y

    def save(self, model: ly.Model, spec: s.Spec, path: str) -> None:
        weights = {name: torch.from_numpy(a) for name, a in self.get_weights(model, spec).items()}
        torch.save({"format": SAVE_FORMAT, "spec": spec.model_dump(mode="json"), "weights": weights}, path)

    def load(self, path: str) -> ly.Model:
        # weights_only: the file holds tensors, strings and numbers, never pickled code.
        d: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(d, dict) or d.get("format") != SAVE_FORMAT:
            raise BackendError(f"{path}: not a seqspec torch model (expected format {SAVE_FORMAT!r})")
        spec = s.Spec.model_validate(d["spec"])
        return self.build(spec, {name: t.numpy() for name, t in d["weights"].items()})


backend = TorchBackend()
