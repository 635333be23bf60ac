"""The torch backend: every node against the core, fast paths against the loop, and Keras's exact mathematics."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import check_node, spec_of

import seqspec

torch = pytest.importorskip("torch")
backend = seqspec.get_backend("torch")

RECURRENT = ["simple_rnn", "lstm", "gru"]


def _x(shape, dtype="float64", seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- every node against the core: shapes, parameter counts, canonical weights -------------------


def test_every_node_has_a_builder_and_a_weight_map():
    assert seqspec.missing_nodes(backend) == []


NODE_CASES = [
    ([{"type": "simple_rnn", "units": 5}], [None, 3]),
    ([{"type": "simple_rnn", "units": 5, "activation": "relu", "return_sequences": True, "use_bias": False}], [None, 3]),
    ([{"type": "simple_rnn", "units": 4, "activation": "sigmoid", "dropout": 0.2, "recurrent_dropout": 0.3}], [None, 3]),
    ([{"type": "lstm", "units": 5, "return_sequences": True}], [None, 3]),
    ([{"type": "lstm", "units": 5, "use_bias": False, "unit_forget_bias": False}], [None, 3]),
    ([{"type": "lstm", "units": 4, "activation": "relu", "recurrent_activation": "hard_sigmoid"}], [None, 2]),
    ([{"type": "gru", "units": 5}], [None, 3]),
    ([{"type": "gru", "units": 5, "reset_after": False, "return_sequences": True}], [None, 3]),
    ([{"type": "gru", "units": 5, "use_bias": False}], [None, 3]),
    ([{"type": "gru", "units": 4, "reset_after": False, "use_bias": False, "activation": "elu"}], [None, 3]),
    ([{"type": "rnn", "cell": {"type": "simple_rnn", "units": 4}}], [None, 3]),
    ([{"type": "rnn", "cell": {"type": "lstm", "units": 4}, "return_sequences": True}], [None, 3]),
    ([{"type": "rnn", "cell": {"type": "gru", "units": 4, "reset_after": False}}], [None, 3]),
    ([{"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 4, "epsilon": 0.01}, "return_sequences": True}], [None, 3]),
    ([{"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 4, "use_bias": False, "activation": "relu"}}], [None, 3]),
    ([{"type": "rnn", "cell": {"type": "peephole_lstm", "units": 4}}], [None, 3]),
    ([{"type": "rnn", "cell": {"type": "peephole_lstm", "units": 4, "use_bias": False}, "return_sequences": True}], [None, 3]),
    ([{"type": "bidirectional", "layer": {"type": "lstm", "units": 4, "return_sequences": True}}], [None, 3]),
    ([{"type": "bidirectional", "layer": {"type": "gru", "units": 4}, "merge_mode": "sum"}], [None, 3]),
    ([{"type": "bidirectional", "layer": {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 3}}, "merge_mode": "ave"}], [None, 3]),
    ([{"type": "dense", "units": 4}], [6]),
    ([{"type": "dense", "units": 4, "activation": "softmax", "use_bias": False}], [None, 3]),
    ([{"type": "time_distributed", "layer": {"type": "dense", "units": 2, "activation": {"name": "leaky_relu", "negative_slope": 0.1}}}], [None, 3]),
    ([{"type": "time_distributed", "layer": {"type": "activation", "activation": "softmax"}}], [None, 3]),
    ([{"type": "time_distributed", "layer": {"type": "dropout", "rate": 0.5}}], [None, 3]),
    ([{"type": "flatten"}, {"type": "dense", "units": 2}], [5, 3]),
    ([{"type": "repeat_vector", "n": 4}, {"type": "lstm", "units": 2}], [3]),
    ([{"type": "dropout", "rate": 0.3}, {"type": "activation", "activation": "gelu"}], [None, 3]),
    ([{"type": "batch_norm"}], [None, 3]),
    ([{"type": "batch_norm", "momentum": 0.9, "epsilon": 0.01}], [4]),
    ([{"type": "layer_norm"}], [None, 3]),
    ([{"type": "layer_norm", "epsilon": 0.0001}], [4]),
    ([{"type": "conv1d", "filters": 4, "kernel_size": 3}], [None, 3]),
    ([{"type": "conv1d", "filters": 4, "kernel_size": 3, "strides": 2, "padding": "same", "activation": "relu"}], [None, 3]),
    ([{"type": "conv1d", "filters": 4, "kernel_size": 2, "padding": "causal", "dilation_rate": 3, "use_bias": False}], [None, 3]),
    ([{"type": "max_pool1d", "pool_size": 2}], [None, 3]),
    ([{"type": "max_pool1d", "pool_size": 3, "strides": 2, "padding": "same"}], [None, 3]),
    ([{"type": "avg_pool1d", "pool_size": 2}], [None, 3]),
    ([{"type": "avg_pool1d", "pool_size": 3, "strides": 2, "padding": "same"}], [None, 3]),
    ([{"type": "global_max_pool1d"}], [None, 3]),
    ([{"type": "global_avg_pool1d"}], [None, 3]),
    ([{"type": "wavenet", "filters": 4}], [None, 3]),
    ([{"type": "wavenet", "filters": 4, "kernel_size": 3, "dilation_rates": [1, 2], "repeats": 2, "activation": "tanh"}], [None, 3]),
    ([{"type": "wavenet", "filters": 4, "gated": True, "dilation_rates": [1, 2, 4]}], [None, 3]),
    ([{"type": "conv1d", "filters": 4, "kernel_size": 3}, {"type": "batch_norm"}, {"type": "max_pool1d", "pool_size": 2}, {"type": "global_max_pool1d"}], [None, 3]),
    ([{"type": "conv1d", "filters": 6, "kernel_size": 3, "groups": 3, "strides": 2, "padding": "same"}], [None, 3]),
    ([{"type": "zero_padding1d", "padding": 2}, {"type": "conv1d", "filters": 2, "kernel_size": 3}, {"type": "cropping1d"}], [None, 3]),
    ([{"type": "cropping1d", "cropping": [2, 0]}, {"type": "upsampling1d"}], [None, 3]),
    ([{"type": "masking", "mask_value": 0.5}, {"type": "gru", "units": 3, "go_backwards": True}], [None, 3]),
    ([{"type": "embedding", "input_dim": 11, "output_dim": 4, "mask_zero": True}, {"type": "lstm", "units": 3}], {"shape": [None], "dtype": "int32"}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layers,shape", NODE_CASES, ids=lambda v: "-".join(str(layer.get("type")) for layer in v) if isinstance(v, list) and v and isinstance(v[0], dict) else None)
def test_node_against_core(layers, shape, dtype):
    check_node("torch", layers, shape, dtype=dtype)


def test_parameter_counts_equal_keras_despite_torch_bias_pairs():
    spec = spec_of([{"type": "lstm", "units": 8}, {"type": "dense", "units": 1}], [None, 3])
    model = backend.build(spec)
    names = {n for n, _ in model.named_parameters()}
    assert "layers.0.cell.lstm.bias_hh_l0" not in names  # a zero buffer, not a parameter
    assert backend.count_params(model) == (4 * 8 * (3 + 8) + 4 * 8 + 9, 0)


def test_training_output_has_the_inference_shape_and_keeps_batch_norm_statistics():
    spec = spec_of([{"type": "lstm", "units": 4, "dropout": 0.5, "recurrent_dropout": 0.5, "return_sequences": True}, {"type": "batch_norm"}], [None, 3])
    model = backend.build(spec)
    x = _x((2, 6, 3), "float32")
    before = backend.get_weights(model, spec)
    y = backend.training_output(model, x, seed=3)
    assert y.shape == backend.predict(model, x).shape
    np.testing.assert_array_equal(y, backend.training_output(model, x, seed=3))
    for name, value in backend.get_weights(model, spec).items():
        np.testing.assert_array_equal(value, before[name])
    assert not model.training


# --- fast paths against the plain loop, same weights -------------------------------------------


FUSED_CASES = [
    {"type": "simple_rnn", "units": 5},
    {"type": "simple_rnn", "units": 5, "activation": "relu", "use_bias": False},
    {"type": "lstm", "units": 5},
    {"type": "lstm", "units": 5, "use_bias": False},
    {"type": "gru", "units": 5},
    {"type": "gru", "units": 5, "use_bias": False},
]


@pytest.mark.parametrize("layer", FUSED_CASES, ids=lambda d: f"{d['type']}-{d.get('activation', 'tanh')}-bias{d.get('use_bias', True)}")
def test_fused_kernel_equals_loop(layer):
    spec = spec_of([{**layer, "return_sequences": True}], [None, 3], dtype="float64")
    model = backend.build(spec)
    recurrent = model.layers[0]
    assert recurrent.cell.fusable
    x = _x((4, 9, 3))
    fused = backend.predict(model, x)
    recurrent.use_fused = False
    loop = backend.predict(model, x)
    assert np.max(np.abs(fused - loop)) <= 1e-9


@pytest.mark.parametrize("kind", RECURRENT)
def test_fused_input_dropout_equals_loop(kind):
    # With input dropout alone the same mask is drawn before the path is chosen.
    spec = spec_of([{"type": kind, "units": 4, "dropout": 0.4, "return_sequences": True}], [None, 3], dtype="float64")
    model = backend.build(spec)
    x = _x((4, 9, 3))
    fused = backend.training_output(model, x, seed=5)
    model.layers[0].use_fused = False
    loop = backend.training_output(model, x, seed=5)
    assert np.max(np.abs(fused - loop)) <= 1e-9
    assert np.max(np.abs(fused - backend.predict(model, x))) > 1e-3  # dropout did act


def test_fused_gradients_equal_loop():
    spec = spec_of([{"type": "lstm", "units": 4, "return_sequences": True}, {"type": "gru", "units": 3}], [None, 2], dtype="float64")
    model = backend.build(spec)
    x, r = _x((3, 5, 2)), _x((3, 3), seed=2)
    y1, dx1, dw1 = backend.gradients(model, spec, x, r)
    for layer in model.layers:
        layer.use_fused = False
    y2, dx2, dw2 = backend.gradients(model, spec, x, r)
    assert np.max(np.abs(dx1 - dx2)) <= 1e-9
    assert sorted(dw1) == sorted(n for n in seqspec.layout(spec))
    for name in dw1:
        assert np.max(np.abs(dw1[name] - dw2[name])) <= 1e-9, name


def test_gradients_match_finite_differences():
    spec = spec_of([{"type": "conv1d", "filters": 3, "kernel_size": 2, "padding": "causal"}, {"type": "lstm", "units": 3}], [None, 2], dtype="float64")
    model = backend.build(spec)
    x, r = _x((2, 4, 2)), _x((2, 3), seed=2)
    _, dx, dw = backend.gradients(model, spec, x, r)
    eps = 1e-6
    e = np.zeros_like(x)
    e[1, 2, 0] = eps
    numeric = (np.sum(backend.predict(model, x + e) * r) - np.sum(backend.predict(model, x - e) * r)) / (2 * eps)
    assert abs(numeric - dx[1, 2, 0]) < 1e-7
    w = backend.get_weights(model, spec)
    name = "layers.1.recurrent_kernel_f"
    for sign in (1, -1):
        moved = dict(w)
        moved[name] = w[name].copy()
        moved[name][0, 1] += sign * eps
        backend.set_weights(model, spec, moved)
        if sign == 1:
            up = np.sum(backend.predict(model, x) * r)
        else:
            down = np.sum(backend.predict(model, x) * r)
    assert abs((up - down) / (2 * eps) - dw[name][0, 1]) < 1e-7


# --- dropout semantics: Keras 3's masks are per sequence ---------------------------------------


def _one_layer(layer: dict, units: int, n_in: int):
    spec = spec_of([{**layer, "units": units, "return_sequences": True}], [None, n_in], dtype="float64")
    return spec, backend.build(spec)


def test_recurrent_dropout_mask_is_one_per_sequence():
    # y(t) = x W + b + (y(t-1) * m) I, linear: a unit whose mask is 0 stays at x W + b at every
    # step; a kept unit keeps growing. A per-step mask would freeze a unit for some steps only.
    units, steps = 64, 12
    spec, model = _one_layer({"type": "simple_rnn", "activation": "linear", "recurrent_dropout": 0.5}, units, 1)
    w = backend.get_weights(model, spec)
    w["layers.0.kernel"] = np.ones_like(w["layers.0.kernel"])
    w["layers.0.recurrent_kernel"] = np.eye(units)
    backend.set_weights(model, spec, w)
    x = np.ones((8, steps, 1))
    y = backend.training_output(model, x, seed=0)
    frozen = np.all(y == 1.0, axis=1)  # [batch, units]: dropped at step 1, dropped at every step
    kept = np.all(np.diff(y, axis=1) > 0, axis=1)
    assert np.all(frozen ^ kept)
    assert 0.3 < frozen.mean() < 0.7
    assert len({tuple(row) for row in frozen}) > 1  # a new mask for each sequence in the batch


@pytest.mark.parametrize("kind", RECURRENT)
def test_input_dropout_mask_is_one_per_sequence(kind):
    # One input feature: a mask per sequence either drops the whole sequence (the output is the
    # model's on zeros) or doubles it (rate 0.5); a mask per step, or elementwise dropout, would
    # give a mixture that is neither.
    spec, model = _one_layer({"type": kind, "dropout": 0.5}, 3, 1)
    x = _x((16, 6, 1))
    y = backend.training_output(model, x, seed=1)
    dropped, doubled = backend.predict(model, 0 * x), backend.predict(model, 2 * x)
    is_dropped = np.max(np.abs(y - dropped), axis=(1, 2)) <= 1e-12
    is_doubled = np.max(np.abs(y - doubled), axis=(1, 2)) <= 1e-12
    assert np.all(is_dropped ^ is_doubled)
    assert is_dropped.any() and is_doubled.any()


def test_lstm_recurrent_dropout_takes_the_loop_in_training_only():
    spec, model = _one_layer({"type": "lstm", "recurrent_dropout": 0.3}, 4, 3)
    x = _x((2, 5, 3))
    calls = []
    model.layers[0].cell.loop = lambda *a, _orig=model.layers[0].cell.loop: calls.append(1) or _orig(*a)
    backend.predict(model, x)
    assert calls == []
    y = backend.training_output(model, x, seed=0)
    assert calls == [1] and np.all(np.isfinite(y))


# --- exactness against Keras --------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("keras")


def _gates(w, prefix, kind, gates):
    return np.concatenate([w[f"{prefix}{kind}_{g}"] for g in gates], axis=-1)


def _keras_recurrent_weights(node: dict, w: dict, prefix: str) -> list:
    """Canonical arrays in the order of a Keras recurrent layer's `weights`."""
    if node["type"] == "simple_rnn":
        return [w[prefix + "kernel"], w[prefix + "recurrent_kernel"]] + ([w[prefix + "bias"]] if node.get("use_bias", True) else [])
    gates = ("i", "f", "g", "o") if node["type"] == "lstm" else ("z", "r", "g")
    out = [_gates(w, prefix, "kernel", gates), _gates(w, prefix, "recurrent_kernel", gates)]
    if node.get("use_bias", True):
        bias = _gates(w, prefix, "bias", gates)
        if node["type"] == "gru" and node.get("reset_after", True):
            bias = np.stack([bias, _gates(w, prefix, "recurrent_bias", gates)])
        out.append(bias)
    return out


def _keras_recurrent(keras, node: dict):
    cls = {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[node["type"]]
    kwargs = {k: v for k, v in node.items() if k != "type"}
    return cls(dtype="float64", **kwargs)


KERAS_RECURRENT = [
    {"type": "simple_rnn", "units": 4, "return_sequences": True},
    {"type": "simple_rnn", "units": 4, "activation": "relu", "use_bias": False},
    {"type": "simple_rnn", "units": 4, "activation": "sigmoid", "return_sequences": True},
    {"type": "lstm", "units": 4, "return_sequences": True},
    {"type": "lstm", "units": 4, "use_bias": False},
    {"type": "lstm", "units": 4, "activation": "relu", "recurrent_activation": "hard_sigmoid", "return_sequences": True},
    {"type": "gru", "units": 4, "return_sequences": True},
    {"type": "gru", "units": 4, "use_bias": False},
    {"type": "gru", "units": 4, "reset_after": False, "return_sequences": True},
    {"type": "gru", "units": 4, "reset_after": False, "use_bias": False},
    {"type": "gru", "units": 4, "activation": "elu", "recurrent_activation": "hard_sigmoid"},
]


@pytest.mark.parametrize("node", KERAS_RECURRENT, ids=lambda d: "-".join(f"{v}" for k, v in d.items() if k != "units"))
def test_recurrent_equals_keras(keras, node):
    spec = spec_of([node], [None, 3], dtype="float64")
    model = backend.build(spec)
    w = backend.get_weights(model, spec)
    layer = _keras_recurrent(keras, node)
    x = _x((3, 8, 3))
    layer(x)
    layer.set_weights(_keras_recurrent_weights(node, w, "layers.0."))
    assert np.max(np.abs(np.asarray(layer(x)) - backend.predict(model, x))) <= 1e-9


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_equals_keras(keras, merge_mode, return_sequences):
    inner = {"type": "lstm", "units": 3, "return_sequences": return_sequences}
    spec = spec_of([{"type": "bidirectional", "layer": inner, "merge_mode": merge_mode}], [None, 2], dtype="float64")
    model = backend.build(spec)
    w = backend.get_weights(model, spec)
    layer = keras.layers.Bidirectional(_keras_recurrent(keras, inner), merge_mode=merge_mode, dtype="float64")
    x = _x((2, 6, 2))
    layer(x)
    layer.set_weights(_keras_recurrent_weights(inner, w, "layers.0.forward.") + _keras_recurrent_weights(inner, w, "layers.0.backward."))
    assert np.max(np.abs(np.asarray(layer(x)) - backend.predict(model, x))) <= 1e-9


def test_peephole_lstm_equals_numpy_reference():
    spec = spec_of([{"type": "rnn", "cell": {"type": "peephole_lstm", "units": 3}, "return_sequences": True}], [None, 2], dtype="float64")
    model = backend.build(spec)
    w = {k.removeprefix("layers.0."): v for k, v in backend.get_weights(model, spec).items()}
    x = _x((2, 5, 2))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h, c, outs = np.zeros((2, 3)), np.zeros((2, 3)), []
    for t in range(5):
        z = {g: x[:, t] @ w[f"kernel_{g}"] + h @ w[f"recurrent_kernel_{g}"] + w[f"bias_{g}"] for g in "ifgo"}
        i, f = sig(z["i"] + w["peephole_i"] * c), sig(z["f"] + w["peephole_f"] * c)
        c = f * c + i * np.tanh(z["g"])
        h = sig(z["o"] + w["peephole_o"] * c) * np.tanh(c)
        outs.append(h)
    assert np.max(np.abs(np.stack(outs, 1) - backend.predict(model, x))) <= 1e-12


def test_ln_simple_rnn_equals_numpy_reference():
    eps = 0.01
    spec = spec_of([{"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 3, "epsilon": eps}, "return_sequences": True}], [None, 2], dtype="float64")
    model = backend.build(spec)
    w = {k.removeprefix("layers.0."): v for k, v in backend.get_weights(model, spec).items()}
    w["gamma"], w["beta"] = _x((3,), seed=4), _x((3,), seed=5)
    backend.set_weights(model, spec, {"layers.0." + k: v for k, v in w.items()})
    x = _x((2, 5, 2))
    h, outs = np.zeros((2, 3)), []
    for t in range(5):
        z = x[:, t] @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"]
        z = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + eps)
        h = np.tanh(z * w["gamma"] + w["beta"])
        outs.append(h)
    assert np.max(np.abs(np.stack(outs, 1) - backend.predict(model, x))) <= 1e-12


CONV_CASES = [
    {"kernel_size": 3, "strides": s, "padding": p, "dilation_rate": 1} for s in (1, 2, 3) for p in ("valid", "same")
] + [
    {"kernel_size": 2, "strides": 1, "padding": "causal", "dilation_rate": 4},
    {"kernel_size": 3, "strides": 2, "padding": "causal", "dilation_rate": 1},
    {"kernel_size": 3, "strides": 3, "padding": "causal", "dilation_rate": 1},
    {"kernel_size": 4, "strides": 3, "padding": "same", "dilation_rate": 1},
    {"kernel_size": 3, "strides": 1, "padding": "same", "dilation_rate": 2},
]


@pytest.mark.parametrize("length", [10, 11])
@pytest.mark.parametrize("conv", CONV_CASES, ids=lambda d: "k{kernel_size}s{strides}{padding}d{dilation_rate}".format(**d))
def test_conv1d_equals_keras(keras, conv, length):
    spec = spec_of([{"type": "conv1d", "filters": 3, **conv}], [None, 2], dtype="float64")
    model = backend.build(spec)
    w = backend.get_weights(model, spec)
    w["layers.0.bias"] = _x((3,), seed=7)
    backend.set_weights(model, spec, w)
    layer = keras.layers.Conv1D(3, dtype="float64", **conv)
    x = _x((2, length, 2))
    layer(x)
    layer.set_weights([w["layers.0.kernel"], w["layers.0.bias"]])
    want = np.asarray(layer(x))
    got = backend.predict(model, x)
    assert got.shape == want.shape
    assert np.max(np.abs(want - got)) <= 1e-9


POOL_CASES = [(k, s, p) for k, s in ((2, None), (3, 2), (2, 3), (3, 3), (4, 2)) for p in ("valid", "same")]


@pytest.mark.parametrize("length", [10, 11])
@pytest.mark.parametrize("kind", ["max_pool1d", "avg_pool1d"])
@pytest.mark.parametrize("pool", POOL_CASES, ids=lambda p: f"k{p[0]}s{p[1]}{p[2]}")
def test_pool_equals_keras(keras, kind, pool, length):
    k, s, padding = pool
    spec = spec_of([{"type": kind, "pool_size": k, "strides": s, "padding": padding}], [None, 2], dtype="float64")
    cls = keras.layers.MaxPooling1D if kind == "max_pool1d" else keras.layers.AveragePooling1D
    x = _x((2, length, 2)) - 3.0  # negative, so a zero pad would win a max
    want = np.asarray(cls(k, strides=s, padding=padding, dtype="float64")(x))
    got = backend.predict(backend.build(spec), x)
    assert got.shape == want.shape
    assert np.max(np.abs(want - got)) <= 1e-9


def test_gated_wavenet_equals_keras_convolutions(keras):
    node = {"type": "wavenet", "filters": 3, "kernel_size": 2, "dilation_rates": [1, 2], "repeats": 2, "gated": True}
    spec = spec_of([node], [None, 2], dtype="float64")
    model = backend.build(spec)
    w = {k.removeprefix("layers.0."): v for k, v in backend.get_weights(model, spec).items()}
    rng = np.random.default_rng(8)
    w = {k: (rng.standard_normal(v.shape) * 0.3 if k.endswith("bias") else v) for k, v in w.items()}
    backend.set_weights(model, spec, {"layers.0." + k: v for k, v in w.items()})

    def conv(name, x, rate=1):
        kernel = w[name + ".kernel"]
        layer = keras.layers.Conv1D(kernel.shape[2], kernel.shape[0], padding="causal", dilation_rate=rate, dtype="float64")
        layer(x)
        layer.set_weights([kernel, w[name + ".bias"]])
        return np.asarray(layer(x))

    x = _x((2, 9, 2))
    h, skips = conv("input", x), 0.0
    for j, rate in enumerate([1, 2, 1, 2]):
        d = conv(f"stack{j}_d{rate}.dilated", h, rate)
        out = conv(f"stack{j}_d{rate}.residual", np.tanh(d[..., :3]) / (1 + np.exp(-d[..., 3:])))
        h, skips = h + out, skips + out
    assert np.max(np.abs(np.maximum(skips, 0) - backend.predict(model, x))) <= 1e-9


def test_simplified_wavenet_equals_conv1d_stack():
    x = _x((2, 12, 3))
    spec = spec_of([{"type": "wavenet", "filters": 4, "dilation_rates": [1, 2, 4], "activation": "tanh"}], [None, 3], dtype="float64")
    stack = spec_of([{"type": "conv1d", "filters": 4, "kernel_size": 2, "padding": "causal", "dilation_rate": r, "activation": "tanh"} for r in (1, 2, 4)], [None, 3], dtype="float64")
    w = backend.get_weights(backend.build(spec), spec)
    renamed = {f"layers.{j}.{part}": w[f"layers.0.stack{j}_d{r}.dilated.{part}"] for j, r in enumerate((1, 2, 4)) for part in ("kernel", "bias")}
    want = backend.predict(backend.build(stack, renamed), x)
    assert np.max(np.abs(want - backend.predict(backend.build(spec), x))) <= 1e-12


def test_batch_norm_equals_keras_in_inference_and_training(keras):
    spec = spec_of([{"type": "batch_norm", "momentum": 0.8, "epsilon": 0.01}], [None, 3], dtype="float64")
    model = backend.build(spec)
    stats = {"layers.0.gamma": _x((3,), seed=2), "layers.0.beta": _x((3,), seed=3), "layers.0.moving_mean": _x((3,), seed=4), "layers.0.moving_variance": np.array([0.5, 1.0, 2.0])}
    backend.set_weights(model, spec, stats)
    layer = keras.layers.BatchNormalization(momentum=0.8, epsilon=0.01, dtype="float64")
    x = _x((4, 5, 3))
    layer(x)
    layer.set_weights([stats[f"layers.0.{n}"] for n in ("gamma", "beta", "moving_mean", "moving_variance")])
    assert np.max(np.abs(np.asarray(layer(x)) - backend.predict(model, x))) <= 1e-9
    want_train = np.asarray(layer(x, training=True))
    model.train()
    got_train = model(torch.from_numpy(x)).detach().numpy()
    model.eval()
    assert np.max(np.abs(want_train - got_train)) <= 1e-9
    got_stats = backend.get_weights(model, spec)
    for name, value in zip(("moving_mean", "moving_variance"), layer.get_weights()[2:]):
        assert np.max(np.abs(got_stats[f"layers.0.{name}"] - value)) <= 1e-12, name  # biased variance, as Keras


ACTIVATION_CASES = ["linear", "relu", "tanh", "sigmoid", "softmax", "elu", "selu", "gelu", "softplus", "silu", "hard_sigmoid", "leaky_relu", {"name": "leaky_relu", "negative_slope": 0.05}]


@pytest.mark.parametrize("act", ACTIVATION_CASES, ids=str)
def test_activation_equals_keras(keras, act):
    spec = spec_of([{"type": "activation", "activation": act}], [None, 4], dtype="float64")
    x = _x((2, 5, 4)) * 15.0  # large values reach softplus's and hard_sigmoid's thresholds
    if isinstance(act, dict):
        want = np.asarray(keras.layers.LeakyReLU(negative_slope=act["negative_slope"], dtype="float64")(x))
    elif act == "leaky_relu":
        want = np.asarray(keras.layers.LeakyReLU(negative_slope=0.2, dtype="float64")(x))
    else:
        want = np.asarray(keras.layers.Activation(act, dtype="float64")(x))
    got = backend.predict(backend.build(spec), x)
    # Two TensorFlow kernels are not exact in float64, so they are checked against the exact
    # formula instead: its vectorised erf is off by up to ~5e-9, and tf.nn.leaky_relu keeps the
    # slope as a float32 attribute (0.2 becomes 0.200000003).
    if act == "gelu":
        exact = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))(x)
        assert np.max(np.abs(exact - got)) <= 1e-12
        assert np.max(np.abs(want - got)) <= 1e-8
    elif "leaky_relu" in str(act):
        slope = act["negative_slope"] if isinstance(act, dict) else 0.2
        np.testing.assert_array_equal(got, np.where(x >= 0, x, slope * x))
        np.testing.assert_allclose(got, want, rtol=1e-7)
    else:
        assert np.max(np.abs(want - got)) <= 1e-9


def test_dense_and_layer_norm_equal_keras(keras):
    spec = spec_of([{"type": "dense", "units": 3, "activation": "selu"}, {"type": "layer_norm", "epsilon": 0.01}], [None, 4], dtype="float64")
    model = backend.build(spec)
    w = backend.get_weights(model, spec)
    w["layers.1.gamma"], w["layers.1.beta"] = _x((3,), seed=3), _x((3,), seed=4)
    backend.set_weights(model, spec, w)
    dense = keras.layers.Dense(3, activation="selu", dtype="float64")
    norm = keras.layers.LayerNormalization(epsilon=0.01, dtype="float64")
    x = _x((2, 5, 4))
    y = dense(x)
    norm(y)
    dense.set_weights([w["layers.0.kernel"], w["layers.0.bias"]])
    norm.set_weights([w["layers.1.gamma"], w["layers.1.beta"]])
    assert np.max(np.abs(np.asarray(norm(dense(x))) - backend.predict(model, x))) <= 1e-9


# --- layout, weights, errors, saving ------------------------------------------------------------


def test_convolutions_stay_channels_first_between_layers():
    layers = [
        {"type": "conv1d", "filters": 4, "kernel_size": 3, "padding": "same"},
        {"type": "batch_norm"},
        {"type": "activation", "activation": "relu"},
        {"type": "max_pool1d", "pool_size": 2},
        {"type": "wavenet", "filters": 4, "dilation_rates": [1, 2]},
        {"type": "lstm", "units": 2, "return_sequences": True},
        {"type": "conv1d", "filters": 2, "kernel_size": 1},
    ]
    spec = spec_of(layers, [None, 3], dtype="float64")
    model = backend.build(spec)
    assert model.transpose_before == [True, False, False, False, False, True, True]
    x = _x((2, 10, 3))
    outs = backend.layer_outputs(model, x)
    info = seqspec.infer(spec)
    t = 10
    for out, li in zip(outs, info.layers):
        t = t if not li.time_ops else li.time_ops[-1].length(t)
        assert out.shape == (2, t, li.output_shape[-1])
    np.testing.assert_array_equal(outs[-1], backend.predict(model, x))


def test_set_weights_names_what_is_wrong():
    spec = spec_of([{"type": "dense", "units": 2}], [3])
    model = backend.build(spec)
    w = backend.get_weights(model, spec)
    with pytest.raises(ValueError, match="missing layers.0.bias"):
        backend.set_weights(model, spec, {"layers.0.kernel": w["layers.0.kernel"]})
    with pytest.raises(ValueError, match="unexpected layers.0.extra"):
        backend.set_weights(model, spec, {**w, "layers.0.extra": w["layers.0.bias"]})
    with pytest.raises(ValueError, match=r"layers.0.kernel is \(2, 3\), the spec needs \(3, 2\)"):
        backend.set_weights(model, spec, {**w, "layers.0.kernel": w["layers.0.kernel"].T})


def test_build_without_seed_uses_torch_init_and_given_weights_win():
    spec = spec_of([{"type": "gru", "units": 3, "reset_after": False}], [None, 2], seed=None)
    model = backend.build(spec)
    assert backend.count_params(model) == (seqspec.infer(spec).trainable_params, 0)
    seeded = seqspec.initial_weights(spec, seed=4)
    got = backend.get_weights(backend.build(spec, seeded), spec)
    for name, value in seeded.items():
        np.testing.assert_array_equal(got[name], value)


def test_a_node_without_builder_is_a_located_backend_error(monkeypatch):
    import seqspec_torch

    spec = spec_of([{"type": "dense", "units": 2}], [3])
    monkeypatch.delitem(seqspec_torch.BUILDERS, seqspec.Dense)
    with pytest.raises(seqspec.BackendError, match=r"layers\[0\].*torch.*'dense'"):
        backend.build(spec)


def test_saved_model_reloads_in_a_fresh_process_at_another_batch_and_length(tmp_path):
    layers = [
        {"type": "conv1d", "filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"},
        {"type": "batch_norm"},
        {"type": "bidirectional", "layer": {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 3}, "return_sequences": True}},
        {"type": "time_distributed", "layer": {"type": "dense", "units": 2, "activation": {"name": "leaky_relu", "negative_slope": 0.1}}},
    ]
    spec = spec_of(layers, [None, 2], dtype="float64")
    model = backend.build(spec)
    path = tmp_path / "model.pt"
    backend.save(model, spec, str(path))
    x = _x((5, 13, 2))
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import numpy as np, seqspec
        b = seqspec.get_backend("torch")
        m = b.load({str(path)!r})
        np.save({str(tmp_path / "y.npy")!r}, b.predict(m, np.load({str(tmp_path / "x.npy")!r})))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), backend.predict(model, x))
    assert torch.load(path, weights_only=True)["format"] == "seqspec-torch/1"


def test_predict_takes_any_array_numpy_can_make_contiguous():
    spec = spec_of([{"type": "gru", "units": 2}], [None, 3], dtype="float64")
    model = backend.build(spec)
    x = _x((2, 6, 3))
    reversed_view = x[:, ::-1]  # negative strides, which torch.as_tensor refuses
    np.testing.assert_array_equal(backend.predict(model, reversed_view), backend.predict(model, np.ascontiguousarray(reversed_view)))
    np.testing.assert_array_equal(backend.predict(model, np.asfortranarray(x)), backend.predict(model, x))
