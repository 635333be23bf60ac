"""The torch-export, saved-model and litert artifacts: each exported once per session, run through its RUNNER in a
fresh process that refuses seqspec imports, and compared with both backends at batch 1 and 3 and check's lengths.

The specs cover every recurrent cell (lstm, gru in both forms, simple_rnn, peephole_lstm, ln_simple_rnn),
bidirectional, a vector input, the custom Keras layers (WaveNet, the cells) and a spec that needs a fixed
shape; benchmarks/export_matrix.py runs every example spec x target (minutes: conversions are slow).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

import seqspec
from seqspec._check import TOLERANCE, _batches, input_lengths, random_weights
from seqspec._inputs import ANYWHERE, END_PADDING, draw_inputs
from seqspec_keras import _litert, _saved_model
from seqspec_torch import _torch_export

SPECS = pathlib.Path(__file__).resolve().parent.parent / "specs"


def _load(name: str, dtype: str = "float32") -> seqspec.Spec:
    spec = seqspec.load(SPECS / f"{name}.yaml")
    if dtype != spec.dtype:
        copy = spec.model_copy(update={"dtype": dtype})
        copy._source = spec._source
        spec = copy
    return spec


def _cases(spec: seqspec.Spec, dtype: str) -> list[np.ndarray]:
    """check's inputs at check's lengths and batches: token ids, and rows masked at the end and
    anywhere where the spec makes a mask (spec is in `dtype`)."""
    rng = np.random.default_rng(0)
    return [draw_inputs(spec, rng, b, t, pattern) for t in input_lengths(spec) for b, pattern in _batches(spec)]


def _run(module, artifact: pathlib.Path, xs: list[np.ndarray], tmp: pathlib.Path) -> list[np.ndarray]:
    """All of xs through the target's runner, in one fresh isolated process (-I: no PYTHONPATH, so no seqspec either way)."""
    return _run_many(module, [(artifact, xs)], tmp)[0]


def _run_many(module, jobs: list[tuple[pathlib.Path, list[np.ndarray]]], tmp: pathlib.Path) -> list[list[np.ndarray]]:
    """Each (artifact, xs) through the target's runner, all in one fresh isolated process (one start of the framework)."""
    argv = []
    for k, (artifact, xs) in enumerate(jobs):
        np.savez(tmp / f"in{k}.npz", **{f"x{i}": x for i, x in enumerate(xs)})
        argv += [str(artifact), str(tmp / f"in{k}.npz"), str(tmp / f"out{k}.npz")]
    r = subprocess.run([sys.executable, "-I", str(module.RUNNER), *argv], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    ys = []
    for k, (_, xs) in enumerate(jobs):
        with np.load(tmp / f"out{k}.npz") as out:
            ys.append([out[f"y{i}"] for i in range(len(xs))])
    return ys


def _assert_agrees(spec: seqspec.Spec, weights, xs, ys, dtype: str) -> float:
    """Each y equals both backends' output for its x within check's tolerance; returns the largest difference."""
    worst = 0.0
    for name in ("keras", "torch"):
        backend = seqspec.get_backend(name)
        model = backend.build(spec, weights)
        for x, y in zip(xs, ys):
            ref = backend.predict(model, x)
            assert y.shape == ref.shape and y.dtype == ref.dtype, f"{name}: {y.shape} {y.dtype} vs {ref.shape} {ref.dtype}"
            d = float(np.max(np.abs(ref.astype(np.float64) - y.astype(np.float64))))
            limit = TOLERANCE[dtype] * max(1.0, float(np.max(np.abs(ref))))
            assert d <= limit, f"{name}, input {x.shape}: differs by {d:.3g} (tolerance {limit:.3g})"
            worst = max(worst, d)
    return worst


# --- torch-export: dynamic batch and time, one artifact for every case ------------------------------------

def _export_each(cases, module, artifact: str, tmp_path_factory) -> dict:
    """{(name, dtype): (spec, weights, dtype, folder, notes, xs)}: each case exported by `module` into folder/artifact, with check's inputs."""
    made = {}
    for name, dtype in cases:
        spec = _load(name, dtype)
        weights = random_weights(spec, 1)
        tmp = tmp_path_factory.mktemp(f"{module.__name__.rpartition('_')[2]}-{name}")
        notes = module.export_artifact(spec, weights, tmp / artifact, dtype)
        made[name, dtype] = (spec, weights, dtype, tmp, notes, _cases(spec, dtype))
    return made


TORCH_DYNAMIC = [
    ("bidirectional", "float32"),
    ("peephole_lstm", "float32"),
    ("gru_textbook", "float64"),
    ("vector_to_sequence", "float32"),
    ("seq2seq_ln_rnn", "float32"),
    ("sentiment_tokens", "float64"),  # token ids, a mask from embedding's mask_zero
]


@pytest.fixture(scope="module")
def torch_programs(tmp_path_factory):
    """Every TORCH_DYNAMIC spec exported, and all run in one fresh process: {(name, dtype): (spec, weights, dtype, folder, notes, xs, ys)}."""
    for name, dtype in TORCH_DYNAMIC:
        assert _torch_export.needs_fixed_shape(_load(name, dtype), dtype) is None
    made = _export_each(TORCH_DYNAMIC, _torch_export, "m.pt2", tmp_path_factory)
    # Two more, run in the same process: hourglass at a fixed shape, one LSTM layer to compare with nn.LSTM.
    spec = _load("hourglass")
    weights, tmp = random_weights(spec, 1), tmp_path_factory.mktemp("torch-hourglass")
    x = np.random.default_rng(0).standard_normal((3, 7, 1)).astype("float32")
    made["hourglass", "fixed"] = (spec, weights, "float32", tmp, _torch_export.export_artifact(spec, weights, tmp / "m.pt2", "float32", x.shape), [x])
    spec = _load("seq2seq_lstm")
    spec = spec.model_copy(update={"layers": spec.layers[:1]})
    weights, tmp = random_weights(spec, 3), tmp_path_factory.mktemp("torch-lstm")
    xs = [np.random.default_rng(2).standard_normal((b, t, 1)).astype("float32") for b, t in ((1, 1), (3, 9), (2, 300))]
    made["lstm", "by-hand"] = (spec, weights, "float32", tmp, _torch_export.export_artifact(spec, weights, tmp / "m.pt2", "float32"), xs)
    ys = _run_many(_torch_export, [(m[3] / "m.pt2", m[5]) for m in made.values()], tmp_path_factory.mktemp("torch-runs"))
    return {key: (*m, y) for (key, m), y in zip(made.items(), ys)}


@pytest.fixture(params=TORCH_DYNAMIC, ids=[f"{n}-{d}" for n, d in TORCH_DYNAMIC])
def torch_program(request, torch_programs):
    return torch_programs[request.param]


def test_torch_export_runs_without_seqspec_at_any_batch_and_length(torch_program):
    spec, weights, dtype, tmp, notes, xs, ys = torch_program
    _assert_agrees(spec, weights, xs, ys, dtype)
    assert all("\n" not in n for n in notes) and "dynamic" in notes[0]


def test_torch_export_program_has_a_symbolic_time_axis_and_a_scan(torch_program):
    import torch

    spec, _, _, tmp, *_ = torch_program
    program = torch.export.load(tmp / "m.pt2")
    (x,) = [n for n in program.graph.nodes if n.op == "placeholder" and n.name == "x"]
    sizes = x.meta["val"].shape
    assert all(not isinstance(d, int) for d in sizes[:1 if len(spec.input.shape) == 1 and not spec.input.tokens else 2]), sizes
    assert any("scan" in str(n.target) for n in program.graph.nodes if n.op == "call_function")


def test_torch_export_matches_torch_nn_lstm_written_by_hand(torch_programs):
    """Against torch.nn.LSTM itself, loaded from the canonical weights by hand (gates i, f, g, o)."""
    import torch

    _, w, _, _, _, xs, ys = torch_programs["lstm", "by-hand"]
    lstm = torch.nn.LSTM(1, 20, batch_first=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(np.concatenate([w[f"layers.0.kernel_{g}"] for g in "ifgo"], 1).T))
        lstm.weight_hh_l0.copy_(torch.from_numpy(np.concatenate([w[f"layers.0.recurrent_kernel_{g}"] for g in "ifgo"], 1).T))
        lstm.bias_ih_l0.copy_(torch.from_numpy(np.concatenate([w[f"layers.0.bias_{g}"] for g in "ifgo"])))
        lstm.bias_hh_l0.zero_()
    for x, y in zip(xs, ys):
        with torch.no_grad():
            ref = lstm(torch.from_numpy(x))[0].numpy()
        np.testing.assert_allclose(y, ref, atol=1e-5, rtol=0)


def test_torch_export_of_a_strided_spec_needs_a_fixed_shape_and_says_where(tmp_path, torch_programs):
    spec = _load("hourglass")
    reason = _torch_export.needs_fixed_shape(spec, "float32")
    assert reason is not None and "\n" not in reason and "layers[0]" in reason and "hourglass.yaml:" in reason
    with pytest.raises(seqspec.BackendError) as e:
        _torch_export.export_artifact(spec, random_weights(spec, 1), tmp_path / "m.pt2", "float32")
    assert "\n" not in str(e.value) and "fixed input shape" in str(e.value)
    assert not (tmp_path / "m.pt2").exists()
    # At a fixed shape it exports and agrees.
    _, weights, _, _, notes, xs, ys = torch_programs["hourglass", "fixed"]
    assert any("input fixed at [3, 7, 1]" in n for n in notes)
    _assert_agrees(spec, weights, xs, ys, "float32")


# --- saved-model: a serving signature of [None, None, features] -------------------------------------------

SAVED = [("peephole_lstm", "float32"), ("wavenet_gated", "float32"), ("bidirectional", "float64"), ("vector_to_sequence", "float32"), ("sentiment_tokens", "float32")]


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """Every SAVED spec exported, and all run in one fresh process (one start of TensorFlow)."""
    made = _export_each(SAVED, _saved_model, "model", tmp_path_factory)
    ys = _run_many(_saved_model, [(m[3] / "model", m[5]) for m in made.values()], tmp_path_factory.mktemp("saved-runs"))
    return {key: (*m, y) for (key, m), y in zip(made.items(), ys)}


@pytest.fixture(params=SAVED, ids=[f"{n}-{d}" for n, d in SAVED])
def saved_model(request, saved_models):
    return saved_models[request.param]


def test_saved_model_runs_without_seqspec_at_any_batch_and_length(saved_model):
    spec, weights, dtype, tmp, notes, xs, ys = saved_model
    _assert_agrees(spec, weights, xs, ys, dtype)
    assert len(notes) == 1 and "\n" not in notes[0]


def test_saved_model_signature_is_dynamic_in_batch_and_time(saved_model):
    # In this process: the runner test already proves the load needs no seqspec.
    import tensorflow as tf

    spec, _, dtype, tmp, *_ = saved_model
    (x,) = tf.saved_model.load(str(tmp / "model")).signatures["serving_default"].structured_input_signature[1].values()
    assert x.shape.as_list() == [None, *spec.input.shape] and x.dtype.name == (spec.input.dtype or dtype)


# --- litert: fused LSTM ops, no Flex, fixed shapes ----------------------------------------------------------


@pytest.fixture(scope="module")
def litert_lstm(tmp_path_factory):
    """seq2seq_lstm converted at three of check's (batch, length) cases, every length and both
    batch sizes among them (a conversion costs ~2 s; check --targets litert converts at all six)."""
    spec = _load("seq2seq_lstm")
    weights = random_weights(spec, 1)
    tmp = tmp_path_factory.mktemp("litert")
    xs = [x for x in _cases(spec, "float32") if (x.shape[0], x.shape[1]) in ((1, 1), (3, 7), (3, 500))]
    assert len(xs) == 3
    notes = []
    for k, x in enumerate(xs):
        notes = _litert.export_artifact(spec, weights, tmp / f"m{k}.tflite", "float32", x.shape)
    ys = [y for (y,) in _run_many(_litert, [(tmp / f"m{k}.tflite", [x]) for k, x in enumerate(xs)], tmp)]
    return spec, weights, xs, ys, tmp, notes


def test_litert_lstm_agrees_with_both_backends(litert_lstm):
    spec, weights, xs, ys, _, _ = litert_lstm
    _assert_agrees(spec, weights, xs, ys, "float32")


def test_litert_lstm_uses_the_fused_sequence_lstm_op_and_no_flex(litert_lstm):
    _, _, xs, _, tmp, notes = litert_lstm
    for k in range(len(xs)):
        ops = _litert.op_names((tmp / f"m{k}.tflite").read_bytes())
        assert ops.count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 2, ops  # both LSTM layers fused
        assert "WHILE" not in ops and not any(op.startswith("Flex") for op in ops), ops
    assert any("UNIDIRECTIONAL_SEQUENCE_LSTM" in n and "no Flex" in n for n in notes)


def test_litert_interpreter_lists_the_fused_op(litert_lstm):
    """The same, as LiteRT's own interpreter reports the ops of the converted model."""
    from ai_edge_litert.interpreter import Interpreter

    _, _, _, _, tmp, _ = litert_lstm
    ops = {op["op_name"] for op in Interpreter(model_path=str(tmp / "m0.tflite"))._get_ops_details()}
    assert sorted(ops) == ["FULLY_CONNECTED", "UNIDIRECTIONAL_SEQUENCE_LSTM"]


def test_litert_fused_lstm_states_persist_between_invocations_until_reset(litert_lstm):
    """LiteRT's fused LSTM holds h and c in variable tensors: a second invoke() on the same
    interpreter starts from the first one's final states unless reset_all_variables() is called
    (which the runner and the export note do)."""
    from ai_edge_litert.interpreter import Interpreter

    spec, weights, xs, ys, tmp, notes = litert_lstm
    assert any("reset_all_variables()" in n for n in notes)
    k = next(k for k, x in enumerate(xs) if x.shape[1] > 1)
    interpreter = Interpreter(model_path=str(tmp / f"m{k}.tflite"))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()

    def invoke(reset: bool) -> np.ndarray:
        if reset:
            interpreter.reset_all_variables()
        interpreter.set_tensor(inp["index"], xs[k])
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    first, carried, reset = invoke(False), invoke(False), invoke(True)
    np.testing.assert_array_equal(first, ys[k])  # what the runner returned
    assert float(np.max(np.abs(carried - first))) > 1e-3  # the states carried over
    np.testing.assert_array_equal(reset, first)


def test_litert_non_lstm_recurrence_converts_to_builtin_ops(tmp_path):
    """A GRU has no fused op: it converts to a WHILE loop of builtin ops, no Flex, and agrees."""
    spec = _load("seq2seq_gru")
    weights = random_weights(spec, 1)
    x = np.random.default_rng(0).standard_normal((3, 7, 1)).astype("float32")
    notes = _litert.export_artifact(spec, weights, tmp_path / "m.tflite", "float32", x.shape)
    ops = _litert.op_names((tmp_path / "m.tflite").read_bytes())
    assert "WHILE" in ops and not any(op.startswith("Flex") for op in ops)
    assert any("no fused LSTM" in n for n in notes)
    _assert_agrees(spec, weights, [x], _run(_litert, tmp_path / "m.tflite", [x], tmp_path), "float32")


def test_litert_masked_recurrence_is_a_builtin_loop_and_agrees(tmp_path):
    """Token ids, an embedding's mask and a masked LSTM: TFLite's fused LSTM has no mask input, so
    the masked LSTM converts to a WHILE loop of builtin ops (the unmasked one after it is fused)."""
    from helpers import spec_of

    layers = [
        {"type": "embedding", "input_dim": 30, "output_dim": 4, "mask_zero": True},
        {"type": "lstm", "units": 5, "return_sequences": True},
        {"type": "gru", "units": 3},  # without return_sequences: the mask ends here
        {"type": "repeat_vector", "n": 4},
        {"type": "lstm", "units": 4},  # unmasked: fused
    ]
    spec = spec_of(layers, {"shape": [None], "dtype": "int32"})
    weights = random_weights(spec, 2)
    rng = np.random.default_rng(3)
    xs = [draw_inputs(spec, rng, 6, 9, pattern) for pattern in (END_PADDING, ANYWHERE)]
    notes = _litert.export_artifact(spec, weights, tmp_path / "m.tflite", "float32", xs[0].shape)
    ops = _litert.op_names((tmp_path / "m.tflite").read_bytes())
    assert "WHILE" in ops and not any(op.startswith("Flex") for op in ops), ops
    assert any("layers [4] use the fused UNIDIRECTIONAL_SEQUENCE_LSTM" in n for n in notes), notes
    _assert_agrees(spec, weights, xs, _run(_litert, tmp_path / "m.tflite", xs, tmp_path), "float32")


@pytest.mark.parametrize("dtype, shape, says", [("float64", (1, 7, 1), "float32 only"), ("float32", None, "give the input shape")])
def test_litert_refusals_are_one_located_line(tmp_path, dtype, shape, says):
    spec = _load("seq2seq_lstm", dtype)
    with pytest.raises(seqspec.BackendError) as e:
        _litert.export_artifact(spec, random_weights(spec, 1), tmp_path / "m.tflite", dtype, shape)
    message = str(e.value)
    assert "\n" not in message and says in message and "seq2seq_lstm.yaml:" in message
    assert not (tmp_path / "m.tflite").exists()


# --- the runners ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [_torch_export, _saved_model, _litert], ids=["torch-export", "saved-model", "litert"])
def test_runner_blocks_seqspec_imports_and_fails_in_one_line(module, tmp_path):
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1], run_name='runner');"
        "\ntry:\n import seqspec_torch\nexcept ImportError as e:\n print('blocked:', e)"
    )
    r = subprocess.run([sys.executable, "-I", "-c", code, str(module.RUNNER)], capture_output=True, text=True, timeout=120)
    assert "blocked: seqspec_torch imported while running an exported artifact" in r.stdout, r.stdout + r.stderr
    np.savez(tmp_path / "in.npz", x0=np.zeros((1, 3, 1), "float32"))
    r = subprocess.run([sys.executable, "-I", str(module.RUNNER), str(tmp_path / "missing"), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300)
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith(("WARNING", "INFO", "W0", "I0", "E0"))]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert not (tmp_path / "out.npz").exists()
