"""The core without a framework: loading, strictness, shapes, parameter counts, time mappings, weights layout."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import seqspec
from helpers import spec_of

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "specs").glob("*.yaml"))


def test_core_never_imports_a_framework():
    code = (
        "import sys, seqspec, seqspec.cli; spec = seqspec.load(sys.argv[1]); seqspec.summary(spec); "
        "seqspec.initial_weights(spec); seqspec.layout(spec); "
        "print(' '.join(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / "conv_gru.yaml")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_specs_load_and_start_with_the_schema_line(path):
    spec = seqspec.load(path)
    assert path.read_text().startswith("# yaml-language-server: $schema=../schema/seqspec-1.schema.json\n")
    assert spec.seed is not None


@pytest.mark.parametrize(
    "layers, shape, params",
    [
        # Keras's own counts for the textbook models.
        ([{"type": "simple_rnn", "units": 20, "return_sequences": True},
          {"type": "simple_rnn", "units": 20, "return_sequences": True},
          {"type": "simple_rnn", "units": 1}], [None, 1], 1282),
        ([{"type": "conv1d", "filters": 20, "kernel_size": 4, "strides": 2},
          {"type": "gru", "units": 20, "return_sequences": True},
          {"type": "gru", "units": 20, "return_sequences": True},
          {"type": "time_distributed", "layer": {"type": "dense", "units": 10}}], [None, 1], 5350),
        ([{"type": "wavenet", "filters": 20, "dilation_rates": [1, 2, 4, 8], "repeats": 2},
          {"type": "conv1d", "filters": 10, "kernel_size": 1}], [None, 1], 6010),
        ([{"type": "wavenet", "filters": 32, "dilation_rates": [1, 2, 4], "gated": True},
          {"type": "conv1d", "filters": 32, "kernel_size": 1, "activation": "relu"},
          {"type": "conv1d", "filters": 10, "kernel_size": 1}], [None, 1], 17130),
        ([{"type": "flatten"}, {"type": "dense", "units": 1}], [50, 1], 51),
        ([{"type": "lstm", "units": 20, "use_bias": False}], [None, 3], 4 * 20 * 23),
        ([{"type": "gru", "units": 20, "reset_after": False}], [None, 3], 3 * 20 * 23 + 60),
        ([{"type": "rnn", "cell": {"type": "peephole_lstm", "units": 5}}], [None, 2], 4 * 5 * 7 + 20 + 15),
        ([{"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 5}}], [None, 2], 5 * 7 + 5 + 10),
        ([{"type": "bidirectional", "layer": {"type": "gru", "units": 4}}], [None, 2], 2 * (3 * 4 * 6 + 24)),
    ],
)
def test_parameter_counts_equal_keras(layers, shape, params):
    assert seqspec.summary(spec_of(layers, shape)).params == params


def test_batch_norm_statistics_are_non_trainable():
    info = seqspec.summary(spec_of([{"type": "lstm", "units": 8, "return_sequences": True}, {"type": "batch_norm"}], [None, 1]))
    assert (info.layers[1].trainable_params, info.layers[1].non_trainable_params) == (16, 16)
    assert info.non_trainable_params == 16


def test_conv_downsampling_time_mapping():
    info = seqspec.summary(spec_of([{"type": "conv1d", "filters": 20, "kernel_size": 4, "strides": 2}], [50, 1]))
    assert info.output_shape == (None, 24, 20)
    tmap = info.time_map
    assert (tmap.stride, tmap.receptive_field, tmap.first, tmap.last) == (2, 4, 0, 3)
    # output step j sees inputs 2j .. 2j+3: seq2seq targets start at step 3, every second step
    assert [tmap.last_input_step(j) for j in range(3)] == [3, 5, 7]
    assert info.output_length(50) == 24 and info.length_formula() == "floor((T - 4) / 2) + 1"


def test_wavenet_receptive_field_and_length():
    info = seqspec.summary(seqspec.load(ROOT / "specs" / "wavenet.yaml"))
    assert info.time_map.receptive_field == 31 and info.time_map.last == 0
    assert info.output_length(1234) == 1234


def test_same_padding_follows_tensorflow():
    from seqspec._shapes import Window

    w = Window(kernel=4, stride=2, dilation=1, padding="same")
    for t in range(1, 40):
        out = -(-t // 2)
        total = max((out - 1) * 2 + 4 - t, 0)
        assert w.length(t) == out and w.pads(t) == (total // 2, total - total // 2)
    assert Window(3, 1, 4, "causal").pads(10) == (8, 0)


def test_strict_types_are_not_coerced():
    for bad in ({"units": "20"}, {"units": 20.5}, {"units": True}):
        with pytest.raises(seqspec.SpecError):
            spec_of([{"type": "dense", **bad}], [None, 1])


def test_spec_error_carries_every_located_problem():
    text = "seqspec: 1\nname: x\ninput: {shape: [null, 1]}\nlayers:\n  - {type: dense, units: 0}\n  - {type: dense, units: 1, activation: rel}\n"
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load(text)
    lines = [str(p) for p in e.value.problems]
    assert lines == [
        "<string>:5:26: layers[0].units: must be >= 1, got 0",
        "<string>:6:41: layers[1].activation: unknown activation 'rel'; did you mean 'relu'?",
    ]


def test_parameter_budget_is_a_flag():
    text = "seqspec: 1\nname: x\ninput: {shape: [null, 10]}\nlayers:\n  - {type: dense, units: 100}\n"
    assert seqspec.summary(seqspec.load(text)).params == 1100
    with pytest.raises(seqspec.SpecError, match="over the budget of 1,000"):
        seqspec.load(text, max_params=1000)


def test_initial_weights_are_seeded_and_keras_scaled():
    spec = seqspec.load(ROOT / "specs" / "seq2seq_lstm.yaml")
    a, b = seqspec.initial_weights(spec), seqspec.initial_weights(spec)
    assert list(a) == list(seqspec.layout(spec))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert sum(v.size for v in a.values()) == seqspec.summary(spec).params
    np.testing.assert_array_equal(a["layers.0.bias_f"], np.ones(20))
    np.testing.assert_array_equal(a["layers.0.bias_i"], np.zeros(20))
    # the gate kernels are one glorot draw of [1, 80]: limit sqrt(6 / 81)
    kernels = np.concatenate([a[f"layers.0.kernel_{g}"] for g in "ifgo"], axis=1)
    assert np.abs(kernels).max() <= np.sqrt(6 / 81)
    rk = np.concatenate([a[f"layers.1.recurrent_kernel_{g}"] for g in "ifgo"], axis=1)
    np.testing.assert_allclose(rk @ rk.T, np.eye(20), atol=1e-6)  # orthogonal rows, as Keras draws [20, 80]


def test_schema_file_is_the_generated_one():
    from seqspec.cli import schema_text

    assert (ROOT / "schema" / "seqspec-1.schema.json").read_text() == schema_text()


def test_example_specs_validate_against_the_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads((ROOT / "schema" / "seqspec-1.schema.json").read_text())
    for path in EXAMPLES:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_exponent_floats_are_numbers_but_quoted_ones_are_strings():
    text = "seqspec: 1\nname: x\ninput: {shape: [null, 1]}\nlayers:\n  - {type: layer_norm, epsilon: %s}\n"
    assert seqspec.load(text % "1e-5").layers[0].epsilon == 1e-5
    assert seqspec.load(text % "2.5E-3").layers[0].epsilon == 2.5e-3
    with pytest.raises(seqspec.SpecError, match="must be a number, got the string '1e-5'"):
        seqspec.load(text % '"1e-5"')


def test_strided_dilated_convolution_is_refused_with_its_place():
    text = "seqspec: 1\nname: x\ninput: {shape: [null, 1]}\nlayers:\n  - {type: conv1d, filters: 2, kernel_size: 2, strides: 2, dilation_rate: 3}\n"
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load(text)
    assert str(e.value).startswith("<string>:5:5: layers[0]: strides 2 with dilation_rate 3")


def test_gated_wavenet_refuses_an_activation_it_would_ignore():
    text = "seqspec: 1\nname: x\ninput: {shape: [null, 1]}\nlayers:\n  - {type: wavenet, filters: 4, gated: true, activation: relu}\n"
    with pytest.raises(seqspec.SpecError, match=r"<string>:5:5: layers\[0\]: activation applies to the simplified form"):
        seqspec.load(text)


@pytest.mark.parametrize(
    "layer, trains",
    [
        ({"type": "dense", "units": 2}, False),
        ({"type": "dropout", "rate": 0.0}, False),
        ({"type": "dropout", "rate": 0.2}, True),
        ({"type": "batch_norm"}, True),
        ({"type": "lstm", "units": 2, "return_sequences": True}, False),
        ({"type": "gru", "units": 2, "return_sequences": True, "recurrent_dropout": 0.1}, True),
        ({"type": "rnn", "cell": {"type": "peephole_lstm", "units": 2, "dropout": 0.1}, "return_sequences": True}, True),
        ({"type": "bidirectional", "layer": {"type": "simple_rnn", "units": 2, "return_sequences": True}}, False),
        ({"type": "bidirectional", "layer": {"type": "simple_rnn", "units": 2, "return_sequences": True, "dropout": 0.5}}, True),
        ({"type": "time_distributed", "layer": {"type": "dropout", "rate": 0.5}}, True),
        ({"type": "time_distributed", "layer": {"type": "dense", "units": 2}}, False),
    ],
)
def test_a_layer_trains_differently_only_with_dropout_or_batch_statistics(layer, trains):
    spec = spec_of([layer], shape=[None, 3])
    assert spec.layers[0].trains_differently is trains
