"""Cross-backend equivalence: `seqspec check` on every layer, stack and example, and the compile command."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import seqspec
from helpers import examples, spec_of
from seqspec._check import check
from seqspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "specs").glob("*.yaml"))


@pytest.mark.parametrize("name", seqspec.backend_names())
def test_every_backend_has_a_builder_and_a_weight_mapping_for_every_node(name):
    assert seqspec.missing_nodes(seqspec.get_backend(name)) == []


def _assert_equivalent(spec, dtype):
    r = check(spec, dtype=dtype)
    assert r.ok, r.failures
    assert r.params["core"] == r.params["keras"] == r.params["torch"]
    return r


RECURRENT = [
    {"type": "simple_rnn", "units": 5, "return_sequences": True},
    {"type": "simple_rnn", "units": 5, "activation": "relu", "use_bias": False},
    {"type": "simple_rnn", "units": 4, "activation": "sigmoid"},
    {"type": "lstm", "units": 5, "return_sequences": True},
    {"type": "lstm", "units": 4, "unit_forget_bias": False, "use_bias": False},
    {"type": "lstm", "units": 4, "activation": "relu", "recurrent_activation": "hard_sigmoid"},
    {"type": "gru", "units": 5, "return_sequences": True},
    {"type": "gru", "units": 5, "reset_after": False},
    {"type": "gru", "units": 4, "reset_after": False, "use_bias": False, "activation": "elu"},
    {"type": "gru", "units": 4, "dropout": 0.3, "recurrent_dropout": 0.3},
    {"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 5, "epsilon": 0.01}, "return_sequences": True},
    {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 5}},
    {"type": "rnn", "cell": {"type": "gru", "units": 3, "reset_after": False}},
    {"type": "rnn", "cell": {"type": "lstm", "units": 3, "recurrent_dropout": 0.2}, "return_sequences": True},
    {"type": "rnn", "cell": {"type": "simple_rnn", "units": 3}},
    {"type": "bidirectional", "layer": {"type": "lstm", "units": 3, "return_sequences": True}},
    {"type": "bidirectional", "layer": {"type": "gru", "units": 3}, "merge_mode": "sum"},
    {"type": "bidirectional", "layer": {"type": "simple_rnn", "units": 3}, "merge_mode": "mul"},
    {"type": "bidirectional", "layer": {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 3}}, "merge_mode": "ave"},
]

FEED_FORWARD = [
    [{"type": "dense", "units": 4, "activation": {"name": "leaky_relu", "negative_slope": 0.3}}],
    [{"type": "time_distributed", "layer": {"type": "dense", "units": 4, "activation": "gelu"}}],
    [{"type": "time_distributed", "layer": {"type": "activation", "activation": "softmax"}}],
    [{"type": "time_distributed", "layer": {"type": "dropout", "rate": 0.5}}],
    [{"type": "batch_norm", "momentum": 0.9, "epsilon": 0.01}, {"type": "layer_norm", "epsilon": 0.1}],
    [{"type": "activation", "activation": a} for a in ("selu", "softplus", "silu", "hard_sigmoid", "tanh", "sigmoid", "leaky_relu")],
    [{"type": "lstm", "units": 3}, {"type": "repeat_vector", "n": 4}, {"type": "gru", "units": 2, "return_sequences": True}],
    [{"type": "dropout", "rate": 0.2}, {"type": "global_max_pool1d"}, {"type": "dense", "units": 2, "activation": "softmax"}],
]

CONV = [
    [{"type": "conv1d", "filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"}],
    [{"type": "conv1d", "filters": 4, "kernel_size": 4, "strides": 3, "padding": "same", "activation": "relu"}],
    [{"type": "conv1d", "filters": 3, "kernel_size": 2, "dilation_rate": 3, "padding": "causal", "use_bias": False}],
    [{"type": "conv1d", "filters": 3, "kernel_size": 3, "strides": 2, "padding": "valid"}, {"type": "gru", "units": 3}],
    [{"type": "max_pool1d", "pool_size": 3, "strides": 2, "padding": "same"}, {"type": "avg_pool1d", "pool_size": 2, "padding": "same"}],
    [{"type": "avg_pool1d", "pool_size": 2}, {"type": "max_pool1d", "pool_size": 2, "strides": 1}, {"type": "global_avg_pool1d"}],
    [{"type": "wavenet", "filters": 4, "dilation_rates": [1, 2], "repeats": 2}],
    [{"type": "wavenet", "filters": 4, "kernel_size": 3, "dilation_rates": [1, 2, 4], "gated": True}],
    [{"type": "zero_padding1d", "padding": [2, 1]}, {"type": "conv1d", "filters": 3, "kernel_size": 3}],
    [{"type": "cropping1d", "cropping": [0, 1]}, {"type": "max_pool1d", "pool_size": 2}],
    [{"type": "upsampling1d", "size": 3}, {"type": "conv1d", "filters": 3, "kernel_size": 2, "strides": 2}],
    [{"type": "conv1d", "filters": 6, "kernel_size": 2, "groups": 3, "padding": "causal"}, {"type": "upsampling1d"}],
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", RECURRENT, ids=lambda d: json.dumps(d)[:60])
def test_recurrent_layer_is_equivalent(layer, dtype):
    _assert_equivalent(spec_of([layer], [None, 3]), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layers", FEED_FORWARD + CONV, ids=lambda ls: "+".join(d["type"] for d in ls))
def test_stack_is_equivalent(layers, dtype):
    _assert_equivalent(spec_of(layers, [None, 3]), dtype)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_spec_is_equivalent_in_float64_with_gradients(path):
    r = _assert_equivalent(seqspec.load(path), "float64")
    assert r.grad_max_abs_diff is not None and r.grad_max_abs_diff <= 1e-6
    assert 1 in {b for b, _ in r.cases}
    if seqspec.load(path).input.shape[0] is None and len(seqspec.load(path).input.shape) == 2:
        assert max(t for _, t in r.cases) >= 500


def test_a_wrong_weight_is_caught_and_located(monkeypatch):
    spec = seqspec.load(ROOT / "specs" / "seq2seq_lstm.yaml")
    torch_backend = seqspec.get_backend("torch")
    original = torch_backend.set_weights

    def corrupt(model, spec, weights):
        weights = dict(weights)
        weights["layers.1.recurrent_kernel_f"] = weights["layers.1.recurrent_kernel_f"] * 1.01
        original(model, spec, weights)

    monkeypatch.setattr(torch_backend, "set_weights", corrupt)
    r = check(spec)
    assert not r.ok
    assert r.first_divergent_layer["index"] == 1 and r.first_divergent_layer["type"] == "lstm"


# Random valid stacks: a recurrent or conv front, optional middle layers, a head.
_front = st.sampled_from(RECURRENT[:9] + [c[0] for c in CONV] + [{"type": "layer_norm"}, {"type": "batch_norm"}])
_middle = st.sampled_from([
    {"type": "lstm", "units": 3, "return_sequences": True},
    {"type": "gru", "units": 2, "return_sequences": True, "reset_after": False},
    {"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 3}, "return_sequences": True},
    {"type": "conv1d", "filters": 2, "kernel_size": 2, "padding": "causal"},
    {"type": "max_pool1d", "pool_size": 2, "padding": "same"},
    {"type": "dropout", "rate": 0.1},
    {"type": "time_distributed", "layer": {"type": "dense", "units": 3, "activation": "tanh"}},
    {"type": "zero_padding1d", "padding": [0, 1]},
    {"type": "upsampling1d", "size": 2},
])
_head = st.sampled_from([
    {"type": "dense", "units": 2},
    {"type": "global_avg_pool1d"},
    {"type": "simple_rnn", "units": 2},
    {"type": "bidirectional", "layer": {"type": "gru", "units": 2}},
])


@settings(max_examples=examples(12))
@given(_front, st.lists(_middle, max_size=2), _head, st.sampled_from(["float32", "float64"]))
def test_random_stacks_are_equivalent(front, middle, head, dtype):
    # Layer norm over a few units amplifies the float32 differences of its input, which another
    # recurrent layer has already put there: simple_rnn(5) -> ln_simple_rnn(3) measured 4.7e-5 apart
    # at 500 steps in float32 (tolerance 1.4e-5) and 1e-13 in float64. That is the model's
    # conditioning, not a mapping, so such stacks are compared in float64. See docs/equivalence.md.
    if any(layer.get("cell", {}).get("type") == "ln_simple_rnn" for layer in middle):
        dtype = "float64"
    try:
        spec = spec_of([front, *middle, head], [None, 2], dtype=dtype)
    except seqspec.SpecError:
        assume(False)
    _assert_equivalent(spec, dtype)


def _activation(name):
    return {"name": "leaky_relu", "negative_slope": 0.3} if name == "leaky_relu" else name


@pytest.mark.parametrize("name", seqspec.ACTIVATIONS)
def test_every_activation_in_every_layer_that_takes_one_in_both_layouts(name):
    # On torch, convolutions run channels-first and everything else channels-last: each
    # activation is drawn inside a convolution block and outside one (softmax over the features
    # in both, which no example spec had inside a convolution). Two specs: a wavenet makes check
    # feed 2,000 steps, which the recurrent layers' step loops need not walk to show an activation
    # (6.0 s a check in one spec, 2.8 s in two).
    a = _activation(name)
    convolutions = [
        {"type": "conv1d", "filters": 3, "kernel_size": 2, "padding": "causal", "activation": a},
        {"type": "activation", "activation": a},
        {"type": "wavenet", "filters": 3, "dilation_rates": [1, 2], "activation": a},
        {"type": "dense", "units": 3, "activation": a},
    ]
    _assert_equivalent(spec_of(convolutions, [None, 2]), "float64")
    layers = [
        {"type": "conv1d", "filters": 3, "kernel_size": 2, "padding": "causal", "activation": a},
        {"type": "activation", "activation": a},
        {"type": "dense", "units": 3, "activation": a},
        {"type": "time_distributed", "layer": {"type": "dense", "units": 3, "activation": a}},
        {"type": "activation", "activation": a},
        {"type": "simple_rnn", "units": 3, "activation": a, "return_sequences": True},
        {"type": "rnn", "cell": {"type": "lstm", "units": 2, "activation": a, "recurrent_activation": a}, "return_sequences": True},
        {"type": "gru", "units": 2, "activation": a, "recurrent_activation": a, "return_sequences": True, "reset_after": False},
        {"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 2, "activation": a}, "return_sequences": True},
        {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 2, "activation": a, "recurrent_activation": a}},
        {"type": "dense", "units": 2, "activation": a},
    ]
    _assert_equivalent(spec_of(layers, [None, 2]), "float64")


def test_check_cli_json(capsys):
    code = main(["check", str(ROOT / "specs" / "conv_gru.yaml"), "--json", "--dtype", "float64"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    (r,) = out
    assert set(r) >= {"spec", "name", "params", "dtype", "max_abs_diff", "grad_max_abs_diff", "tolerance", "first_divergent_layer", "ok"}
    assert r["params"] == {"core": 5350, "keras": 5350, "torch": 5350}
    assert r["ok"] and r["first_divergent_layer"] is None and r["tolerance"] == 1e-9


def test_check_cli_invalid_spec_exits_2(capsys):
    assert main(["check", str(ROOT / "specs" / "invalid" / "wrong_type.yaml")]) == 2


def test_failed_compile_leaves_no_file(tmp_path, monkeypatch):
    be = seqspec.get_backend("torch")
    target = tmp_path / "m.pt"
    target.write_bytes(b"old model")

    def broken_save(model, spec, path):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(be, "save", broken_save)
    assert main(["compile", str(ROOT / "specs" / "deep_rnn.yaml"), "--backend", "torch", "-o", str(target)]) == 1
    assert target.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_weights_trained_on_one_backend_compile_into_the_other(tmp_path, capsys):
    spec_path = ROOT / "specs" / "seq2seq_gru.yaml"
    spec = seqspec.load(spec_path)
    torch_be, keras_be = seqspec.get_backend("torch"), seqspec.get_backend("keras")
    from seqspec._check import random_weights

    trained = torch_be.build(spec, random_weights(spec, 7))
    seqspec.save_weights(torch_be.get_weights(trained, spec), str(tmp_path / "w.safetensors"), spec)
    out = tmp_path / "m.keras"
    assert main(["compile", str(spec_path), "--backend", "keras", "--weights", str(tmp_path / "w.safetensors"), "-o", str(out)]) == 0
    x = np.random.default_rng(0).standard_normal((2, 11, 1)).astype("float32")
    np.testing.assert_allclose(keras_be.predict(keras_be.load(str(out)), x), torch_be.predict(trained, x), atol=1e-5)


def test_weights_file_that_does_not_fit_is_one_clear_error(tmp_path, capsys):
    spec = seqspec.load(ROOT / "specs" / "deep_rnn.yaml")
    weights = seqspec.initial_weights(spec)
    weights.pop("layers.2.bias")
    seqspec.save_weights(weights, str(tmp_path / "w.safetensors"))
    code = main(["compile", str(ROOT / "specs" / "deep_rnn.yaml"), "--backend", "torch", "--weights", str(tmp_path / "w.safetensors"), "-o", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("does not fit spec 'deep_rnn': missing layers.2.bias") and "\n" not in err
    assert not (tmp_path / "m.pt").exists()
    assert main(["compile", str(ROOT / "specs" / "deep_rnn.yaml"), "--backend", "torch", "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "no such weights file" in capsys.readouterr().err


@pytest.mark.parametrize("layers, runs", [
    ([{"type": "gru", "units": 3}], False),
    ([{"type": "gru", "units": 3, "dropout": 0.2}], True),
    ([{"type": "dense", "units": 3}, {"type": "batch_norm"}], True),
])
def test_check_runs_training_mode_where_a_layer_trains_differently(layers, runs):
    said = []
    r = check(spec_of(layers, shape=[None, 2]), progress=said.append)
    assert r.ok, r.failures
    assert any("training mode" in line for line in said) is runs
