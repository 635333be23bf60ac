"""zero_padding1d, cropping1d, upsampling1d and conv1d `groups`: against keras.layers and torch
written by hand, Keras's parameter counts, the time mapping, and train's leak guard."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

import seqspec
from helpers import spec_of
from seqspec._check import check
from seqspec.cli import main

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

KERAS, TORCH = seqspec.get_backend("keras"), seqspec.get_backend("torch")


def _x(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype("float64")


def _both(layers, shape, x):
    spec = spec_of(layers, shape, dtype="float64")
    return spec, KERAS.predict(KERAS.build(spec), x), TORCH.predict(TORCH.build(spec), x)


@pytest.mark.parametrize("padding", [1, 3, [2, 0], [0, 2], [1, 4]])
def test_zero_padding1d_is_keras_zero_padding_and_torch_pad(padding):
    x = _x((2, 5, 3))
    _, k, t = _both([{"type": "zero_padding1d", "padding": padding}], [None, 3], x)
    pads = (padding, padding) if isinstance(padding, int) else tuple(padding)
    by_hand = keras.layers.ZeroPadding1D(pads, dtype="float64")(x)
    np.testing.assert_array_equal(k, np.asarray(by_hand))
    np.testing.assert_array_equal(t, F.pad(torch.from_numpy(x), (0, 0, *pads)).numpy())


@pytest.mark.parametrize("cropping", [1, [2, 0], [0, 3], [1, 2]])
def test_cropping1d_is_keras_cropping(cropping):
    x = _x((2, 7, 3))
    _, k, t = _both([{"type": "cropping1d", "cropping": cropping}], [None, 3], x)
    crops = (cropping, cropping) if isinstance(cropping, int) else tuple(cropping)
    np.testing.assert_array_equal(k, np.asarray(keras.layers.Cropping1D(crops, dtype="float64")(x)))
    np.testing.assert_array_equal(t, x[:, crops[0] : 7 - crops[1]])


@pytest.mark.parametrize("size", [1, 2, 3])
def test_upsampling1d_is_keras_upsampling_and_torch_nearest(size):
    x = _x((2, 4, 3))
    _, k, t = _both([{"type": "upsampling1d", "size": size}], [None, 3], x)
    np.testing.assert_array_equal(k, np.asarray(keras.layers.UpSampling1D(size, dtype="float64")(x)))
    nearest = torch.nn.Upsample(scale_factor=size, mode="nearest")(torch.from_numpy(x).transpose(1, 2)).transpose(1, 2)
    np.testing.assert_array_equal(t, nearest.numpy())


@pytest.mark.parametrize("padding,strides", [("valid", 1), ("same", 2), ("causal", 1)])
def test_grouped_conv1d_is_keras_conv1d_and_torch_conv1d(padding, strides):
    layer = {"type": "conv1d", "filters": 6, "kernel_size": 3, "groups": 3, "padding": padding, "strides": strides, "activation": "tanh"}
    spec = spec_of([layer], [None, 9], dtype="float64")
    x = _x((2, 11, 9))
    w = seqspec.initial_weights(spec)
    by_hand = keras.layers.Conv1D(6, 3, strides=strides, padding=padding, groups=3, activation="tanh", dtype="float64")
    by_hand.build((None, None, 9))
    assert by_hand.count_params() == seqspec.summary(spec).params == 3 * 3 * 6 + 6
    by_hand.set_weights([w["layers.0.kernel"], w["layers.0.bias"]])
    np.testing.assert_allclose(KERAS.predict(KERAS.build(spec), x), np.asarray(by_hand(x)), rtol=0, atol=1e-12)
    conv = torch.nn.Conv1d(9, 6, 3, stride=strides, groups=3, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w["layers.0.kernel"]).permute(2, 1, 0))
        conv.bias.copy_(torch.from_numpy(w["layers.0.bias"]))
    left, right = seqspec.Window(3, strides, 1, padding).pads(11)
    expected = torch.tanh(conv(F.pad(torch.from_numpy(x).transpose(1, 2), (left, right)))).transpose(1, 2)
    np.testing.assert_allclose(TORCH.predict(TORCH.build(spec), x), expected.detach().numpy(), rtol=0, atol=1e-12)


def test_softmax_in_a_convolution_acts_on_the_filters_as_keras_does():
    layers = [{"type": "conv1d", "filters": 4, "kernel_size": 2, "activation": "softmax"}]
    spec = spec_of(layers, [None, 3], dtype="float64")
    x = _x((2, 6, 3))
    w = seqspec.initial_weights(spec)
    by_hand = keras.layers.Conv1D(4, 2, activation="softmax", dtype="float64")
    by_hand.build((None, None, 3))
    by_hand.set_weights([w["layers.0.kernel"], w["layers.0.bias"]])
    np.testing.assert_allclose(TORCH.predict(TORCH.build(spec), x), np.asarray(by_hand(x)), rtol=0, atol=1e-12)


def test_parameter_counts_equal_keras():
    layers = [
        {"type": "zero_padding1d", "padding": [2, 1]},
        {"type": "conv1d", "filters": 8, "kernel_size": 3, "groups": 4, "use_bias": False},
        {"type": "upsampling1d", "size": 2},
        {"type": "cropping1d", "cropping": 1},
        {"type": "conv1d", "filters": 4, "kernel_size": 1, "groups": 2},
    ]
    spec = spec_of(layers, [None, 4])
    model = keras.Sequential([
        keras.Input((None, 4)),
        keras.layers.ZeroPadding1D((2, 1)),
        keras.layers.Conv1D(8, 3, groups=4, use_bias=False),
        keras.layers.UpSampling1D(2),
        keras.layers.Cropping1D(1),
        keras.layers.Conv1D(4, 1, groups=2),
    ])
    info = seqspec.summary(spec)
    assert info.params == model.count_params() == 3 * 1 * 8 + 1 * 4 * 4 + 4
    assert [li.params for li in info.layers] == [layer.count_params() for layer in model.layers]
    assert info.output_length(10) == (10 + 3 - 2) * 2 - 2 == model(np.zeros((1, 10, 4), "float32")).shape[1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "layers",
    [
        [{"type": "zero_padding1d", "padding": [2, 1]}, {"type": "conv1d", "filters": 2, "kernel_size": 3}],
        [{"type": "cropping1d", "cropping": [1, 2]}, {"type": "gru", "units": 2, "return_sequences": True}],
        [{"type": "upsampling1d", "size": 3}, {"type": "conv1d", "filters": 2, "kernel_size": 2, "strides": 2}],
        [{"type": "conv1d", "filters": 6, "kernel_size": 2, "groups": 3, "padding": "causal"}, {"type": "upsampling1d"},
         {"type": "cropping1d", "cropping": 3}, {"type": "zero_padding1d", "padding": [0, 2]}],
    ],
    ids=["pad", "crop", "upsample", "all"],
)
def test_check_passes_at_every_length(layers, dtype):
    spec = spec_of(layers, [None, 3 if layers[0].get("groups") is None else 6])
    r = check(spec, dtype=dtype)
    assert r.ok, r.failures
    assert r.params["core"] == r.params["keras"] == r.params["torch"]
    if dtype == "float64":
        assert r.grad_max_abs_diff is not None and r.grad_max_abs_diff <= 1e-9


def _brute_force(layers, t):
    """For each output step, the (first, last) input step it sees, by following every step back
    through each layer (padding as positions outside 0..T-1)."""
    maps = []
    for layer in layers:
        if layer["type"] == "upsampling1d":
            n = layer.get("size", 2)
            maps.append((t * n, lambda j, n=n: {j // n}))
            t *= n
            continue
        if layer["type"] == "conv1d":
            w = seqspec.Window(layer["kernel_size"], layer.get("strides", 1), layer.get("dilation_rate", 1), layer.get("padding", "valid"))
        else:
            p = layer.get("padding" if layer["type"] == "zero_padding1d" else "cropping", 1)
            p = (p, p) if isinstance(p, int) else tuple(p)
            w = seqspec.Window(1, 1, 1, p if layer["type"] == "zero_padding1d" else (-p[0], -p[1]))
        left = w.pads(t)[0]
        maps.append((w.length(t), lambda j, w=w, left=left: {j * w.stride + k * w.dilation - left for k in range(w.kernel)}))
        t = w.length(t)
    out = []
    for j in range(t):
        seen = {j}
        for _, f in reversed(maps):
            seen = set().union(*(f(p) for p in seen))
        out.append((min(seen), max(seen)))
    return out


def test_time_map_agrees_with_following_every_step_back():
    rng = random.Random(3)
    choices = [
        {"type": "zero_padding1d", "padding": [2, 1]}, {"type": "zero_padding1d", "padding": [0, 3]},
        {"type": "cropping1d", "cropping": [1, 0]}, {"type": "cropping1d", "cropping": 2},
        {"type": "upsampling1d", "size": 2}, {"type": "upsampling1d", "size": 3},
        {"type": "conv1d", "filters": 1, "kernel_size": 3, "strides": 2},
        {"type": "conv1d", "filters": 1, "kernel_size": 4, "strides": 3, "padding": "same"},
        {"type": "conv1d", "filters": 1, "kernel_size": 2, "dilation_rate": 2, "padding": "causal"},
    ]
    tried = 0
    for _ in range(300):
        layers = [rng.choice(choices) for _ in range(rng.randint(1, 4))]
        try:
            info = seqspec.summary(spec_of(layers, [30, 1]))
        except seqspec.SpecError:
            continue  # cropped or strided below one step
        tried += 1
        expected = _brute_force(layers, 30)
        tmap = info.time_map
        got = [(tmap.first_input_step(j), tmap.last_input_step(j)) for j in range(info.output_length(30))]
        assert got == expected, json.dumps(layers)
        assert tmap.receptive_field == max(b - a + 1 for a, b in expected), json.dumps(layers)
    assert tried > 200


def test_summary_gives_the_new_layers_time_column_and_unaligned_steps(capsys):
    layers = [{"type": "zero_padding1d", "padding": [3, 0]}, {"type": "upsampling1d", "size": 2}]
    text = json.dumps({"seqspec": 1, "name": "t", "input": {"shape": [None, 1]}, "layers": layers})
    assert main(["summary", text]) == 0
    out = capsys.readouterr().out
    assert "T -> T + 3; rf 1; j sees j - 3 .. j - 3" in out
    assert "T -> 2 * T; rf 1; j sees floor(j / 2) .. floor(j / 2)" in out
    assert "output steps 0 to 5 see no past or present input step (left zero padding)" in out
    assert main(["summary", text, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["time_mapping"]["stride"] == "1/2" and d["time_mapping"]["unaligned_output_steps"] == 6
    assert d["time_mapping"]["output_length"] == "2 * (T + 3)"


LEAK = """seqspec: 1
name: leak
seed: 1
input: {shape: [null, 1]}
layers:
  - {type: conv1d, filters: 4, kernel_size: 2, padding: causal}
  - {type: zero_padding1d, padding: [2, 0]}
  - {type: cropping1d, cropping: [0, 2]}
  - {type: conv1d, filters: 3, kernel_size: 1}
train:
  data: {source: synthetic, series: 40, steps: 12, split: [20, 10, 10]}
  target: {kind: seq2seq, horizon: 3}
  epochs: 1
"""


def test_train_refuses_targets_from_the_future_at_the_padding_layer(tmp_path, capsys):
    path = tmp_path / "leak.yaml"
    path.write_text(LEAK)
    assert main(["train", str(path), "--backend", "torch", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:7:5: layers[1] (zero_padding1d): output steps 0 to 1 are aligned to no past or present input step")
    assert not (tmp_path / "run").exists()
    # Padding on the right instead: every output step is aligned to an input step at or before it.
    path.write_text(LEAK.replace("padding: [2, 0]", "padding: [0, 2]").replace("cropping: [0, 2]", "cropping: [2, 0]"))
    from seqspec import _train

    spec = seqspec.load(path)
    prepared = _train.prepare(spec)
    assert prepared.targets.aligned == (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11, 11)


def test_same_padding_in_a_seq2seq_model_forecasts_from_the_last_real_step():
    spec = seqspec.load(LEAK.replace(
        """  - {type: conv1d, filters: 4, kernel_size: 2, padding: causal}
  - {type: zero_padding1d, padding: [2, 0]}
  - {type: cropping1d, cropping: [0, 2]}
  - {type: conv1d, filters: 3, kernel_size: 1}""", "  - {type: conv1d, filters: 3, kernel_size: 3, padding: same}"))
    from seqspec import _train

    prepared = _train.prepare(spec)  # was an IndexError: step 11 sees the pad after the window
    assert prepared.targets.aligned == tuple(range(1, 12)) + (11,)
    y = prepared.splits["train"].y
    np.testing.assert_array_equal(y[:, -1], y[:, -2])


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("padding", -1, "layers[0].padding: must be >= 0, got -1"),
        ("padding", [1, 2, 3], "layers[0].padding: must be an integer or a list [left, right] of two integers, got a list of 3"),
        ("padding", "2", "layers[0].padding: must be an integer or a list [left, right], got the string '2'"),
        ("padding", [1, 1.5], "layers[0].padding: must be integers, got the number 1.5"),
        ("padding", True, "layers[0].padding: must be an integer or a list [left, right], got true"),
    ],
)
def test_bad_padding_values_are_located_errors(key, value, message):
    with pytest.raises(seqspec.SpecError) as e:
        spec_of([{"type": "zero_padding1d", key: value}], [None, 1])
    assert str(e.value).endswith(message) and str(e.value).count("\n") == 0


def test_shape_rules_of_the_new_keys_are_located_errors():
    with pytest.raises(seqspec.SpecError, match=r"layers\[0\]: cropping1d removes 6 steps and its input \[batch, 5, 1\] has 5: no step is left"):
        spec_of([{"type": "cropping1d", "cropping": 3}], [5, 1])
    with pytest.raises(seqspec.SpecError, match=r"layers\[0\]: conv1d with groups 2 needs input channels divisible by it, got \[batch, null, 3\]"):
        spec_of([{"type": "conv1d", "filters": 4, "kernel_size": 1, "groups": 2}], [None, 3])
    with pytest.raises(seqspec.SpecError, match=r"layers\[0\]: filters 5 is not divisible by groups 2"):
        spec_of([{"type": "conv1d", "filters": 5, "kernel_size": 1, "groups": 2}], [None, 4])
    with pytest.raises(seqspec.SpecError, match=r"layers\[0\]\.size: must be >= 1, got 0"):
        spec_of([{"type": "upsampling1d", "size": 0}], [None, 1])


def test_a_bidirectional_sequence_forecasts_after_the_whole_window():
    # Its backward pass has read every input step, so no output step may take its targets from
    # inside the window (before, step j's targets were steps j + 1 .. j + 3: seen by the model).
    spec = seqspec.load(LEAK.replace(
        """  - {type: conv1d, filters: 4, kernel_size: 2, padding: causal}
  - {type: zero_padding1d, padding: [2, 0]}
  - {type: cropping1d, cropping: [0, 2]}
  - {type: conv1d, filters: 3, kernel_size: 1}""",
        """  - {type: bidirectional, layer: {type: gru, units: 3, return_sequences: true}}
  - {type: time_distributed, layer: {type: dense, units: 3}}"""))
    from seqspec import _train

    assert _train.prepare(spec).targets.aligned == (11,) * 12
    tmap = seqspec.summary(spec).time_map
    assert tmap.whole_sequence and "reads the whole sequence" in tmap.sees()
