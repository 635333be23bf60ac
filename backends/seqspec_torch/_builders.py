"""Builders: one function per spec node class, from the node and its Site to the torch module that computes it."""

from __future__ import annotations

import dataclasses
from typing import Optional

from torch import nn

import seqspec as s

from . import _cells as c
from . import _layers as ly

BACKEND_NAME = "torch"


@dataclasses.dataclass(frozen=True)
class Site(s.Site):
    """seqspec.Site, plus how a sequence arrives here: channels_last [B, T, F] or channels_first [B, F, T]."""

    layout: str = ly.CHANNELS_LAST


def build(node, site: Site) -> nn.Module:
    """The module of any node, through BUILDERS (a missing entry is a located BackendError)."""
    return BUILDERS.lookup(node, site.where())(node, site)


# --- recurrent cells and layers --------------------------------------------------------------


def simple_rnn_cell(node: s.SimpleRNNCell, site: Site) -> nn.Module:
    return c.SimpleRNNCell(node, site.n_in)


def lstm_cell(node: s.LSTMCell, site: Site) -> nn.Module:
    return c.LSTMCell(node, site.n_in)


def gru_cell(node: s.GRUCell, site: Site) -> nn.Module:
    return c.GRUCell(node, site.n_in) if node.reset_after else c.GRUResetBeforeCell(node, site.n_in)


def ln_simple_rnn_cell(node: s.LNSimpleRNNCell, site: Site) -> nn.Module:
    return c.LNSimpleRNNCell(node, site.n_in)


def peephole_lstm_cell(node: s.PeepholeLSTMCell, site: Site) -> nn.Module:
    return c.PeepholeLSTMCell(node, site.n_in)


def recurrent(node, site: Site, backwards: Optional[bool] = None, zero_output_for_mask: bool = False) -> c.Recurrent:
    """simple_rnn, lstm, gru and rnn: the layer's cell (seqspec's `cell_node`) run over time,
    reading backwards with go_backwards (or as `backwards` says, for Bidirectional's passes)."""
    cell_site = site.nested("cell") if isinstance(node, s.RNN) else site
    go_backwards = node.go_backwards if backwards is None else backwards
    return c.Recurrent(build(node.cell_node, cell_site), node.return_sequences, go_backwards, zero_output_for_mask)


def bidirectional(node: s.Bidirectional, site: Site) -> c.Bidirectional:
    # As Keras: a masked step outputs zeros when the passes return sequences (zero_output_for_mask).
    inner, layer = site.nested("layer"), node.layer
    forward = recurrent(layer, inner, False, layer.return_sequences)
    backward = recurrent(layer, inner, True, layer.return_sequences)
    return c.Bidirectional(forward, backward, node.merge_mode)


# --- feed-forward layers ---------------------------------------------------------------------


def dense(node: s.Dense, site: Site) -> ly.Dense:
    return ly.Dense(node, site.n_in)


def time_distributed(node: s.TimeDistributed, site: Site) -> ly.TimeDistributed:
    return ly.TimeDistributed(build(node.layer, site.nested("layer")))


def flatten(node: s.Flatten, site: Site) -> ly.Flatten:
    return ly.Flatten()


def repeat_vector(node: s.RepeatVector, site: Site) -> ly.RepeatVector:
    return ly.RepeatVector(node)


def dropout(node: s.Dropout, site: Site) -> ly.Dropout:
    return ly.Dropout(node)


def activation(node: s.ActivationLayer, site: Site) -> ly.Activation:
    return ly.Activation(node)


def batch_norm(node: s.BatchNorm, site: Site) -> ly.BatchNorm:
    # Normalise in whatever layout the sequence arrives, so conv -> batch_norm -> conv never transposes.
    channels_first = len(site.in_shape) == 3 and site.layout == ly.CHANNELS_FIRST
    return ly.BatchNorm(node, site.n_in, channel_axis=1 if channels_first else -1)


def layer_norm(node: s.LayerNorm, site: Site) -> ly.LayerNorm:
    return ly.LayerNorm(node, site.n_in)


# --- convolutional layers --------------------------------------------------------------------


def conv1d(node: s.Conv1D, site: Site) -> ly.Conv1d:
    return ly.Conv1d(site.n_in, node.filters, node.kernel_size, node.strides, node.padding, node.dilation_rate, node.activation, node.use_bias, node.groups)


def max_pool1d(node: s.MaxPool1D, site: Site) -> ly.MaxPool1d:
    return ly.MaxPool1d(node)


def avg_pool1d(node: s.AvgPool1D, site: Site) -> ly.AvgPool1d:
    return ly.AvgPool1d(node)


def global_max_pool1d(node: s.GlobalMaxPool1D, site: Site) -> ly.GlobalPool:
    return ly.GlobalPool("max", site.layout)


def global_avg_pool1d(node: s.GlobalAvgPool1D, site: Site) -> ly.GlobalPool:
    return ly.GlobalPool("mean", site.layout)


def wavenet(node: s.WaveNet, site: Site) -> ly.WaveNet:
    # Gated: the block's convolutions are linear, the gate supplies the nonlinearity.
    act = "linear" if node.gated else node.activation
    convs = [
        ly.Conv1d(conv.in_channels, conv.filters, conv.kernel_size, padding="causal", dilation_rate=conv.dilation_rate, activation=act)
        for conv in node.convolutions(site.n_in)
    ]
    return ly.WaveNet(convs, node.gated, node.filters)


# --- padding, cropping and upsampling along time -------------------------------------------------


def zero_padding1d(node: s.ZeroPadding1D, site: Site) -> ly.TimePad:
    return ly.TimePad(node.padding, site.layout)


def cropping1d(node: s.Cropping1D, site: Site) -> ly.TimePad:
    return ly.TimePad((-node.cropping[0], -node.cropping[1]), site.layout)


def upsampling1d(node: s.UpSampling1D, site: Site) -> ly.UpSampling1d:
    return ly.UpSampling1d(node.size, site.layout)


# --- variable-length sequences and tokens ------------------------------------------------------------


def masking(node: s.Masking, site: Site) -> ly.Masking:
    return ly.Masking(node)


def embedding(node: s.Embedding, site: Site) -> ly.Embedding:
    return ly.Embedding(node)


BUILDERS: s.Table = s.Table(
    BACKEND_NAME,
    "builder",
    "BUILDERS",
    __name__,
    {
        s.SimpleRNNCell: simple_rnn_cell,
        s.LSTMCell: lstm_cell,
        s.GRUCell: gru_cell,
        s.LNSimpleRNNCell: ln_simple_rnn_cell,
        s.PeepholeLSTMCell: peephole_lstm_cell,
        s.SimpleRNN: recurrent,
        s.LSTM: recurrent,
        s.GRU: recurrent,
        s.RNN: recurrent,
        s.Bidirectional: bidirectional,
        s.Dense: dense,
        s.TimeDistributed: time_distributed,
        s.Flatten: flatten,
        s.RepeatVector: repeat_vector,
        s.Dropout: dropout,
        s.ActivationLayer: activation,
        s.BatchNorm: batch_norm,
        s.LayerNorm: layer_norm,
        s.Conv1D: conv1d,
        s.MaxPool1D: max_pool1d,
        s.AvgPool1D: avg_pool1d,
        s.GlobalMaxPool1D: global_max_pool1d,
        s.GlobalAvgPool1D: global_avg_pool1d,
        s.WaveNet: wavenet,
        s.ZeroPadding1D: zero_padding1d,
        s.Cropping1D: cropping1d,
        s.UpSampling1D: upsampling1d,
        s.Masking: masking,
        s.Embedding: embedding,
    },
)


def build_model(spec: s.Spec) -> ly.Model:
    """The torch Model of `spec` (float32, torch's own initialisation): one module per spec layer,
    transposing between channels-last and channels-first only where the layout changes."""
    info = s.infer(spec)
    layers, flips, layouts = [], [], []
    layout = ly.CHANNELS_LAST
    for i, (node, li) in enumerate(zip(spec.layers, info.layers)):
        module = build(node, Site(BACKEND_NAME, spec, ("layers", i), li.input_shape, layout))
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
    return ly.Model(spec, layers, flips, layouts)
