"""The Keras backend: every node against the core, NumPy references of the math, padding rules, save/reload, gradients."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import seqspec
from helpers import check_node, spec_of

pytest.importorskip("keras")
pytest.importorskip("tensorflow")

import keras  # noqa: E402

BACKEND = seqspec.get_backend("keras")
DTYPES = ("float32", "float64")
SEQ = [None, 3]


# --- every node against the core ---------------------------------------------------------------


def test_every_node_has_a_builder_and_a_weight_mapping():
    assert seqspec.missing_nodes(BACKEND) == []
    for cls in seqspec.LAYER_CLASSES + seqspec.CELL_CLASSES:
        assert cls in BACKEND.builders and (cls in BACKEND.weight_maps or not seqspec.has_arrays(cls))


LEAKY = {"name": "leaky_relu", "negative_slope": 0.1}

NODES = {
    "simple_rnn": ([{"type": "simple_rnn", "units": 4}], SEQ),
    "simple_rnn_seq_nobias_leaky": (
        [{"type": "simple_rnn", "units": 4, "return_sequences": True, "use_bias": False, "activation": LEAKY}],
        SEQ,
    ),
    "simple_rnn_dropout": ([{"type": "simple_rnn", "units": 3, "dropout": 0.2, "recurrent_dropout": 0.3}], SEQ),
    "lstm": ([{"type": "lstm", "units": 4, "return_sequences": True}], SEQ),
    "lstm_keys": (
        [{"type": "lstm", "units": 3, "use_bias": False, "unit_forget_bias": False, "activation": "relu",
          "recurrent_activation": "hard_sigmoid", "dropout": 0.1, "recurrent_dropout": 0.2}],
        SEQ,
    ),
    "lstm_no_forget_bias": ([{"type": "lstm", "units": 3, "unit_forget_bias": False}], SEQ),
    "gru_reset_after": ([{"type": "gru", "units": 4, "return_sequences": True}], SEQ),
    "gru_reset_before": ([{"type": "gru", "units": 4, "reset_after": False}], SEQ),
    "gru_nobias": ([{"type": "gru", "units": 3, "use_bias": False, "recurrent_activation": "sigmoid", "activation": "elu"}], SEQ),
    "rnn_simple_rnn": ([{"type": "rnn", "cell": {"type": "simple_rnn", "units": 4}}], SEQ),
    "rnn_lstm": ([{"type": "rnn", "cell": {"type": "lstm", "units": 4, "unit_forget_bias": False}, "return_sequences": True}], SEQ),
    "rnn_gru_before": ([{"type": "rnn", "cell": {"type": "gru", "units": 4, "reset_after": False}}], SEQ),
    "rnn_gru_after": ([{"type": "rnn", "cell": {"type": "gru", "units": 4, "dropout": 0.1}}], SEQ),
    "rnn_ln_simple_rnn": ([{"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 4, "epsilon": 0.01}}], SEQ),
    "rnn_ln_simple_rnn_nobias": (
        [{"type": "rnn", "return_sequences": True,
          "cell": {"type": "ln_simple_rnn", "units": 3, "use_bias": False, "activation": "leaky_relu"}}],
        SEQ,
    ),
    "rnn_peephole_lstm": ([{"type": "rnn", "cell": {"type": "peephole_lstm", "units": 4}, "return_sequences": True}], SEQ),
    "rnn_peephole_lstm_keys": (
        [{"type": "rnn", "cell": {"type": "peephole_lstm", "units": 3, "use_bias": False, "unit_forget_bias": False,
                                  "dropout": 0.2, "recurrent_dropout": 0.2}}],
        SEQ,
    ),
    "bidirectional_concat": ([{"type": "bidirectional", "layer": {"type": "lstm", "units": 3, "return_sequences": True}}], SEQ),
    "bidirectional_sum": ([{"type": "bidirectional", "merge_mode": "sum", "layer": {"type": "gru", "units": 3}}], SEQ),
    "bidirectional_ave_peephole": (
        [{"type": "bidirectional", "merge_mode": "ave", "layer": {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 3}}}],
        SEQ,
    ),
    "bidirectional_mul_ln": (
        [{"type": "bidirectional", "merge_mode": "mul",
          "layer": {"type": "rnn", "return_sequences": True, "cell": {"type": "ln_simple_rnn", "units": 3}}}],
        SEQ,
    ),
    "dense_sequence": ([{"type": "dense", "units": 5, "activation": "gelu"}], SEQ),
    "dense_vector_nobias": ([{"type": "dense", "units": 5, "use_bias": False, "activation": "softmax"}], [6]),
    "time_distributed_dense": ([{"type": "time_distributed", "layer": {"type": "dense", "units": 2, "activation": "selu"}}], SEQ),
    "time_distributed_activation": ([{"type": "time_distributed", "layer": {"type": "activation", "activation": LEAKY}}], SEQ),
    "time_distributed_dropout": ([{"type": "time_distributed", "layer": {"type": "dropout", "rate": 0.5}}], SEQ),
    "flatten_repeat": ([{"type": "flatten"}, {"type": "repeat_vector", "n": 4}], [5, 2]),
    "dropout_activation": ([{"type": "dropout", "rate": 0.3}, {"type": "activation", "activation": "softplus"}], SEQ),
    "activations": ([{"type": "activation", "activation": a} for a in seqspec.ACTIVATIONS], SEQ),
    "batch_norm": ([{"type": "batch_norm"}], SEQ),
    "batch_norm_keys_vector": ([{"type": "batch_norm", "momentum": 0.5, "epsilon": 0.1}], [4]),
    "layer_norm": ([{"type": "layer_norm", "epsilon": 0.01}], SEQ),
    "conv1d_valid": ([{"type": "conv1d", "filters": 4, "kernel_size": 3}], SEQ),
    "conv1d_same_strided": ([{"type": "conv1d", "filters": 4, "kernel_size": 4, "strides": 3, "padding": "same", "use_bias": False}], SEQ),
    "conv1d_causal_dilated": ([{"type": "conv1d", "filters": 2, "kernel_size": 2, "padding": "causal", "dilation_rate": 3, "activation": "tanh"}], SEQ),
    "conv1d_causal_strided": ([{"type": "conv1d", "filters": 2, "kernel_size": 3, "padding": "causal", "strides": 2}], [9, 3]),
    "pools": (
        [{"type": "max_pool1d", "pool_size": 2}, {"type": "avg_pool1d", "pool_size": 2, "strides": 1, "padding": "same"}],
        [9, 3],
    ),
    "pools_same_strided": (
        [{"type": "avg_pool1d", "pool_size": 3, "strides": 2, "padding": "same"}, {"type": "max_pool1d", "pool_size": 2, "padding": "same"}],
        SEQ,
    ),
    "global_max": ([{"type": "global_max_pool1d"}], SEQ),
    "global_avg": ([{"type": "global_avg_pool1d"}], SEQ),
    "wavenet": ([{"type": "wavenet", "filters": 4}], SEQ),
    "wavenet_keys": ([{"type": "wavenet", "filters": 3, "kernel_size": 3, "dilation_rates": [1, 2], "repeats": 2, "activation": LEAKY}], SEQ),
    "wavenet_gated": ([{"type": "wavenet", "filters": 4, "gated": True, "dilation_rates": [1, 2, 4]}], SEQ),
    "wavenet_gated_repeats": ([{"type": "wavenet", "filters": 2, "gated": True, "kernel_size": 3, "dilation_rates": [1, 3], "repeats": 2}], [8, 2]),
    "conv1d_groups": ([{"type": "conv1d", "filters": 6, "kernel_size": 2, "groups": 3, "padding": "causal"}], [None, 3]),
    "zero_padding1d": ([{"type": "zero_padding1d", "padding": [2, 1]}], SEQ),
    "cropping1d": ([{"type": "cropping1d", "cropping": [1, 2]}], [9, 3]),
    "upsampling1d": ([{"type": "upsampling1d", "size": 3}], SEQ),
    "masking": ([{"type": "masking", "mask_value": 0.5}, {"type": "gru", "units": 3, "go_backwards": True}], SEQ),
    "embedding": ([{"type": "embedding", "input_dim": 11, "output_dim": 4, "mask_zero": True}, {"type": "lstm", "units": 3}], {"shape": [None], "dtype": "int32"}),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(NODES))
def test_node_matches_the_core(case, dtype):
    layers, shape = NODES[case]
    check_node("keras", layers, shape, dtype=dtype)


def test_every_layer_and_cell_type_is_covered_above():
    seen = set()

    def walk(node, kind):
        seen.add((kind, node["type"]))
        for key in ("layer", "cell"):
            if key in node:
                walk(node[key], key)

    for layers, _ in NODES.values():
        for layer in layers:
            walk(layer, "layer")
    layer_types = {cls.model_fields["type"].annotation.__args__[0] for cls in seqspec.LAYER_CLASSES}
    cell_types = {cls.model_fields["type"].annotation.__args__[0] for cls in seqspec.CELL_CLASSES}
    assert layer_types <= {t for kind, t in seen if kind == "layer"}
    assert cell_types <= {t for kind, t in seen if kind == "cell"}


def test_layers_are_built_in_the_spec_dtype_without_touching_keras_config():
    floatx = keras.config.floatx()
    spec, model, _ = check_node("keras", NODES["wavenet_gated"][0], SEQ, dtype="float64")
    assert keras.config.floatx() == floatx
    assert {keras.backend.standardize_dtype(v.dtype) for v in model.weights} == {"float64"}


def test_without_a_seed_keras_initialises_and_unit_forget_bias_is_honoured():
    for forget in (True, False):
        spec = spec_of([{"type": "lstm", "units": 3, "unit_forget_bias": forget}], SEQ, seed=None)
        w = BACKEND.get_weights(BACKEND.build(spec), spec)
        assert list(w) == list(seqspec.layout(spec))
        np.testing.assert_array_equal(w["layers.0.bias_f"], np.full(3, 1.0 if forget else 0.0, np.float32))
        assert np.abs(w["layers.0.kernel_i"]).max() > 0


# --- NumPy references of the math, from the canonical weights -----------------------------------


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def random_weights(spec, seed=3):
    """Canonical weights with every array random (biases too), so each mapping is exercised."""
    rng = np.random.default_rng(seed)
    return {name: 0.5 * rng.standard_normal(shape) for name, shape in seqspec.layout(spec).items()}


def ref_simple(w, x, p, layer_norm_eps=None):
    h = np.zeros((x.shape[0], w[p + "recurrent_kernel"].shape[0]))
    for t in range(x.shape[1]):
        z = x[:, t] @ w[p + "kernel"] + h @ w[p + "recurrent_kernel"] + w[p + "bias"]
        if layer_norm_eps is not None:
            mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
            z = (z - mu) / np.sqrt(var + layer_norm_eps) * w[p + "gamma"] + w[p + "beta"]
        h = np.tanh(z)
    return h


def ref_lstm(w, x, p, peephole=False):
    u = w[p + "recurrent_kernel_i"].shape[0]
    h = c = np.zeros((x.shape[0], u))
    hs = []
    for t in range(x.shape[1]):
        pre = {g: x[:, t] @ w[f"{p}kernel_{g}"] + h @ w[f"{p}recurrent_kernel_{g}"] + w[f"{p}bias_{g}"] for g in "ifgo"}
        peep = {g: (w[f"{p}peephole_{g}"] if peephole else 0.0) for g in "ifo"}
        i = sigmoid(pre["i"] + peep["i"] * c)
        f = sigmoid(pre["f"] + peep["f"] * c)
        c = f * c + i * np.tanh(pre["g"])
        o = sigmoid(pre["o"] + peep["o"] * c)
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs, 1)


def ref_gru(w, x, p, reset_after):
    u = w[p + "recurrent_kernel_z"].shape[0]
    h = np.zeros((x.shape[0], u))
    for t in range(x.shape[1]):
        xw = {g: x[:, t] @ w[f"{p}kernel_{g}"] + w[f"{p}bias_{g}"] for g in "zrg"}
        if reset_after:
            hu = {g: h @ w[f"{p}recurrent_kernel_{g}"] + w[f"{p}recurrent_bias_{g}"] for g in "zrg"}
            z, r = sigmoid(xw["z"] + hu["z"]), sigmoid(xw["r"] + hu["r"])
            g = np.tanh(xw["g"] + r * hu["g"])
        else:
            z = sigmoid(xw["z"] + h @ w[p + "recurrent_kernel_z"])
            r = sigmoid(xw["r"] + h @ w[p + "recurrent_kernel_r"])
            g = np.tanh(xw["g"] + (r * h) @ w[p + "recurrent_kernel_g"])
        h = z * h + (1 - z) * g
    return h


def ref_conv(x, kernel, bias, stride=1, dilation=1, pads=(0, 0)):
    """out[j] = sum_k xpad[j*stride + k*dilation] @ kernel[k] + bias, xpad = x padded (left, right) with zeros."""
    k = kernel.shape[0]
    xp = np.pad(x, ((0, 0), pads, (0, 0)))
    n = (xp.shape[1] - (k - 1) * dilation - 1) // stride + 1
    out = np.stack([sum(xp[:, j * stride + i * dilation] @ kernel[i] for i in range(k)) for j in range(n)], 1)
    return out + (0.0 if bias is None else bias)


def ref_causal(x, w, p, dilation):
    k = w[p + "kernel"].shape[0]
    return ref_conv(x, w[p + "kernel"], w[p + "bias"], dilation=dilation, pads=((k - 1) * dilation, 0))


def ref_gated_wavenet(w, x, p, rates, filters):
    h = ref_causal(x, w, p + "input.", 1)
    skips = 0.0
    for j, rate in enumerate(rates):
        a = ref_causal(h, w, f"{p}stack{j}_d{rate}.dilated.", rate)
        gate = np.tanh(a[..., :filters]) * sigmoid(a[..., filters:])
        s = ref_causal(gate, w, f"{p}stack{j}_d{rate}.residual.", 1)
        h, skips = h + s, skips + s
    return np.maximum(skips, 0.0)


REFERENCES = {
    "ln_simple_rnn": (
        [{"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 4, "epsilon": 0.05}}],
        lambda w, x: ref_simple(w, x, "layers.0.", layer_norm_eps=0.05),
    ),
    "simple_rnn": ([{"type": "simple_rnn", "units": 4}], lambda w, x: ref_simple(w, x, "layers.0.")),
    "lstm": ([{"type": "lstm", "units": 4, "return_sequences": True}], lambda w, x: ref_lstm(w, x, "layers.0.")),
    "peephole_lstm": (
        [{"type": "rnn", "return_sequences": True, "cell": {"type": "peephole_lstm", "units": 4}}],
        lambda w, x: ref_lstm(w, x, "layers.0.", peephole=True),
    ),
    "gru_reset_after": ([{"type": "gru", "units": 4}], lambda w, x: ref_gru(w, x, "layers.0.", True)),
    "gru_reset_before": ([{"type": "gru", "units": 4, "reset_after": False}], lambda w, x: ref_gru(w, x, "layers.0.", False)),
    "rnn_gru_reset_before": (
        [{"type": "rnn", "cell": {"type": "gru", "units": 4, "reset_after": False}}],
        lambda w, x: ref_gru(w, x, "layers.0.", False),
    ),
    "wavenet_gated": (
        [{"type": "wavenet", "filters": 3, "gated": True, "dilation_rates": [1, 2], "repeats": 2}],
        lambda w, x: ref_gated_wavenet(w, x, "layers.0.", [1, 2, 1, 2], 3),
    ),
    "wavenet_simple": (
        [{"type": "wavenet", "filters": 3, "kernel_size": 3, "dilation_rates": [1, 2], "activation": "tanh"}],
        lambda w, x: np.tanh(ref_causal(np.tanh(ref_causal(x, w, "layers.0.stack0_d1.dilated.", 1)), w, "layers.0.stack1_d2.dilated.", 2)),
    ),
}


@pytest.mark.parametrize("case", list(REFERENCES))
def test_math_matches_a_numpy_reference_in_float64(case):
    layers, reference = REFERENCES[case]
    spec = spec_of(layers, SEQ, dtype="float64")
    w = random_weights(spec)
    model = BACKEND.build(spec, w)
    x = np.random.default_rng(5).standard_normal((2, 6, 3))
    got = BACKEND.predict(model, x)
    want = reference(w, x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-9


def test_bidirectional_runs_the_backward_layer_on_reversed_time():
    layers = [{"type": "bidirectional", "layer": {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 3}}}]
    spec = spec_of(layers, SEQ, dtype="float64")
    w = random_weights(spec)
    x = np.random.default_rng(5).standard_normal((2, 6, 3))
    got = BACKEND.predict(BACKEND.build(spec, w), x)
    forward = ref_lstm(w, x, "layers.0.forward.", peephole=True)[:, -1]
    backward = ref_lstm(w, x[:, ::-1], "layers.0.backward.", peephole=True)[:, -1]
    assert np.abs(got - np.concatenate([forward, backward], -1)).max() <= 1e-9


def test_leaky_relu_slope_is_honoured_and_a_bare_name_means_0_2():
    spec = spec_of([{"type": "activation", "activation": LEAKY}, {"type": "activation", "activation": "leaky_relu"}], SEQ, dtype="float64")
    x = np.linspace(-3, 3, 18).reshape(1, 6, 3)
    first, second = BACKEND.layer_outputs(BACKEND.build(spec), x)
    np.testing.assert_allclose(first, np.where(x > 0, x, 0.1 * x), atol=1e-12)
    np.testing.assert_allclose(second, np.where(first > 0, first, 0.2 * first), atol=1e-12)


def test_batch_norm_and_layer_norm_use_their_keys():
    spec = spec_of([{"type": "batch_norm", "epsilon": 0.5}, {"type": "layer_norm", "epsilon": 0.25}], SEQ, dtype="float64")
    w = random_weights(spec)
    w["layers.0.moving_variance"] = np.abs(w["layers.0.moving_variance"]) + 0.1
    x = np.random.default_rng(2).standard_normal((2, 5, 3))
    bn, ln = BACKEND.layer_outputs(BACKEND.build(spec, w), x)
    p = "layers.0."
    want_bn = (x - w[p + "moving_mean"]) / np.sqrt(w[p + "moving_variance"] + 0.5) * w[p + "gamma"] + w[p + "beta"]
    np.testing.assert_allclose(bn, want_bn, atol=1e-12)
    want_ln = (bn - bn.mean(-1, keepdims=True)) / np.sqrt(bn.var(-1, keepdims=True) + 0.25) * w["layers.1.gamma"] + w["layers.1.beta"]
    np.testing.assert_allclose(ln, want_ln, atol=1e-12)


# --- padding rules -------------------------------------------------------------------------------


def tf_same_pads(t, kernel, stride, dilation=1):
    """TensorFlow's 'same': ceil(t / stride) outputs, the odd extra pad on the right."""
    span = (kernel - 1) * dilation + 1
    total = max((-(-t // stride) - 1) * stride + span - t, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("strides", [2, 3])
@pytest.mark.parametrize("length", [7, 8, 9, 10])
@pytest.mark.parametrize("kernel", [2, 3, 4])
def test_conv_same_with_strides_pads_as_tensorflow(strides, length, kernel):
    spec = spec_of([{"type": "conv1d", "filters": 2, "kernel_size": kernel, "strides": strides, "padding": "same"}], SEQ, dtype="float64")
    w = random_weights(spec)
    x = np.random.default_rng(length).standard_normal((2, length, 3))
    got = BACKEND.predict(BACKEND.build(spec, w), x)
    want = ref_conv(x, w["layers.0.kernel"], w["layers.0.bias"], stride=strides, pads=tf_same_pads(length, kernel, strides))
    assert got.shape == want.shape == (2, -(-length // strides), 2)
    assert np.abs(got - want).max() <= 1e-9


@pytest.mark.parametrize("length", [8, 9])
def test_causal_conv_with_strides_and_same_pools(length):
    layers = [
        {"type": "conv1d", "filters": 2, "kernel_size": 3, "strides": 2, "padding": "causal"},
        {"type": "max_pool1d", "pool_size": 3, "strides": 2, "padding": "same"},
    ]
    spec = spec_of(layers + [{"type": "avg_pool1d", "pool_size": 2, "padding": "same"}], SEQ, dtype="float64")
    w = random_weights(spec)
    x = np.random.default_rng(length).standard_normal((2, length, 3))
    conv, mx, avg = BACKEND.layer_outputs(BACKEND.build(spec, w), x)
    np.testing.assert_allclose(conv, ref_conv(x, w["layers.0.kernel"], w["layers.0.bias"], stride=2, pads=(2, 0)), atol=1e-12)

    def pool(a, size, stride, reduce, fill):
        left, right = tf_same_pads(a.shape[1], size, stride)
        padded = np.pad(a, ((0, 0), (left, right), (0, 0)), constant_values=np.nan)
        windows = [padded[:, j * stride : j * stride + size] for j in range(-(-a.shape[1] // stride))]
        # TensorFlow leaves padding out of both the max and the average's count.
        return np.stack([reduce(np.where(np.isnan(win), fill, win), win) for win in windows], 1)

    want_mx = pool(conv, 3, 2, lambda v, win: v.max(1), -np.inf)
    want_avg = pool(want_mx, 2, 2, lambda v, win: v.sum(1) / (~np.isnan(win)).sum(1), 0.0)
    np.testing.assert_allclose(mx, want_mx, atol=1e-12)
    np.testing.assert_allclose(avg, want_avg, atol=1e-12)


def test_a_key_keras_cannot_honour_is_a_located_backend_error():
    source = textwrap.dedent(
        """\
        seqspec: 1
        name: strided_dilated
        input: {shape: [null, 2]}
        layers:
          - {type: conv1d, filters: 2, kernel_size: 2, strides: 2, padding: same}
        """
    )
    spec = seqspec.load(source)
    # The loader refuses strides with dilation; a spec copied past validation (model_copy does
    # not validate) must still be refused by the backend, not compiled to something else.
    layer = spec.layers[0].model_copy(update={"dilation_rate": 2})
    bad = spec.model_copy(update={"layers": [layer]})
    bad._source = spec._source
    with pytest.raises(seqspec.BackendError, match=r"layers\[0\]\.strides: the keras backend cannot combine strides > 1 with dilation_rate > 1") as e:
        BACKEND.build(bad)
    assert "<string>:5:" in str(e.value)


# --- weights -------------------------------------------------------------------------------------


def test_set_weights_names_a_missing_an_extra_and_a_misshapen_array():
    spec = spec_of([{"type": "gru", "units": 2}], SEQ)
    model = BACKEND.build(spec)
    good = seqspec.initial_weights(spec)
    with pytest.raises(ValueError, match="missing layers.0.recurrent_bias_g"):
        BACKEND.set_weights(model, spec, {k: v for k, v in good.items() if k != "layers.0.recurrent_bias_g"})
    with pytest.raises(ValueError, match="unexpected layers.0.peephole_i"):
        BACKEND.set_weights(model, spec, {**good, "layers.0.peephole_i": np.zeros(2)})
    with pytest.raises(ValueError, match=r"layers.0.kernel_z is \(2, 2\), the spec needs \(3, 2\)"):
        BACKEND.set_weights(model, spec, {**good, "layers.0.kernel_z": np.zeros((2, 2))})


def test_weights_round_trip_through_the_keras_variables():
    spec = spec_of(NODES["bidirectional_concat"][0] + [{"type": "batch_norm"}], SEQ, dtype="float64")
    w = random_weights(spec)
    model = BACKEND.build(spec, w)
    got = BACKEND.get_weights(model, spec)
    assert list(got) == list(seqspec.layout(spec))
    for name in w:
        np.testing.assert_array_equal(got[name], w[name])
    # Keras's own layout for the reset_after bias: row 0 input bias, row 1 recurrent bias, gates z|r|h.
    gspec = spec_of([{"type": "gru", "units": 2}], SEQ, dtype="float64")
    gw = random_weights(gspec)
    bias = BACKEND.build(gspec, gw).get_layer("layers.0").cell.bias.numpy()
    p = "layers.0."
    np.testing.assert_array_equal(bias[0], np.concatenate([gw[p + "bias_z"], gw[p + "bias_r"], gw[p + "bias_g"]]))
    np.testing.assert_array_equal(bias[1], np.concatenate([gw[p + f"recurrent_bias_{g}"] for g in "zrg"]))


def test_gradients_are_named_canonically_and_match_finite_differences():
    spec = spec_of(
        [{"type": "gru", "units": 3, "return_sequences": True}, {"type": "batch_norm"}, {"type": "dense", "units": 2}],
        SEQ,
        dtype="float64",
    )
    w = random_weights(spec)
    model = BACKEND.build(spec, w)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 3))
    r = rng.standard_normal((2, 4, 2))
    y, dx, dw = BACKEND.gradients(model, spec, x, r)
    trainable = [n for n in seqspec.layout(spec) if "moving_" not in n]
    assert list(dw) == trainable
    assert dx.shape == x.shape and dx.dtype == np.float64
    np.testing.assert_array_equal(y, BACKEND.predict(model, x))
    for name, value in dw.items():
        assert value.shape == w[name].shape, name

    def loss(weights, xx=x):
        BACKEND.set_weights(model, spec, weights)
        return float(np.sum(BACKEND.predict(model, xx) * r))

    eps = 1e-6
    for name in ("layers.0.recurrent_bias_g", "layers.0.kernel_r", "layers.1.gamma", "layers.2.bias"):
        idx = tuple(0 for _ in w[name].shape)
        plus, minus = {k: v.copy() for k, v in w.items()}, {k: v.copy() for k, v in w.items()}
        plus[name][idx] += eps
        minus[name][idx] -= eps
        numeric = (loss(plus) - loss(minus)) / (2 * eps)
        assert abs(numeric - dw[name][idx]) < 1e-6, name
    xp, xm = x.copy(), x.copy()
    xp[1, 2, 0] += eps
    xm[1, 2, 0] -= eps
    assert abs((loss(w, xp) - loss(w, xm)) / (2 * eps) - dx[1, 2, 0]) < 1e-6


def test_count_params_is_keras_own_count():
    spec = spec_of([{"type": "rnn", "cell": {"type": "peephole_lstm", "units": 3}, "return_sequences": True}, {"type": "batch_norm"}], SEQ)
    model = BACKEND.build(spec)
    assert BACKEND.count_params(model) == (sum(int(np.prod(v.shape)) for v in model.trainable_weights), 6)
    assert sum(BACKEND.count_params(model)) == model.count_params()


# --- modes ---------------------------------------------------------------------------------------


def test_layer_outputs_are_every_top_level_layer_in_inference_mode():
    spec = spec_of([{"type": "lstm", "units": 3, "return_sequences": True}, {"type": "dropout", "rate": 0.5}, {"type": "global_avg_pool1d"}], SEQ)
    model = BACKEND.build(spec)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    outs = BACKEND.layer_outputs(model, x)
    assert [o.shape for o in outs] == [(2, 5, 3), (2, 5, 3), (2, 3)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[-1], BACKEND.predict(model, x), rtol=1e-6)


def test_training_output_applies_dropout_reproducibly_and_leaves_no_trace():
    layers = [
        {"type": "rnn", "return_sequences": True, "cell": {"type": "peephole_lstm", "units": 4, "dropout": 0.4, "recurrent_dropout": 0.4}},
        {"type": "batch_norm"},
        {"type": "dropout", "rate": 0.5},
    ]
    spec = spec_of(layers, SEQ)
    model = BACKEND.build(spec)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    before = BACKEND.predict(model, x)
    a = BACKEND.training_output(model, x, seed=1)
    b = BACKEND.training_output(model, x, seed=1)
    c = BACKEND.training_output(model, x, seed=2)
    assert a.shape == before.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.mean(a == 0) > 0.2  # the dropout layer zeroes about half
    np.testing.assert_array_equal(BACKEND.predict(model, x), before)
    np.testing.assert_array_equal(BACKEND.get_weights(model, spec)["layers.1.moving_mean"], np.zeros(4, np.float32))


@pytest.mark.parametrize("key", ["dropout", "recurrent_dropout"])
def test_recurrent_dropout_keys_act_in_training_only(key):
    spec = spec_of([{"type": "rnn", "return_sequences": True, "cell": {"type": "ln_simple_rnn", "units": 4, key: 0.5}}], SEQ)
    model = BACKEND.build(spec)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    assert not np.allclose(BACKEND.training_output(model, x, seed=0), BACKEND.predict(model, x))
    np.testing.assert_array_equal(BACKEND.predict(model, x), BACKEND.predict(model, x))


# --- save and reload -----------------------------------------------------------------------------

SAVED = {
    "peephole": [{"type": "bidirectional", "layer": {"type": "rnn", "return_sequences": True,
                                                      "cell": {"type": "peephole_lstm", "units": 3, "recurrent_activation": LEAKY}}}],
    "ln_simple_rnn": [{"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 3, "epsilon": 0.02, "activation": LEAKY}}],
    "wavenet_gated": [{"type": "wavenet", "filters": 3, "gated": True, "dilation_rates": [1, 2]}, {"type": "dense", "units": 2, "activation": "leaky_relu"}],
    "wavenet_leaky": [{"type": "wavenet", "filters": 3, "dilation_rates": [1, 2], "activation": {"name": "leaky_relu", "negative_slope": 0.3}},
                      {"type": "batch_norm"}, {"type": "gru", "units": 2, "reset_after": False}],
}


# Keras's own saving code calls np.array on TensorFlow tensors, which NumPy 2 warns about.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_save_and_reload_in_a_fresh_process_gives_the_same_outputs(tmp_path):
    x = np.random.default_rng(4).standard_normal((2, 6, 3))
    expected = {}
    for name, layers in SAVED.items():
        spec = spec_of(layers, SEQ, dtype="float64")
        model = BACKEND.build(spec, random_weights(spec))
        expected[name] = BACKEND.predict(model, x)
        BACKEND.save(model, spec, str(tmp_path / (name + BACKEND.suffix)))
        reloaded = BACKEND.load(str(tmp_path / (name + BACKEND.suffix)))
        np.testing.assert_array_equal(BACKEND.predict(reloaded, x), expected[name])
        # layer_outputs runs eagerly and predict as a tf.function: same math, float64 rounding apart.
        np.testing.assert_allclose(BACKEND.layer_outputs(reloaded, x)[-1], expected[name], rtol=0, atol=1e-12)
    # An atomic writer's temporary name, without the .keras suffix, works too.
    BACKEND.save(model, spec, str(tmp_path / "partial.tmp"))
    np.testing.assert_array_equal(BACKEND.predict(BACKEND.load(str(tmp_path / "partial.tmp")), x), expected[name])

    np.save(tmp_path / "x.npy", x)
    # In the same fresh process: seqspec.load_model on a save, and the backend's load on `seqspec
    # compile`'s output (tests/test_api.py does both for torch).
    from seqspec.cli import main

    peephole = os.path.join(os.path.dirname(__file__), "..", "specs", "peephole_lstm.yaml")
    p_spec = seqspec.load(peephole)
    p_model = BACKEND.build(p_spec)
    px = np.random.default_rng(3).standard_normal((2, 9, 1)).astype("float32")
    BACKEND.save(p_model, p_spec, str(tmp_path / "saved.keras"))
    (tmp_path / "out").mkdir()
    assert main(["compile", peephole, "--backend", "keras", "-o", str(tmp_path / "out" / "model.keras")]) == 0
    assert os.listdir(tmp_path / "out") == ["model.keras"]  # nothing beside it
    np.save(tmp_path / "px.npy", px)
    code = textwrap.dedent(
        """\
        import sys, numpy as np, keras, seqspec, seqspec_keras
        d = sys.argv[1]
        x = np.load(d + "/x.npy")
        out = {name: seqspec_keras.backend.predict(keras.saving.load_model(f"{d}/{name}.keras"), x) for name in sys.argv[2:]}
        px = np.load(d + "/px.npy")
        out["load_model"] = seqspec.load_model(d + "/saved.keras")(px, training=False).numpy()
        be = seqspec.get_backend("keras")
        compiled = be.load(d + "/out/model.keras")
        out["compiled"] = be.predict(compiled, px)
        out["longer"] = be.predict(compiled, np.random.default_rng(1).standard_normal((5, 31, 1)).astype("float32"))
        np.savez(d + "/out.npz", **out)
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path), *SAVED], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    reloaded = np.load(tmp_path / "out.npz")
    for name in SAVED:
        np.testing.assert_array_equal(reloaded[name], expected[name], err_msg=name)
    want = BACKEND.predict(p_model, px)
    np.testing.assert_allclose(reloaded["load_model"], want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(reloaded["compiled"], want, rtol=0, atol=1e-6)  # compile writes the same seeded weights
    assert reloaded["longer"].shape == (5, 31, 10)
