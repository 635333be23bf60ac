"""`seqspec import` of Keras models: the textbook's models written with keras.layers, every example spec's
Keras model back to its spec, each option mapped or refused by name, and the command's files and exit codes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import seqspec  # noqa: E402
from seqspec import cli  # noqa: E402
from seqspec._import import import_files, read, spec_text, to_spec  # noqa: E402

keras = pytest.importorskip("keras")
import seqspec_keras  # noqa: E402,F401  (registers seqspec's Keras layers)

L = keras.layers
SPECS = sorted(Path(__file__).resolve().parent.parent.joinpath("specs").glob("*.yaml"))
LENGTHS = [1, 9]
# The Keras original is traced once per length where it holds a TimeDistributed (see _runner): one length keeps those tests short.
ONE_LENGTH = [9]


def _normal(spec: seqspec.Spec):
    """A spec's input and layers without defaults; time_distributed(x) as x, which the Keras backend
    builds as the per-step layer itself (so its Keras model cannot tell them apart)."""
    layers = [(layer.layer if layer.type == "time_distributed" else layer).model_dump(exclude_defaults=True) for layer in spec.layers]
    return spec.input.shape, spec.dtype, layers


def _prove(source, input_shape=None, lengths=LENGTHS):
    imported = read(source, input_shape)
    spec, _ = to_spec(imported)
    result = seqspec.prove_import(spec, imported.weights, imported.run, lengths, exact=imported.exact)
    return spec, imported, result


# --- every example spec: its Keras model imports back to it ----------------------------------


UNMASKED = SPECS  # the token example spec (embedding with mask_zero) round-trips too


@pytest.mark.parametrize("path", UNMASKED, ids=lambda p: p.stem)
def test_every_example_spec_round_trips_through_its_keras_model(path):
    spec = seqspec.load(str(path))
    weights = seqspec.initial_weights(spec)
    model = seqspec.get_backend("keras").build(spec, weights)
    got, got_weights = seqspec.import_model(model)
    assert _normal(got) == _normal(spec)
    assert list(got_weights) == list(weights)
    for name, value in weights.items():
        assert got_weights[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got_weights[name], value, err_msg=name)


@pytest.mark.parametrize("name", ["peephole_lstm", "seq2seq_ln_rnn", "wavenet_gated"])
def test_seqspecs_own_keras_layers_round_trip_through_the_file_compile_writes(name, tmp_path):
    src = str(Path(__file__).resolve().parent.parent / "specs" / f"{name}.yaml")
    saved = tmp_path / f"{name}.keras"
    assert cli.main(["compile", src, "--backend", "keras", "-o", str(saved)]) == 0
    spec = seqspec.load(src)
    got, got_weights = seqspec.import_model(str(saved))
    assert _normal(got) == _normal(spec)
    for key, value in seqspec.initial_weights(spec).items():
        np.testing.assert_array_equal(got_weights[key], value, err_msg=key)


# --- the textbook's models (Geron, Hands-On ML 3rd ed., chapter 15), saved to .keras files ------------


def _textbook():
    """The chapter's models that use only built-in layers, with its layer sizes."""
    wavenet = [L.Input(shape=[None, 1])]
    for rate in (1, 2, 4, 8) * 2:
        wavenet.append(L.Conv1D(filters=20, kernel_size=2, padding="causal", activation="relu", dilation_rate=rate))
    wavenet.append(L.Conv1D(filters=10, kernel_size=1))
    return {
        "linear": ([L.Input(shape=[50, 1]), L.Flatten(), L.Dense(1)], None),
        "simple_rnn": ([L.Input(shape=[None, 1]), L.SimpleRNN(1)], LENGTHS),
        "deep_rnn": ([L.Input(shape=[None, 1]), L.SimpleRNN(20, return_sequences=True), L.SimpleRNN(20, return_sequences=True), L.SimpleRNN(1)], LENGTHS),
        "deep_rnn_dense": ([L.Input(shape=[None, 1]), L.SimpleRNN(20, return_sequences=True), L.SimpleRNN(20), L.Dense(10)], LENGTHS),
        "seq2seq": ([L.Input(shape=[None, 1]), L.SimpleRNN(20, return_sequences=True), L.SimpleRNN(20, return_sequences=True), L.TimeDistributed(L.Dense(10))], ONE_LENGTH),
        "batch_norm": (
            [L.Input(shape=[None, 1]), L.SimpleRNN(20, return_sequences=True), L.BatchNormalization(), L.SimpleRNN(20, return_sequences=True), L.BatchNormalization(), L.TimeDistributed(L.Dense(10))],
            ONE_LENGTH,
        ),
        "lstm": ([L.Input(shape=[None, 1]), L.LSTM(20, return_sequences=True), L.LSTM(20, return_sequences=True), L.TimeDistributed(L.Dense(10))], ONE_LENGTH),
        "gru": ([L.Input(shape=[None, 1]), L.GRU(20, return_sequences=True), L.GRU(20, return_sequences=True), L.TimeDistributed(L.Dense(10))], ONE_LENGTH),
        "conv_gru": (
            [L.Input(shape=[None, 1]), L.Conv1D(20, kernel_size=4, strides=2, padding="valid"), L.GRU(20, return_sequences=True), L.GRU(20, return_sequences=True), L.TimeDistributed(L.Dense(10))],
            [9],
        ),
        "wavenet": (wavenet, [1, 40]),
    }


TEXTBOOK = _textbook()


@pytest.fixture(scope="module")
def textbook_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("textbook")
    rng = np.random.default_rng(7)
    files = {}
    for name, (layers, _) in TEXTBOOK.items():
        model = keras.Sequential(layers, name=f"book_{name}")
        # Trained-looking weights, not the initial zeros of every bias and norm statistic.
        model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") if "variance" not in v.path else rng.uniform(0.5, 2, w.shape).astype("float32") for w, v in zip(model.get_weights(), model.weights)])
        path = folder / f"{name}.keras"
        model.save(path)
        files[name] = (path, model)
    return files


@pytest.mark.parametrize("name", list(TEXTBOOK))
def test_the_textbooks_keras_models_import_and_agree_on_both_backends(name, textbook_files, tmp_path):
    path, model = textbook_files[name]
    out = tmp_path / f"{name}.yaml"
    spec, result, notes, weights_path = import_files(str(path), str(out), lengths=TEXTBOOK[name][1])
    assert result.ok, result.failures
    assert set(result.max_abs_diff) == {"float32", "float64"}
    assert {(b, t) for _, b, t in result.cases} >= {(1, TEXTBOOK[name][1][0] if TEXTBOOK[name][1] else 50), (3, TEXTBOOK[name][1][-1] if TEXTBOOK[name][1] else 50)}
    text = out.read_text()
    assert text.startswith("# yaml-language-server: $schema=") and "\nseqspec: 1\n" in text
    assert "return_sequences: false" not in text and "use_bias: true" not in text  # defaults left out
    assert seqspec.load(str(out)).model_dump() == spec.model_dump()
    weights = seqspec.load_weights(weights_path, spec)
    assert sum(v.size for v in weights.values()) == model.count_params()
    # The weights file is bit-equal to the Keras model's own variables.
    rebuilt = seqspec.get_backend("keras").build(spec, weights)
    for a, b in zip(rebuilt.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


# --- options: mapped, or refused by name ---------------------------------------------------------


def _zoo():
    """Every mapped layer and option that the textbook's models leave out, in three small chains."""
    conv = keras.Sequential(
        [
            L.Input(shape=[None, 4]),
            L.Conv1D(6, 3, padding="same", strides=2, use_bias=False),
            L.Conv1D(6, 3, padding="causal", dilation_rate=2, groups=2, activation="tanh"),
            L.ZeroPadding1D((2, 1)),
            L.Cropping1D(1),
            L.UpSampling1D(3),
            L.TimeDistributed(L.Dropout(0.3)),  # here, at one length: a TimeDistributed original is traced once per length (see _runner)
            L.MaxPooling1D(2, strides=1, padding="same"),
            L.AveragePooling1D(3, padding="valid"),
            L.LayerNormalization(center=False),
            L.BatchNormalization(scale=False, momentum=0.9, epsilon=1e-4),
            L.LeakyReLU(0.25),  # exact in float32: the float64 twin is exact
            L.GlobalMaxPooling1D(),
            L.RepeatVector(3),
            L.SimpleRNN(3, activation="relu", return_sequences=True),
            L.GlobalAveragePooling1D(),
        ],
        name="conv_zoo",
    )
    inputs = keras.Input(shape=[None, 3])
    x = L.Bidirectional(L.GRU(4, reset_after=False, return_sequences=True), merge_mode="mul")(inputs)
    x = L.Bidirectional(L.LSTM(3, unit_forget_bias=False, recurrent_activation="hard_sigmoid", return_sequences=True), merge_mode="ave")(x)
    x = L.Bidirectional(L.SimpleRNN(2, return_sequences=True), merge_mode="sum")(x)
    x = L.RNN(L.GRUCell(3, reset_after=True, activation="elu"), return_sequences=True)(x)
    x = L.GRU(5, use_bias=False, dropout=0.1, recurrent_dropout=0.2, return_sequences=True)(x)
    x = L.Activation("softmax")(x)
    x = L.ReLU()(x)
    recurrent = keras.Model(inputs, L.Dense(2, activation="gelu")(x), name="recurrent_zoo")
    vector = keras.Sequential([L.Input(shape=[5]), L.Dense(4, activation="selu"), L.Softmax(), L.Dense(3, use_bias=False, activation="silu"), L.ELU(), L.Dropout(0.5), L.Dense(2, activation="softplus")], name="vector_zoo")
    return {"conv": (conv, [17]), "recurrent": (recurrent, [1, 9]), "vector": (vector, None)}


@pytest.fixture(scope="module")
def zoo():
    rng = np.random.default_rng(3)
    models = _zoo()
    for model, _ in models.values():
        model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in model.get_weights()])
    return models


@pytest.mark.parametrize("name", ["conv", "recurrent", "vector"])
def test_every_mapped_keras_option_imports_and_agrees(name, zoo):
    model, lengths = zoo[name]
    spec, imported, result = _prove(model, lengths=lengths)
    assert result.ok, result.failures
    # The recurrent chain ends in Keras's gelu, whose float64 form is not exact: proven in float32 only, and said so.
    assert set(result.max_abs_diff) == ({"float32"} if name == "recurrent" else {"float32", "float64"})
    assert any("float64 proof is skipped: layer 'dense" in n for n in imported.notes) == (name == "recurrent")
    assert len(spec.layers) == len([layer for layer in model.layers if not isinstance(layer, L.InputLayer)])


def test_the_mapped_options_appear_in_the_spec(zoo):
    spec, _ = seqspec.import_model(zoo["recurrent"][0])
    text = spec_text(spec)
    for piece in ("reset_after: false", "merge_mode: mul", "unit_forget_bias: false", "recurrent_activation: hard_sigmoid", "merge_mode: ave", "merge_mode: sum", "activation: elu", "use_bias: false", "recurrent_dropout: 0.2"):
        assert piece in text, piece
    conv, _ = seqspec.import_model(zoo["conv"][0])
    text = spec_text(conv)
    for piece in ("padding: causal", "dilation_rate: 2", "groups: 2", "padding: [2, 1]", "size: 3", "strides: 1", "{name: leaky_relu, negative_slope: 0.25", "momentum: 0.9"):
        assert piece in text, piece


@keras.saving.register_keras_serializable(package="tests_import")
class Scale(keras.layers.Layer):
    """A user's own layer: no spec equivalent."""

    def call(self, x):
        return 2.0 * x


class BookLNSimpleRNNCell(keras.layers.Layer):
    """The textbook's own layer-normalised cell class (a custom cell)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.state_size = units
        self.output_size = units
        self.simple_rnn_cell = L.SimpleRNNCell(units, activation=None)
        self.layer_norm = L.LayerNormalization()

    def build(self, input_shape):
        self.simple_rnn_cell.build(input_shape)
        self.layer_norm.build((None, self.output_size))

    def call(self, inputs, states):
        outputs, new_states = self.simple_rnn_cell(inputs, states)
        norm = keras.activations.tanh(self.layer_norm(outputs))
        return norm, [norm]


def _functional_skip():
    inputs = keras.Input(shape=[None, 2])
    x = L.Dense(2)(inputs)
    return keras.Model(inputs, L.Add()([x, inputs]), name="skip")


def _shared():
    dense = L.Dense(3)
    inputs = keras.Input(shape=[3])
    return keras.Model(inputs, dense(dense(inputs)), name="shared")


REFUSED = {
    "custom layer": (lambda: keras.Sequential([L.Input([None, 2]), Scale(name="doubler")]), "layer 'doubler' (Scale): has no spec equivalent"),
    "custom cell": (lambda: keras.Sequential([L.Input([None, 2]), L.RNN(BookLNSimpleRNNCell(3), name="ln_rnn")]), "layer 'ln_rnn' (RNN): the cell class BookLNSimpleRNNCell has no spec equivalent"),
    "return_state": (lambda: _state_model(), "layer 'enc' (LSTM): return_state=True"),
    "stateful": (lambda: keras.Sequential([L.Input([None, 2], batch_size=4), L.GRU(3, stateful=True, name="g")]), "layer 'g' (GRU): stateful=True"),
    "go_backwards": (lambda: keras.Sequential([L.Input([None, 2]), L.SimpleRNN(3, go_backwards=True, name="back")]), "layer 'back' (SimpleRNN): go_backwards=True"),
    "recurrent activation": (lambda: keras.Sequential([L.Input([None, 2]), L.LSTM(3, recurrent_activation="exponential", name="l")]), "layer 'l' (LSTM): recurrent_activation 'exponential' has no spec equivalent"),
    "activation": (lambda: keras.Sequential([L.Input([4]), L.Dense(3, activation="relu6", name="d")]), "layer 'd' (Dense): activation 'relu6' has no spec equivalent"),
    "channels_first": (lambda: keras.Sequential([L.Input([3, 8]), L.Conv1D(2, 3, data_format="channels_first", name="c")]), "layer 'c' (Conv1D): data_format='channels_first'"),
    "merge_mode None": (lambda: _bi_none(), "layer 'bi' (Bidirectional): merge_mode=None"),
    "stacked cells": (lambda: keras.Sequential([L.Input([None, 2]), L.RNN([L.GRUCell(2), L.GRUCell(2)], name="stack")]), "layer 'stack' (RNN): a stack of cells (StackedRNNCells)"),
    "skip connection": (_functional_skip, "(Add): takes 2 inputs; a spec is one chain"),
    "shared layer": (_shared, "applied more than once"),
    "noise_shape": (lambda: keras.Sequential([L.Input([None, 2]), L.Dropout(0.2, noise_shape=(None, 1, 2), name="drop")]), "layer 'drop' (Dropout): noise_shape=(None, 1, 2)"),
    "renorm": (lambda: keras.Sequential([L.Input([None, 2]), L.BatchNormalization(renorm=True, name="bn")]), "layer 'bn' (BatchNormalization): renorm=True"),
    "batch norm axis": (lambda: keras.Sequential([L.Input([5, 2]), L.BatchNormalization(axis=1, name="bn")]), "layer 'bn' (BatchNormalization): axis=1 normalises another axis"),
    "relu max_value": (lambda: keras.Sequential([L.Input([4]), L.ReLU(max_value=6.0, name="r6")]), "layer 'r6' (ReLU): max_value=6.0"),
    "keepdims": (lambda: keras.Sequential([L.Input([None, 2]), L.GlobalAveragePooling1D(keepdims=True, name="gap")]), "layer 'gap' (GlobalAveragePooling1D): keepdims=True"),
}


def _state_model():
    inputs = keras.Input(shape=[None, 2])
    out, h, c = L.LSTM(3, return_state=True, name="enc")(inputs)
    return keras.Model(inputs, out, name="states")


def _bi_none():
    inputs = keras.Input(shape=[None, 2])
    fwd, back = L.Bidirectional(L.GRU(2), merge_mode=None, name="bi")(inputs)
    return keras.Model(inputs, fwd, name="bi_none")


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_a_spec_cannot_express_is_refused_by_name(case):
    make, message = REFUSED[case]
    with pytest.raises(seqspec.ImportRefused) as e:
        seqspec.import_model(make())
    line = str(e.value)
    assert message in line, line
    assert "\n" not in line


def test_a_training_only_option_is_dropped_with_a_note_not_silently():
    model = keras.Sequential([L.Input([None, 2]), L.LSTM(3, kernel_regularizer="l2", name="reg"), L.Dense(1, kernel_constraint="non_neg")])
    imported = read(model)
    assert any("layer 'reg' (LSTM): kernel_regularizer dropped" in note for note in imported.notes)
    assert any("kernel_constraint dropped" in note for note in imported.notes)
    spec, _ = to_spec(imported)
    assert [layer.type for layer in spec.layers] == ["lstm", "dense"]


def test_keras_leaky_relu_with_a_slope_tensorflow_rounds_skips_the_float64_proof_with_a_note():
    model = keras.Sequential([L.Input([4]), L.Dense(3), L.LeakyReLU(0.3, name="leak")])
    imported = read(model)
    assert set(imported.run) == {"float32"}
    assert imported.notes == ["the float64 proof is skipped: layer 'leak' (LeakyReLU) has negative_slope 0.3, which TensorFlow rounds to float32 in float64"]


def test_a_float64_keras_model_imports_as_a_float64_spec():
    model = keras.Sequential([L.Input([None, 2], dtype="float64"), L.GRU(3, dtype="float64", return_sequences=True), L.Dense(2, dtype="float64")])
    spec, imported, result = _prove(model, lengths=[1, 9])
    assert spec.dtype == "float64" and set(result.max_abs_diff) == {"float64"}
    assert result.ok, result.failures


def test_an_h5_file_imports(tmp_path):
    model = keras.Sequential([L.Input([None, 2]), L.LSTM(3), L.Dense(1)], name="legacy")
    path = tmp_path / "legacy.h5"
    model.save(path)
    spec, imported, result = _prove(str(path), lengths=[1, 9])
    assert result.ok, result.failures
    assert [layer.type for layer in spec.layers] == ["lstm", "dense"]


# --- the command -------------------------------------------------------------------------------


def test_import_command_writes_the_spec_and_weights_and_says_the_differences(textbook_files, tmp_path, capsys):
    path, _ = textbook_files["deep_rnn_dense"]
    out = tmp_path / "rnn.yaml"
    code = cli.main(["import", str(path), "-o", str(out), "--name", "book_rnn", "--lengths", "1,7"])
    said = capsys.readouterr().out
    assert code == 0, said
    assert f"wrote {out} and {tmp_path / 'rnn.safetensors'}: book_rnn, 3 layers; proven equal" in said
    assert "float32: max abs diff against the original: keras" in said and "float64:" in said
    spec = seqspec.load(str(out))
    assert sorted(seqspec.load_weights(str(out.with_suffix(".safetensors")), spec)) == sorted(seqspec.layout(spec))


def test_a_custom_layer_file_is_exit_2_and_writes_nothing(tmp_path, capsys):
    model = keras.Sequential([L.Input([None, 2]), L.Dense(2), Scale(name="doubler")])
    src = tmp_path / "custom.keras"
    model.save(src)
    out = tmp_path / "custom.yaml"
    assert cli.main(["import", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "layer 'doubler' (Scale): has no spec equivalent (the layers that map are listed in docs/import.md)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.keras"]


def test_an_unloadable_file_is_one_line_exit_2(tmp_path, capsys):
    src = tmp_path / "broken.keras"
    src.write_bytes(b"not a zip")
    assert cli.main(["import", str(src), "-o", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{src}: Keras cannot load it: ") and err.count("\n") == 1
    assert cli.main(["import", str(tmp_path / "missing.keras"), "-o", str(tmp_path / "x.yaml")]) == 2
    assert cli.main(["import", "model.onnx", "-o", str(tmp_path / "x.yaml")]) == 2
    assert not (tmp_path / "x.yaml").exists()


def test_a_disagreeing_import_is_exit_1_and_writes_nothing(textbook_files, tmp_path, capsys, monkeypatch):
    from seqspec_keras import _import as keras_import

    real = keras_import.layer_weights

    def off_by_a_little(node, layer, prefix):
        return {k: v + np.float32(1e-3) for k, v in real(node, layer, prefix).items()}

    monkeypatch.setattr(keras_import, "layer_weights", off_by_a_little)
    path, _ = textbook_files["simple_rnn"]
    out = tmp_path / "gru.yaml"
    assert cli.main(["import", str(path), "-o", str(out), "--lengths", "7"]) == 1
    said = capsys.readouterr().out
    assert "FAILED" in said and "differs from the original by" in said
    assert not out.exists() and not out.with_suffix(".safetensors").exists()


# --- masks and tokens --------------------------------------------------------------------------


def _masked_models():
    masking = keras.Sequential([keras.Input((None, 3)), L.Masking(0.5), L.LSTM(4, return_sequences=True), L.TimeDistributed(L.Dense(2))], name="masked")
    tokens = keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(20, 5, mask_zero=True), L.Bidirectional(L.GRU(3)), L.Dense(1, activation="sigmoid")], name="tokens")
    plain_ids = keras.Sequential([keras.Input((None,), dtype="int64"), L.Embedding(9, 4), L.SimpleRNN(3)], name="ids")
    return {"masking": masking, "embedding_mask_zero": tokens, "embedding": plain_ids}


@pytest.mark.parametrize("name", ["masking", "embedding_mask_zero", "embedding"])
def test_masking_and_embedding_models_import_and_agree_on_masked_batches(name):
    model = _masked_models()[name]
    spec, imported, result = _prove(model)
    assert result.ok, result.failures
    first = spec.layers[0]
    if name == "masking":
        assert first.type == "masking" and first.mask_value == 0.5 and spec.input.shape == [None, 3]
    else:
        assert first.type == "embedding" and spec.input.tokens and spec.input.dtype == ("int32" if name != "embedding" else "int64")
        assert first.mask_zero is (name == "embedding_mask_zero")
        np.testing.assert_array_equal(imported.weights["layers.0.embeddings"], model.layers[0].embeddings.numpy())
    # The proof fed masked batches wherever the model makes a mask (6 rows, masked at the end and anywhere).
    masked_rows = [c for c in result.cases if c[1] == 6]
    assert bool(masked_rows) is (name != "embedding")
    assert set(result.max_abs_diff) == {"float32", "float64"}
    text = spec_text(spec)
    assert ("dtype: int" in text) is (name != "masking")
