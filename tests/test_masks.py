"""Variable-length sequences: masks, token inputs and go_backwards against Keras layers written by hand, the torch mask paths against each other, the mask rules, and classifier training."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

import seqspec
from helpers import spec_of
from seqspec._inputs import ANYWHERE, END_PADDING, draw_inputs, row_masks
from seqspec._labels import score, synthetic_tokens

ROOT = Path(__file__).resolve().parent.parent
TOKENS = {"shape": [None], "dtype": "int32"}
TORCH = seqspec.get_backend("torch")


# --- the seqspec torch model against the same model written by hand in Keras ---------------------


def _gates(w, prefix, gates, kind):
    return np.concatenate([w[f"{prefix}{kind}_{g}"] for g in gates], axis=-1)


def _recurrent_weights(node, w, prefix):
    """The Keras weights of one recurrent layer from canonical arrays (docs/weights.md)."""
    if node["type"] == "simple_rnn":
        return [w[prefix + "kernel"], w[prefix + "recurrent_kernel"], w[prefix + "bias"]]
    gates = seqspec.LSTM_GATES if node["type"] == "lstm" else seqspec.GRU_GATES
    out = [_gates(w, prefix, gates, "kernel"), _gates(w, prefix, gates, "recurrent_kernel")]
    bias = _gates(w, prefix, gates, "bias")
    if node["type"] == "gru" and node.get("reset_after", True):
        bias = np.stack([bias, _gates(w, prefix, gates, "recurrent_bias")])
    return out + [bias]


def _keras_layer(node):
    kinds = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple_rnn": keras.layers.SimpleRNN}
    if node["type"] in kinds:
        keys = {k: v for k, v in node.items() if k != "type"}
        return kinds[node["type"]](dtype="float64", **keys)
    if node["type"] == "bidirectional":
        return keras.layers.Bidirectional(_keras_layer(node["layer"]), merge_mode=node.get("merge_mode", "concat"), dtype="float64")
    if node["type"] == "masking":
        return keras.layers.Masking(node.get("mask_value", 0.0), dtype="float64")
    if node["type"] == "embedding":
        return keras.layers.Embedding(node["input_dim"], node["output_dim"], mask_zero=node.get("mask_zero", False), dtype="float64")
    if node["type"] == "dense":
        return keras.layers.Dense(node["units"], dtype="float64")
    if node["type"] == "global_avg_pool1d":
        return keras.layers.GlobalAveragePooling1D(dtype="float64")
    raise AssertionError(node["type"])


def _call(model, x):
    # Not model.predict: it casts float64 arrays to floatx (float32).
    return keras.ops.convert_to_numpy(model(x, training=False))


def _hand_written_keras(layers, shape, w):
    """keras.layers written by hand for `layers`, with the canonical weights `w` set on them."""
    tokens = isinstance(shape, dict)
    x = inputs = keras.Input(shape=tuple(shape["shape"] if tokens else shape), dtype="int32" if tokens else "float64")
    for i, node in enumerate(layers):
        layer = _keras_layer(node)
        x = layer(x)
        prefix = f"layers.{i}."
        if node["type"] in ("lstm", "gru", "simple_rnn"):
            layer.set_weights(_recurrent_weights(node, w, prefix))
        elif node["type"] == "bidirectional":
            layer.set_weights(_recurrent_weights(node["layer"], w, prefix + "forward.") + _recurrent_weights(node["layer"], w, prefix + "backward."))
        elif node["type"] == "embedding":
            layer.set_weights([w[prefix + "embeddings"]])
        elif node["type"] == "dense":
            layer.set_weights([w[prefix + "kernel"], w[prefix + "bias"]])
    return keras.Model(inputs, x)


HAND_WRITTEN = {
    "masking-lstm-lstm": (
        [{"type": "masking"}, {"type": "lstm", "units": 4, "return_sequences": True}, {"type": "lstm", "units": 3}],
        [None, 3],
    ),
    "masking-gru_sequences": ([{"type": "masking", "mask_value": 0.25}, {"type": "gru", "units": 4, "return_sequences": True}], [None, 2]),
    "masking-gru_reset_before-simple_rnn_backwards": (
        [
            {"type": "masking"},
            {"type": "gru", "units": 4, "reset_after": False, "return_sequences": True},
            {"type": "simple_rnn", "units": 3, "go_backwards": True},
        ],
        [None, 2],
    ),
    "masking-simple_rnn_backwards_sequences": (
        [{"type": "masking"}, {"type": "simple_rnn", "units": 3, "go_backwards": True, "return_sequences": True}],
        [None, 2],
    ),
    "embedding-bidirectional_lstm-gru_backwards-dense": (
        [
            {"type": "embedding", "input_dim": 20, "output_dim": 4, "mask_zero": True},
            {"type": "bidirectional", "layer": {"type": "lstm", "units": 3, "return_sequences": True}},
            {"type": "gru", "units": 3, "go_backwards": True},
            {"type": "dense", "units": 2},
        ],
        TOKENS,
    ),
    "embedding-bidirectional_gru_sum-global_avg": (
        [
            {"type": "embedding", "input_dim": 20, "output_dim": 3, "mask_zero": True},
            {"type": "bidirectional", "layer": {"type": "gru", "units": 3, "return_sequences": True}, "merge_mode": "sum"},
            {"type": "global_avg_pool1d"},
        ],
        TOKENS,
    ),
}


@pytest.mark.parametrize("case", list(HAND_WRITTEN))
def test_torch_model_matches_keras_layers_written_by_hand(case):
    layers, shape = HAND_WRITTEN[case]
    spec = spec_of(layers, shape, dtype="float64", seed=3)
    w = seqspec.initial_weights(spec)
    w = {k: v + 0.1 * np.random.default_rng(len(k)).standard_normal(v.shape) * (v.std() or 1.0) for k, v in w.items()}
    hand = _hand_written_keras(layers, shape, w)
    model = TORCH.build(spec, w)
    rng = np.random.default_rng(0)
    for pattern in (END_PADDING, ANYWHERE):
        x = draw_inputs(spec, rng, 6, 9, pattern)
        want = _call(hand, x)
        got = TORCH.predict(model, x)
        assert np.all(np.isfinite(want))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=pattern)


def test_keras_outputs_at_masked_steps_are_what_the_torch_layer_gives():
    # With return_sequences a masked step repeats the last real output (zeros before the first);
    # inside bidirectional it is zeros. Stated on the hand-written Keras model itself.
    layers = [{"type": "masking"}, {"type": "gru", "units": 2, "return_sequences": True}]
    spec = spec_of(layers, [None, 1], dtype="float64", seed=1)
    hand = _hand_written_keras(layers, [None, 1], seqspec.initial_weights(spec))
    x = np.array([[[0.0], [1.0], [0.0], [2.0], [0.0]]])
    y = _call(hand, x)[0]
    np.testing.assert_array_equal(y[0], 0.0)
    np.testing.assert_array_equal(y[2], y[1])
    np.testing.assert_array_equal(y[4], y[3])
    np.testing.assert_allclose(TORCH.predict(TORCH.build(spec), x)[0], y, atol=1e-12)
    bi = [{"type": "masking"}, {"type": "bidirectional", "layer": {"type": "gru", "units": 2, "return_sequences": True}}]
    spec = spec_of(bi, [None, 1], dtype="float64", seed=1)
    yb = _call(_hand_written_keras(bi, [None, 1], seqspec.initial_weights(spec)), x)[0]
    np.testing.assert_array_equal(yb[[0, 2, 4]], 0.0)
    np.testing.assert_allclose(TORCH.predict(TORCH.build(spec), x)[0], yb, atol=1e-12)


# --- the torch paths: compaction (fast) against the masked step loop (general) --------------------

CELLS = [
    {"type": "simple_rnn", "units": 4},
    {"type": "simple_rnn", "units": 4, "activation": "sigmoid"},
    {"type": "lstm", "units": 4},
    {"type": "gru", "units": 4},
    {"type": "gru", "units": 4, "reset_after": False},
    {"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 4}},
    {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 4}},
]


def _recurrents(model):
    return [m for m in model.modules() if type(m).__name__ == "Recurrent"]


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("layer", CELLS, ids=lambda d: json.dumps(d)[:50])
def test_compaction_equals_the_masked_step_loop_outputs_and_gradients(layer, go_backwards):
    node = {**layer, "return_sequences": True, "go_backwards": go_backwards}
    # The go_backwards layer last: its reversed steps carry a mask no later layer may read.
    layers = [{"type": "masking"}, {"type": "bidirectional", "layer": {**layer, "return_sequences": True}}, node]
    spec = spec_of(layers, [None, 3], dtype="float64", seed=5)
    rng = np.random.default_rng(2)
    for pattern in (END_PADDING, ANYWHERE):
        x = draw_inputs(spec, rng, 6, 8, pattern)
        results = []
        for compaction in (True, False):
            model = TORCH.build(spec)
            for r in _recurrents(model):
                r.use_compaction = compaction
            xt = torch.tensor(x, requires_grad=True)
            y = model(xt)  # with gradients on: the scan path where a cell has one (small layers, CPU)
            (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
            results.append([y.detach(), xt.grad] + [p.grad for p in model.parameters()])
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_end_padding_runs_the_fused_kernel_on_the_unmoved_input(monkeypatch):
    spec = spec_of([{"type": "masking"}, {"type": "lstm", "units": 3}], [None, 2], seed=0)
    model = TORCH.build(spec)
    seen = []
    cell = _recurrents(model)[0].cell
    fused = cell.fused
    monkeypatch.setattr(cell, "fused", lambda x: seen.append(x.clone()) or fused(x))
    x = draw_inputs(spec, np.random.default_rng(0), 4, 6, END_PADDING)
    TORCH.predict(model, x)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0].numpy(), x)  # masking zeroes padding that is already 0


# --- rules, inputs and errors -------------------------------------------------------------------


def test_every_layer_class_states_a_mask_rule():
    rules = {seqspec.MAKES, seqspec.PASSES, seqspec.READS, seqspec.RECURRENT, seqspec.AVERAGES, seqspec.REFUSES}
    for cls in seqspec.LAYER_CLASSES:
        assert cls.mask_rule in rules, cls.__name__


def test_mask_flow_passes_drops_and_remakes_as_keras():
    spec = spec_of(
        [
            {"type": "masking"},
            {"type": "dense", "units": 3},
            {"type": "gru", "units": 3, "return_sequences": True},
            {"type": "layer_norm"},
            {"type": "lstm", "units": 2},
        ],
        [None, 2],
    )
    flow = seqspec.infer(spec).masks
    assert [m is not None for m in flow.given] == [True, True, True, True, False]
    assert flow.at_output is None
    spec = spec_of([{"type": "embedding", "input_dim": 5, "output_dim": 2}, {"type": "conv1d", "filters": 2, "kernel_size": 2}], TOKENS)
    assert not seqspec.infer(spec).masks.any  # no mask_zero: no mask, and a conv1d may follow


def test_check_inputs_hold_whole_single_and_empty_rows():
    m = row_masks(np.random.default_rng(0), 6, 5, ANYWHERE)
    assert m.sum(1)[:3].tolist() == [5, 1, 0]
    e = row_masks(np.random.default_rng(0), 6, 5, END_PADDING)
    assert all(row[: n].all() and not row[n:].any() for row, n in zip(e, e.sum(1)))
    spec = spec_of([{"type": "embedding", "input_dim": 9, "output_dim": 2, "mask_zero": True}, {"type": "gru", "units": 2}], TOKENS)
    x = draw_inputs(spec, np.random.default_rng(1), 6, 7, ANYWHERE)
    assert x.dtype == np.int32 and x.max() < 9 and (x[2] == 0).all() and (x[0] > 0).all()


def test_check_proves_a_masked_token_spec_with_gradients():
    from seqspec._check import check

    spec = spec_of(
        [
            {"type": "embedding", "input_dim": 12, "output_dim": 3, "mask_zero": True},
            {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 3}, "return_sequences": True, "go_backwards": True},
            {"type": "dense", "units": 2},
        ],
        {"shape": [9], "dtype": "int64"},
        dtype="float64",
    )
    r = check(spec)
    assert r.ok, r.failures
    assert r.grad_max_abs_diff is not None and r.grad_max_abs_diff < 1e-9


# --- classifier training ------------------------------------------------------------------------


def test_synthetic_tokens_are_padded_at_the_end_and_labelled_by_the_majority():
    spec = seqspec.load(ROOT / "specs" / "sentiment_tokens.yaml")
    x, y = synthetic_tokens(spec.train.data.model_copy(update={"series": 50}))
    lengths = (x > 0).sum(1)
    assert all((row[:n] > 0).all() and (row[n:] == 0).all() for row, n in zip(x, lengths))
    pos, neg = np.isin(x, range(1, 9)).sum(1), np.isin(x, range(9, 17)).sum(1)
    np.testing.assert_array_equal(y, (pos > neg).astype(float))
    assert (pos != neg).all()


def test_scores_are_keras_cross_entropies_and_accuracy():
    y = np.array([[1.0], [0.0], [1.0]])
    p = np.array([[0.9], [0.2], [0.4]])
    ref = keras.losses.BinaryCrossentropy()(y, p)
    assert score("binary_crossentropy", y, p) == pytest.approx(float(ref), rel=1e-6)
    assert score("accuracy", y, p) == pytest.approx(2 / 3)
    ids, probs = np.array([2, 0]), np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    ref = keras.losses.SparseCategoricalCrossentropy()(ids, probs)
    assert score("sparse_categorical_crossentropy", ids, probs) == pytest.approx(float(ref), rel=1e-6)
    assert score("accuracy", ids, probs) == 1.0


@pytest.fixture(scope="module")
def small_classifier(tmp_path_factory):
    """The example's model on a labelled .npy of integer ids, 3 classes, trained 2 epochs on each backend."""
    folder = tmp_path_factory.mktemp("labels")
    rng = np.random.default_rng(0)
    x = rng.integers(1, 10, size=(60, 6)).astype(np.int32)
    x[rng.random(x.shape) < 0.3] = 0
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", (x == 1).sum(1).clip(0, 2))
    doc = {
        "seqspec": 1, "name": "small", "seed": 3, "dtype": "float64", "input": TOKENS,
        "layers": [
            {"type": "embedding", "input_dim": 10, "output_dim": 3, "mask_zero": True},
            {"type": "lstm", "units": 4},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
        "train": {
            "data": {"source": "npy", "path": str(folder / "x.npy"), "labels": str(folder / "y.npy"), "split": [0.6, 0.2, 0.2]},
            "target": {"kind": "label"}, "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"],
            "batch_size": 8, "epochs": 2,
        },
    }
    spec = seqspec.load(json.dumps(doc))
    from seqspec import _train

    plan = _train.make_plan(spec)
    prepared = _train.prepare(spec, plan.seed)
    return {b: _train.run_training(spec, b, plan, prepared) for b in ("torch", "keras")}


def test_a_classifier_trains_the_same_on_both_backends(small_classifier):
    t, k = small_classifier["torch"], small_classifier["keras"]
    for a, b in zip(t.run.history, k.run.history):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    for split in t.scores:
        for name, value in t.scores[split].items():
            assert value == pytest.approx(k.scores[split][name], abs=1e-9), (split, name)
    assert t.naive == k.naive


def test_classifier_data_errors_are_located(tmp_path):
    from seqspec import _train

    np.save(tmp_path / "x.npy", np.array([[1, 2, 0], [3, 0, 0]], dtype=np.int32))
    np.save(tmp_path / "y.npy", np.array([0, 1, 1]))
    doc = {
        "seqspec": 1, "name": "bad", "input": TOKENS,
        "layers": [{"type": "embedding", "input_dim": 5, "output_dim": 2}, {"type": "gru", "units": 2}, {"type": "dense", "units": 1, "activation": "sigmoid"}],
        "train": {"data": {"source": "npy", "path": str(tmp_path / "x.npy"), "labels": str(tmp_path / "y.npy")}, "target": {"kind": "label"}, "loss": "binary_crossentropy"},
    }
    with pytest.raises(seqspec.DataError, match="one label per series"):
        _train.prepare(seqspec.load(json.dumps(doc)))
    doc["train"]["loss"] = "mse"
    with pytest.raises(seqspec.SpecError, match="target kind label trains with loss"):
        seqspec.load(json.dumps(doc))
    masked_out = {**doc, "layers": [{"type": "embedding", "input_dim": 5, "output_dim": 2, "mask_zero": True}, {"type": "gru", "units": 1, "return_sequences": True}]}
    masked_out["train"] = {**doc["train"], "loss": "binary_crossentropy"}
    with pytest.raises(seqspec.SpecError, match="reaches the model's output"):
        _train.prepare(seqspec.load(json.dumps(masked_out)))


# --- the export artifacts under masks, against the same keras.layers written by hand ------------------


@pytest.mark.parametrize("case", list(HAND_WRITTEN))
def test_onnx_artifact_matches_keras_layers_written_by_hand(case):
    """float64 through onnx's reference evaluator: every masked recurrent layer a Scan whose step
    keeps the state at masked steps, masking and embedding (Gather) making the mask."""
    from onnx.reference import ReferenceEvaluator

    import seqspec_onnx

    layers, shape = HAND_WRITTEN[case]
    spec = spec_of(layers, shape, dtype="float64", seed=3)
    w = seqspec.initial_weights(spec)
    w = {k: v + 0.1 * np.random.default_rng(len(k)).standard_normal(v.shape) * (v.std() or 1.0) for k, v in w.items()}
    hand = _hand_written_keras(layers, shape, w)
    model, notes = seqspec_onnx.to_onnx(spec, w)
    recurrent = [n.op_type for n in model.graph.node if n.op_type in ("Scan", "LSTM", "GRU", "RNN")]
    assert recurrent and set(recurrent) == {"Scan"}, recurrent  # the native ops take no mask
    assert any("reads a mask" in n for n in notes)
    run = ReferenceEvaluator(model)
    rng = np.random.default_rng(0)
    for pattern in (END_PADDING, ANYWHERE):
        x = draw_inputs(spec, rng, 6, 9, pattern)
        np.testing.assert_allclose(run.run(None, {"x": x})[0], _call(hand, x), rtol=0, atol=1e-9, err_msg=pattern)


def test_torch_export_program_matches_keras_layers_written_by_hand():
    """The torch.export program (its masked recurrent layers a torch scan that keeps the state at
    masked steps: bidirectional, go_backwards, token ids) at several batches and lengths of one
    trace, float64 (each trace costs ~3 s: one case)."""
    case = "embedding-bidirectional_lstm-gru_backwards-dense"
    import torch

    from seqspec_torch._torch_export import export_program

    layers, shape = HAND_WRITTEN[case]
    spec = spec_of(layers, shape, dtype="float64", seed=3)
    w = seqspec.initial_weights(spec)
    w = {k: v + 0.1 * np.random.default_rng(len(k)).standard_normal(v.shape) * (v.std() or 1.0) for k, v in w.items()}
    hand = _hand_written_keras(layers, shape, w)
    module = export_program(spec, w, "float64").module()
    rng = np.random.default_rng(1)
    for batch, steps in ((6, 9), (7, 23)):
        for pattern in (END_PADDING, ANYWHERE):
            x = draw_inputs(spec, rng, batch, steps, pattern)
            with torch.no_grad():
                got = module(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(got, _call(hand, x), rtol=0, atol=1e-9, err_msg=f"{pattern}, {batch} x {steps}")
