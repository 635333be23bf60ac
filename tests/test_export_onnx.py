"""`seqspec export --to onnx`: every example spec's ONNX model against both backends, the native
recurrent ops and their attributes, ONNX against keras.layers and torch.nn written by hand,
float64 in onnx's reference evaluator, `check --targets`, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

import seqspec
import seqspec_onnx
from helpers import spec_of
from seqspec._check import BATCH_SIZES, TOLERANCE, _batches, _limit, input_lengths, random_weights
from seqspec._inputs import draw_inputs
from seqspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
KERAS, TORCH = seqspec.get_backend("keras"), seqspec.get_backend("torch")


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    if x.dtype == np.float64:
        return ReferenceEvaluator(model).run(None, {"x": x})[0]
    return _session(model).run(None, {"x": x})[0]


class Exported:
    """One spec exported with check's random weights, and both backends' models holding the same."""

    def __init__(self, spec: seqspec.Spec):
        self.spec = spec
        self.weights = random_weights(spec, 7)
        self.model, self.notes = seqspec_onnx.to_onnx(spec, self.weights)
        self.keras = KERAS.build(spec, self.weights)
        self.torch = TORCH.build(spec, self.weights)

    def nodes(self, op_type: str) -> list:
        return [n for n in self.model.graph.node if n.op_type == op_type]

    def initializer(self, name: str) -> np.ndarray:
        return next(numpy_helper.to_array(t) for t in self.model.graph.initializer if t.name == name)


_exported: dict[str, Exported] = {}


def exported(name: str) -> Exported:
    """Each example spec exported once per session."""
    if name not in _exported:
        _exported[name] = Exported(seqspec.load(str(ROOT / "specs" / f"{name}.yaml")))
    return _exported[name]


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


# --- every example spec, against both backends ----------------------------------------------------


def test_the_token_spec_exports_with_its_mask_and_integer_input():
    e = exported("sentiment_tokens")
    (x,) = e.model.graph.input
    assert x.type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert [d.dim_param for d in x.type.tensor_type.shape.dim] == ["batch", "time"]
    assert e.nodes("Gather") and e.nodes("Scan") and not e.nodes("GRU")  # the GRU reads the mask: a Scan
    assert e.notes[0] == "onnx: opset 21, float32, input [batch, time] int32 token ids"


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_example_spec_exports_and_equals_both_backends(path):
    """At check's batches, lengths and inputs: token ids, and masked rows where the spec makes a mask."""
    e = exported(path.stem)
    onnx.checker.check_model(e.model, full_check=True)
    session = _session(e.model)
    rng = np.random.default_rng(0)
    tol = TOLERANCE["float32"]
    for t in input_lengths(e.spec):
        for b, pattern in _batches(e.spec):
            x = draw_inputs(e.spec, rng, b, t, pattern)
            y = session.run(None, {"x": x})[0]
            for name, backend, model in (("keras", KERAS, e.keras), ("torch", TORCH, e.torch)):
                want = backend.predict(model, x)
                assert y.shape == want.shape, f"{name}, batch {b}, length {t}, {pattern}"
                d = float(np.max(np.abs(y.astype(np.float64) - want)))
                assert d <= _limit(tol, want), f"{name}, batch {b}, length {t}, {pattern}: differs by {d:.3g}"


def test_the_onnx_target_has_a_builder_for_every_node_and_every_activation():
    nodes = seqspec.LAYER_CLASSES + seqspec.CELL_CLASSES
    missing = [seqspec_onnx.BUILDERS.missing(c) for c in nodes if c not in seqspec_onnx.BUILDERS]
    from seqspec_onnx._builders import MASKS

    missing += [f"no mask for {c.__name__} in MASKS" for c in seqspec.LAYER_CLASSES if c.mask_rule == seqspec.MAKES and c not in MASKS]
    from seqspec_onnx._activations import ACTIVATIONS

    missing += [ACTIVATIONS.missing(a) for a in seqspec.ACTIVATIONS if a not in ACTIVATIONS]
    assert missing == []


# --- native recurrent ops and their attributes ----------------------------------------------------


def test_lstm_is_the_native_op_with_onnx_gate_order():
    e = exported("seq2seq_lstm")
    lstms = e.nodes("LSTM")
    assert len(lstms) == 2 and not e.nodes("Scan") and not e.nodes("Loop")
    w = e.initializer(lstms[0].input[1])[0]  # [4u, in], gates i, o, f, c
    u = 20
    for k, gate in enumerate("iofg"):
        np.testing.assert_array_equal(w[k * u : (k + 1) * u], e.weights[f"layers.0.kernel_{gate}"].T)
    b = e.initializer(lstms[0].input[3])[0]
    np.testing.assert_array_equal(b[2 * u : 3 * u], e.weights["layers.0.bias_f"])
    np.testing.assert_array_equal(b[4 * u :], 0.0)  # the recurrent biases: canonical LSTMs have one bias per gate
    assert _attrs(lstms[0])["hidden_size"] == u


def test_peephole_lstm_is_the_native_lstm_with_its_peephole_input():
    e = exported("peephole_lstm")
    lstms = e.nodes("LSTM")
    assert len(lstms) == 2 and not e.nodes("Scan")
    p = e.initializer(lstms[0].input[7])[0]  # P: [3u], in the order i, o, f
    u = 20
    for k, gate in enumerate("iof"):
        np.testing.assert_array_equal(p[k * u : (k + 1) * u], e.weights[f"layers.0.peephole_{gate}"])


@pytest.mark.parametrize("name, linear_before_reset", [("seq2seq_gru", 1), ("gru_textbook", 0)])
def test_gru_is_the_native_op_with_linear_before_reset_for_reset_after(name, linear_before_reset):
    e = exported(name)
    grus = e.nodes("GRU")
    assert len(grus) == 2 and not e.nodes("Scan")
    assert all(_attrs(g)["linear_before_reset"] == linear_before_reset for g in grus)
    w = e.initializer(grus[0].input[1])[0]
    u = _attrs(grus[0])["hidden_size"]
    for k, gate in enumerate("zrg"):
        np.testing.assert_array_equal(w[k * u : (k + 1) * u], e.weights[f"layers.0.kernel_{gate}"].T)
    if name == "gru_textbook":  # recurrent_activation hard_sigmoid is Keras 3's relu6(x + 3) / 6
        a = _attrs(grus[1])
        assert [s.decode() for s in a["activations"]] == ["HardSigmoid", "Tanh"]
        assert a["activation_alpha"] == pytest.approx([1 / 6] * 2) and a["activation_beta"] == [0.5, 0.5]


def test_bidirectional_is_one_native_op_per_layer_and_simple_rnn_is_rnn():
    e = exported("bidirectional")
    ops = e.nodes("LSTM") + e.nodes("GRU")
    assert [o.op_type for o in ops] == ["LSTM", "GRU"]
    assert all(_attrs(o)["direction"] == b"bidirectional" for o in ops)
    assert len(exported("deep_rnn").nodes("RNN")) == 3


def test_ln_simple_rnn_is_a_scan_and_says_so():
    e = exported("seq2seq_ln_rnn")
    assert len(e.nodes("Scan")) == 2 and not e.nodes("RNN") and not e.nodes("Loop")
    assert any("ln_simple_rnn) is a Scan over time: ONNX has no layer-normalised RNN op" in n for n in e.notes)


def test_same_padding_with_a_stride_pads_by_the_length_at_run_time():
    e = exported("conv_classifier")
    assert e.nodes("Pad") and e.nodes("Shape")  # TensorFlow's 'same' pads depend on T when strided
    assert all(_attrs(c)["pads"] == [0, 0] for c in e.nodes("Conv"))


# --- the Scan form and every merge mode, against both backends -----------------------------------

SCAN_STACKS = {
    # activations the recurrent ops lack, in both directions and every merge mode
    "selu_concat": [{"type": "bidirectional", "layer": {"type": "simple_rnn", "units": 5, "activation": "selu", "return_sequences": True}}],
    "softplus_lstm_mul": [{"type": "bidirectional", "merge_mode": "mul", "layer": {"type": "lstm", "units": 4, "activation": "softplus"}}],
    "silu_gru_ave": [{"type": "bidirectional", "merge_mode": "ave", "layer": {"type": "gru", "units": 4, "recurrent_activation": "silu", "reset_after": False, "return_sequences": True}}],
    "mixed_alphas_sum": [
        {"type": "bidirectional", "merge_mode": "sum", "layer": {"type": "gru", "units": 3, "activation": "linear", "recurrent_activation": "hard_sigmoid"}}
    ],
    "native_alphas": [
        {"type": "lstm", "units": 3, "activation": {"name": "leaky_relu", "negative_slope": 0.3}, "return_sequences": True},
        {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 3, "recurrent_activation": "hard_sigmoid", "use_bias": False}},
    ],
    "every_activation": [{"type": "dense", "units": 4, "activation": a} for a in seqspec.ACTIVATIONS if a != "leaky_relu"]
    + [{"type": "dense", "units": 3, "activation": {"name": "leaky_relu", "negative_slope": 1.5}}],
    "strided_windows": [
        {"type": "conv1d", "filters": 4, "kernel_size": 4, "strides": 3, "padding": "same", "activation": "softmax"},
        {"type": "max_pool1d", "pool_size": 3, "strides": 2, "padding": "same"},
        {"type": "avg_pool1d", "pool_size": 2, "padding": "same"},
        {"type": "upsampling1d", "size": 3},
        {"type": "conv1d", "filters": 4, "kernel_size": 3, "dilation_rate": 2, "padding": "same", "groups": 2},
        {"type": "global_max_pool1d"},
    ],
}


@pytest.mark.parametrize("name", SCAN_STACKS)
def test_scan_forms_merges_and_windows_equal_both_backends(name):
    spec = spec_of(SCAN_STACKS[name], [None, 2])
    w = random_weights(spec, 3)
    model, notes = seqspec_onnx.to_onnx(spec, w)
    ops = {n.op_type for n in model.graph.node}
    if name == "native_alphas":
        assert "Scan" not in ops and "LSTM" in ops
    elif name not in ("every_activation", "strided_windows"):
        assert "Scan" in ops and not ops & {"RNN", "LSTM", "GRU"}
    km, tm = KERAS.build(spec, w), TORCH.build(spec, w)
    session = _session(model)
    rng = np.random.default_rng(1)
    for t in (1, 2, 5, 6, 9, 40):
        x = rng.standard_normal((3, t, 2)).astype("float32")
        y = session.run(None, {"x": x})[0]
        for backend, m in ((KERAS, km), (TORCH, tm)):
            want = backend.predict(m, x)
            np.testing.assert_allclose(y, want, rtol=0, atol=_limit(1e-5, want), err_msg=f"{backend.name}, length {t}")


# --- against keras.layers and torch.nn written by hand ----------------------------------------------


def _gru_spec(reset_after: bool):
    return spec_of([{"type": "gru", "units": 5, "reset_after": reset_after, "return_sequences": True}], [None, 3], dtype="float32")


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_against_keras_gru_by_hand(reset_after):
    import keras

    spec = _gru_spec(reset_after)
    w = random_weights(spec, 11)
    model, _ = seqspec_onnx.to_onnx(spec, w)
    layer = keras.layers.GRU(5, reset_after=reset_after, return_sequences=True)
    x = np.random.default_rng(2).standard_normal((3, 9, 3)).astype("float32")
    layer.build((None, 9, 3))
    kernel = np.concatenate([w[f"layers.0.kernel_{g}"] for g in "zrg"], axis=1)  # Keras: columns z, r, h
    recurrent = np.concatenate([w[f"layers.0.recurrent_kernel_{g}"] for g in "zrg"], axis=1)
    bias = np.concatenate([w[f"layers.0.bias_{g}"] for g in "zrg"])
    if reset_after:
        bias = np.stack([bias, np.concatenate([w[f"layers.0.recurrent_bias_{g}"] for g in "zrg"])])
    layer.set_weights([kernel, recurrent, bias])
    want = np.asarray(layer(x))
    np.testing.assert_allclose(_session(model).run(None, {"x": x})[0], want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_go_backwards_against_keras_by_hand(kind):
    """go_backwards on the native ops: the steps read from the end, the outputs in the order read (as Keras)."""
    import keras

    spec = spec_of([{"type": kind, "units": 4, "go_backwards": True, "return_sequences": True}], [None, 3])
    w = random_weights(spec, 14)
    model, _ = seqspec_onnx.to_onnx(spec, w)
    assert [n.op_type for n in model.graph.node if n.op_type in ("LSTM", "GRU", "Scan")] == [kind.upper()]
    gates = seqspec.LSTM_GATES if kind == "lstm" else seqspec.GRU_GATES
    layer = (keras.layers.LSTM if kind == "lstm" else keras.layers.GRU)(4, go_backwards=True, return_sequences=True)
    layer.build((None, 8, 3))
    stack = [np.concatenate([w[f"layers.0.{k}_{g}"] for g in gates], axis=-1) for k in ("kernel", "recurrent_kernel", "bias")]
    if kind == "gru":
        stack[2] = np.stack([stack[2], np.concatenate([w[f"layers.0.recurrent_bias_{g}"] for g in gates])])
    layer.set_weights(stack)
    x = np.random.default_rng(5).standard_normal((3, 8, 3)).astype("float32")
    np.testing.assert_allclose(_session(model).run(None, {"x": x})[0], np.asarray(layer(x)), rtol=0, atol=1e-5)


def test_gru_reset_after_against_torch_gru_by_hand():
    import torch

    spec = _gru_spec(True)
    w = random_weights(spec, 12)
    model, _ = seqspec_onnx.to_onnx(spec, w)
    gru = torch.nn.GRU(3, 5, batch_first=True)
    with torch.no_grad():  # torch: rows r, z, n
        gru.weight_ih_l0.copy_(torch.from_numpy(np.concatenate([w[f"layers.0.kernel_{g}"].T for g in "rzg"])))
        gru.weight_hh_l0.copy_(torch.from_numpy(np.concatenate([w[f"layers.0.recurrent_kernel_{g}"].T for g in "rzg"])))
        gru.bias_ih_l0.copy_(torch.from_numpy(np.concatenate([w[f"layers.0.bias_{g}"] for g in "rzg"])))
        gru.bias_hh_l0.copy_(torch.from_numpy(np.concatenate([w[f"layers.0.recurrent_bias_{g}"] for g in "rzg"])))
        x = np.random.default_rng(3).standard_normal((3, 9, 3)).astype("float32")
        want = gru(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(_session(model).run(None, {"x": x})[0], want, rtol=0, atol=1e-5)


def test_peephole_lstm_against_the_equations_by_hand():
    # Neither Keras 3 nor torch has a peephole LSTM: Gers and Schmidhuber's equations in NumPy, float64.
    spec = spec_of([{"type": "rnn", "cell": {"type": "peephole_lstm", "units": 4}, "return_sequences": True}], [None, 2], dtype="float64")
    w = {k: v for k, v in random_weights(spec, 13).items()}
    model, _ = seqspec_onnx.to_onnx(spec, w)
    assert [n.op_type for n in model.graph.node if n.op_type in ("LSTM", "Scan")] == ["LSTM"]
    x = np.random.default_rng(4).standard_normal((2, 6, 2))

    def g(name):
        return w[f"layers.0.{name}"]

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    h, c, outs = np.zeros((2, 4)), np.zeros((2, 4)), []
    for t in range(6):
        z = {k: x[:, t] @ g(f"kernel_{k}") + h @ g(f"recurrent_kernel_{k}") + g(f"bias_{k}") for k in "ifgo"}
        i, f = sigmoid(z["i"] + g("peephole_i") * c), sigmoid(z["f"] + g("peephole_f") * c)
        c = f * c + i * np.tanh(z["g"])
        h = sigmoid(z["o"] + g("peephole_o") * c) * np.tanh(c)
        outs.append(h)
    np.testing.assert_allclose(_run(model, x), np.stack(outs, axis=1), rtol=0, atol=1e-12)


# --- float64 in the reference evaluator ------------------------------------------------------------


def test_float64_runs_in_the_reference_evaluator_within_check_tolerance():
    layers = [
        {"type": "gru", "units": 4, "recurrent_activation": "hard_sigmoid", "return_sequences": True},  # a Scan in float64
        {"type": "bidirectional", "layer": {"type": "lstm", "units": 3, "return_sequences": True}},  # native
        {"type": "conv1d", "filters": 3, "kernel_size": 3, "strides": 2, "padding": "same"},
        {"type": "layer_norm"},
        {"type": "dense", "units": 2, "activation": "hard_sigmoid"},
    ]
    spec = spec_of(layers, [None, 2], dtype="float64")
    w = random_weights(spec, 5)
    model, notes = seqspec_onnx.to_onnx(spec, w)
    assert any("in float64 the ONNX op runs only with its default activations" in n for n in notes)
    tm = TORCH.build(spec, w)
    for t in (1, 8, 33):
        x = np.random.default_rng(t).standard_normal((3, t, 2))
        want = TORCH.predict(tm, x)
        np.testing.assert_allclose(_run(model, x), want, rtol=0, atol=_limit(TOLERANCE["float64"], want))


# --- the API, the runner, check --targets --------------------------------------------------------


def test_api_export_writes_a_model_the_runner_runs_without_seqspec(tmp_path):
    spec = seqspec.load(str(ROOT / "specs" / "encoder_decoder.yaml"))
    out = tmp_path / "m.onnx"
    notes = seqspec.export(spec, "onnx", out)
    assert notes[0].startswith("onnx: opset 21, float32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary left beside it
    x = np.random.default_rng(0).standard_normal((2, 11, 1)).astype("float32")
    np.savez(tmp_path / "in.npz", x0=x, x1=x[:1, :3])
    done = subprocess.run([sys.executable, "-I", str(seqspec_onnx.RUNNER), str(out), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    tm = TORCH.build(spec)  # the spec's seeded initial weights, as export without weights
    with np.load(tmp_path / "out.npz") as y:
        np.testing.assert_allclose(y["y0"], TORCH.predict(tm, x), rtol=0, atol=1e-5)
        np.testing.assert_allclose(y["y1"], TORCH.predict(tm, x[:1, :3]), rtol=0, atol=1e-5)


def test_the_runner_blocks_seqspec_and_fails_in_one_line(tmp_path):
    code = f"import runpy, sys; sys.argv = ['r']; runpy.run_path({str(seqspec_onnx.RUNNER)!r}); import seqspec_keras"
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert done.returncode != 0 and "seqspec_keras is blocked: an exported artifact must run without seqspec" in done.stderr
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    np.savez(tmp_path / "in.npz", x0=np.zeros((1, 2, 1), "float32"))
    done = subprocess.run([sys.executable, "-I", str(seqspec_onnx.RUNNER), str(tmp_path / "bad.onnx"), str(tmp_path / "in.npz"), str(tmp_path / "o.npz")], capture_output=True, text=True)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(str(tmp_path / "bad.onnx"))


def test_batch_and_time_are_symbolic_unless_a_shape_is_fixed():
    e = exported("seq2seq_gru")
    dims = [d.dim_param or d.dim_value for d in e.model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "time", 1]
    fixed, notes = seqspec_onnx.to_onnx(e.spec, e.weights, shape=(2, 9, 1))
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [2, 9, 1]
    assert [d.dim_value for d in fixed.graph.output[0].type.tensor_type.shape.dim] == [2, 9, 10]
    assert notes[0] == "onnx: opset 21, float32, input [2, 9, 1]"
    x = np.random.default_rng(0).standard_normal((2, 9, 1)).astype("float32")
    np.testing.assert_array_equal(_run(fixed, x), _run(e.model, x))


def test_api_export_takes_weights_as_a_dict_or_a_safetensors_file(tmp_path):
    spec = seqspec.load(str(ROOT / "specs" / "next_simple_rnn.yaml"))
    w = random_weights(spec, 9)
    seqspec.save_weights(w, str(tmp_path / "w.safetensors"), spec)
    seqspec.export(spec, "onnx", tmp_path / "a.onnx", weights=w)
    seqspec.export(spec, "onnx", tmp_path / "b.onnx", weights=tmp_path / "w.safetensors", dtype="float64")
    a, b = onnx.load(str(tmp_path / "a.onnx")), onnx.load(str(tmp_path / "b.onnx"))
    assert b.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    x = np.random.default_rng(0).standard_normal((3, 7, 1))
    want = TORCH.predict(TORCH.build(spec, w), x.astype("float32"))
    np.testing.assert_allclose(_run(a, x.astype("float32")), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(_run(b, x), want, rtol=0, atol=1e-5)


def test_check_targets_onnx_reports_the_differences_per_target(capsys):
    path = str(ROOT / "specs" / "next_simple_rnn.yaml")
    assert main(["check", path, "--targets", "onnx", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    onnx_result = result["targets"]["onnx"]
    assert onnx_result["ok"] and onnx_result["exported"] and result["ok"]
    assert sorted(onnx_result["max_abs_diff"]) == ["keras", "torch"]
    assert 0 < onnx_result["max_abs_diff"]["torch"] <= 1e-5
    assert sorted(map(tuple, onnx_result["cases"])) == sorted((b, t) for t in (1, 7, 500) for b in (1, 3))
    assert main(["check", path, "--targets", "onnx"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("  onnx: ok: max abs diff vs keras ") and "(batches 1, 3, lengths 1, 7, 500; tolerance 1e-05)" in lines[1]


def test_check_targets_fails_when_an_artifact_differs(monkeypatch):
    from seqspec._export import check_targets
    from seqspec_onnx import _builders

    monkeypatch.setattr(_builders, "ONNX_LSTM_GATES", ("i", "f", "o", "g"))  # a swapped gate order must show
    e = exported("encoder_decoder")
    predict = {"keras": lambda x: KERAS.predict(e.keras, x), "torch": lambda x: TORCH.predict(e.torch, x)}
    result = check_targets(e.spec, ["onnx"], e.weights, predict, [7], BATCH_SIZES, TOLERANCE["float32"])["onnx"]
    assert result.exported and not result.ok
    assert result.failures[0].startswith("onnx differs from keras by ") and "at batch 1, length 7 (tolerance " in result.failures[0]
    assert result.line().startswith("onnx: FAILED: max abs diff vs keras ")


# --- bad input: one line, the right exit code, nothing half-written -------------------------------


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_unknown_target_is_one_line_with_a_suggestion(capsys, tmp_path):
    spec = str(ROOT / "specs" / "deep_rnn.yaml")
    with pytest.raises(SystemExit) as exit:
        main(["export", spec, "--to", "onx", "-o", str(tmp_path / "m.onnx")])
    assert exit.value.code == 2
    assert "argument --to: unknown export target 'onx'; did you mean 'onnx'?" in _one_line_error(capsys)
    with pytest.raises(seqspec.BackendError, match=r"unknown export target 'onx'; did you mean 'onnx'\?"):
        seqspec.export(seqspec.load(spec), "onx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_target_not_installed_names_the_extra(capsys, tmp_path, monkeypatch):
    from seqspec import _export

    monkeypatch.setitem(_export.TARGETS, "litert", ("seqspec_keras._no_such_module", ".tflite"))
    monkeypatch.delitem(_export._loaded, "litert", raising=False)
    assert main(["export", str(ROOT / "specs" / "deep_rnn.yaml"), "--to", "litert", "-o", str(tmp_path / "m.tflite")]) == 2
    line = _one_line_error(capsys)
    assert line == "the litert target needs seqspec_keras._no_such_module, which is not installed: pip install 'seqspec[litert]'"
    assert main(["check", str(ROOT / "specs" / "deep_rnn.yaml"), "--targets", "onnx,litert"]) == 2
    assert _one_line_error(capsys) == line
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path_is_one_line_and_writes_nothing(capsys, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root ignores the mode: a path under a file cannot be written by anyone
            target = tmp_path / "file"
            target.write_text("x")
            out = target / "m.onnx"
        else:
            out = folder / "m.onnx"
        assert main(["export", str(ROOT / "specs" / "deep_rnn.yaml"), "--to", "onnx", "-o", str(out)]) == 1
        assert _one_line_error(capsys).startswith("seqspec: ")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_wrong_suffix_and_a_folder_are_refused(capsys, tmp_path):
    spec = str(ROOT / "specs" / "deep_rnn.yaml")
    assert main(["export", spec, "--to", "onnx", "-o", str(tmp_path / "m.pt")]) == 2
    assert _one_line_error(capsys).endswith("the onnx target writes .onnx files; name the output *.onnx")
    assert main(["export", spec, "--to", "onnx", "-o", str(tmp_path)]) == 2
    assert _one_line_error(capsys).endswith("is a folder; name the output file *.onnx")


@pytest.mark.parametrize("content", [b"", b"garbage, not safetensors", None])
def test_unreadable_weights_are_one_line_and_write_nothing(capsys, tmp_path, content):
    weights = tmp_path / "w.safetensors"
    if content is not None:
        weights.write_bytes(content)
    out = tmp_path / "out" / "m.onnx"
    assert main(["export", str(ROOT / "specs" / "deep_rnn.yaml"), "--to", "onnx", "-o", str(out), "--weights", str(weights)]) == 2
    line = _one_line_error(capsys)
    assert line.startswith(str(weights)) and ("no such weights file" in line or "not a readable .safetensors file" in line)
    assert not out.exists()


def test_weights_of_another_spec_are_one_line(capsys, tmp_path):
    other = seqspec.load(str(ROOT / "specs" / "seq2seq_gru.yaml"))
    seqspec.save_weights(seqspec.initial_weights(other), str(tmp_path / "w.safetensors"), other)
    assert main(["export", str(ROOT / "specs" / "deep_rnn.yaml"), "--to", "onnx", "-o", str(tmp_path / "m.onnx"), "--weights", str(tmp_path / "w.safetensors")]) == 2
    assert "does not fit spec 'deep_rnn'" in _one_line_error(capsys)
    assert not (tmp_path / "m.onnx").exists()


def test_a_failing_export_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    spec = seqspec.load(str(ROOT / "specs" / "deep_rnn.yaml"))
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the old model")

    def half_then_fail(spec, weights, path, dtype, shape=None):
        Path(path).write_bytes(b"half a model")
        raise seqspec.BackendError("layers[0]: cannot")

    monkeypatch.setattr(seqspec_onnx, "export_artifact", half_then_fail)
    with pytest.raises(seqspec.BackendError):
        seqspec.export(spec, "onnx", out)
    assert out.read_bytes() == b"the old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_spec_without_seed_needs_weights(capsys, tmp_path):
    (tmp_path / "s.yaml").write_text("seqspec: 1\nname: s\ninput: {shape: [null, 1]}\nlayers:\n  - {type: gru, units: 2}\n")
    assert main(["export", str(tmp_path / "s.yaml"), "--to", "onnx", "-o", str(tmp_path / "m.onnx")]) == 2
    assert "the spec has no seed: give weights (--weights W.safetensors) or set `seed:`" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_cli_export_prints_its_notes_and_the_file(capsys, tmp_path):
    out = tmp_path / "ln.onnx"
    assert main(["export", str(ROOT / "specs" / "seq2seq_ln_rnn.yaml"), "--to", "onnx", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "onnx: opset 21, float32, input [batch, time, features]"
    assert "is a Scan over time" in lines[1] and lines[-1].endswith(f"wrote {out} (onnx)")
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
