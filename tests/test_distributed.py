"""Data-parallel training equals one process: every example spec's float64 weights after two epochs
agree to 1e-9 between N = 1 and N = 2 (torch DDP over gloo; Keras MirroredStrategy on two logical
CPU devices), with uneven and empty shards, batch norm, dropout and clipnorm; Keras's checkpoints
under --nproc resume bit-identical; `--nproc` and `python -m seqspec`; the launcher's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from seqspec import SpecError, shard_bounds
from seqspec._parallel import World, free_port, tf_config_world, torchrun_world, world_for
from seqspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "dist_worker.py"
TRAIN_SPECS = sorted(p for p in (ROOT / "specs").glob("*.yaml") if "\ntrain:" in p.read_text())
# Keras traces its steps per spec and replica set (seconds each), so it trains own_specs' drop_lstm
# (an LSTM's dropout, batch norm, a Dropout layer, Adam with clipnorm) and keras_mix below, which
# holds every other kind of layer its strategy path meets; every example spec is measured by
# benchmarks/keras_nproc_specs.py (docs/scale.md).
TOLERANCE = 1e-9  # check's float64 tolerance


def env(**extra: str) -> dict:
    path = os.pathsep.join([str(ROOT), str(ROOT / "backends"), os.environ.get("PYTHONPATH", "")])
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "TF_CONFIG")}
    return {**base, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def write_spec(path: Path, layers: list, series: int, batch_size: int, optimizer: dict | None = None) -> Path:
    doc = {
        "seqspec": 1, "name": path.stem, "seed": 3, "dtype": "float64", "input": {"shape": [None, 1]}, "layers": layers,
        "train": {
            "data": {"source": "synthetic", "series": series + 10, "steps": 8, "split": [series, 5, 5], "seed": 1},
            "target": {"kind": "seq2seq", "horizon": 2},
            "optimizer": optimizer or {"type": "adam", "learning_rate": 0.01, "clipnorm": 0.05},
            "batch_size": batch_size,
        },
    }
    path.write_text(json.dumps(doc))
    return path


def own_specs(folder: Path) -> list[Path]:
    """Dropout of every kind, batch norm, clipnorm; 25 series in batches of 8: a last batch of 1, so
    one process's shard is empty."""
    head = {"type": "time_distributed", "layer": {"type": "dense", "units": 2}}
    return [
        write_spec(folder / "drop_lstm.yaml", [{"type": "lstm", "units": 4, "return_sequences": True, "dropout": 0.2}, {"type": "batch_norm"}, {"type": "dropout", "rate": 0.3}, head], 25, 8),
        write_spec(folder / "drop_gru.yaml", [{"type": "gru", "units": 3, "return_sequences": True, "dropout": 0.1, "recurrent_dropout": 0.3}, head], 25, 8, {"type": "rmsprop", "learning_rate": 0.01, "momentum": 0.5}),
        write_spec(folder / "bn_sgd.yaml", [{"type": "simple_rnn", "units": 3, "return_sequences": True}, {"type": "batch_norm"}, head], 25, 8, {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9, "clipnorm": 0.1}),
    ]


def keras_mix(folder: Path) -> Path:
    """conv_gru's strided convolution and GRU (with dropout and recurrent dropout), batch norm, a
    Dropout layer, wavenet_gated's custom layer, SGD with momentum and clipnorm; 25 series in batches
    of 8 (an empty shard)."""
    layers = [
        {"type": "conv1d", "filters": 4, "kernel_size": 4, "strides": 2, "padding": "valid"},
        {"type": "gru", "units": 4, "return_sequences": True, "dropout": 0.2, "recurrent_dropout": 0.3},
        {"type": "batch_norm"},
        {"type": "dropout", "rate": 0.25},
        {"type": "wavenet", "filters": 3, "dilation_rates": [1, 2], "gated": True},
        {"type": "time_distributed", "layer": {"type": "dense", "units": 2}},
    ]
    return write_spec(folder / "keras_mix.yaml", layers, 25, 8, {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9, "clipnorm": 0.1})


def launch(out: Path, backend: str, specs: list[Path], resume: Path | None = None) -> list[subprocess.Popen]:
    """Train `specs` with N = 2, then N = 1, into out/2 and out/1: torch as two processes (torchrun's
    variables; rank 0 also trains N = 1), keras as one process of two replicas (N = 1: plain Keras),
    which then resumes `resume` under --nproc 2 (dist_worker.py's --resume)."""
    cmd = [sys.executable, str(WORKER), str(out), backend, "2,1", "2", *map(str, specs)]
    if backend == "keras":
        cmd += ["--resume", str(resume)]
        return [subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    world = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    return [subprocess.Popen(cmd, env=env(**world, RANK=str(r)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in range(2)]


def launch_tf_config(out: Path, spec: Path) -> list[subprocess.Popen]:
    """`seqspec train SPEC --backend keras` in two processes under one TF_CONFIG (two workers on this
    host, MultiWorkerMirroredStrategy, one replica each), with a checkpoint every epoch into `out`."""
    workers = [f"localhost:{free_port()}" for _ in range(2)]
    cmd = [sys.executable, "-m", "seqspec", "train", str(spec), "--backend", "keras", "--epochs", "2", "--checkpoint-every", "1", "--out", str(out)]
    configs = [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": r}}) for r in range(2)]
    return [subprocess.Popen(cmd, env=env(TF_CONFIG=c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in configs]


def finish(procs: list[subprocess.Popen]) -> list[str]:
    """Each process's stdout, once every one exited 0."""
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outs.append(out or "")
    return outs


def differences(one: Path, two: Path) -> dict[str, float]:
    out = {}
    for f in sorted(one.glob("*.npz")):
        a, b = np.load(f), np.load(two / f.name)
        assert sorted(a.files) == sorted(b.files)
        out[f.stem] = max(float(np.max(np.abs(a[k] - b[k]))) for k in a.files)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both backends, N = 2 and N = 1, the torch pair and the keras process at once."""
    root = tmp_path_factory.mktemp("dist")
    drop_lstm, *others = own_specs(root)
    torch_specs = [*TRAIN_SPECS, drop_lstm, *others]
    keras_specs = [drop_lstm, keras_mix(root)]
    runs = [launch(root / "torch", "torch", torch_specs), launch(root / "keras", "keras", keras_specs, resume=drop_lstm)]
    runs.append(launch_tf_config(root / "tf_config", drop_lstm))
    outputs = [finish(procs) for procs in runs]
    (root / "tf_config.stdout.json").write_text(json.dumps(outputs[-1]))
    return root, torch_specs, keras_specs


def test_shards_are_contiguous_cover_the_batch_and_differ_by_at_most_one():
    for batch in (1, 2, 7, 8, 32):
        for world in (1, 2, 3, 5):
            bounds = [shard_bounds(batch, world, r) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == batch
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert shard_bounds(1, 2, 1) == (1, 1)  # an empty shard
    with pytest.raises(ValueError):
        shard_bounds(8, 2, 2)


def test_the_launchers_environment_gives_the_world():
    assert torchrun_world({}) is None
    assert torchrun_world({"WORLD_SIZE": "4", "RANK": "3"}) == World(4, 3, "torchrun")
    with pytest.raises(SpecError, match="RANK has to be in"):
        torchrun_world({"WORLD_SIZE": "2", "RANK": "2"})
    config = {"cluster": {"worker": ["h1:1", "h2:1"]}, "task": {"type": "worker", "index": 1}}
    assert tf_config_world({"TF_CONFIG": json.dumps(config)}) == World(2, 1, "tf_config")
    with pytest.raises(SpecError, match="TF_CONFIG: not a cluster spec"):
        tf_config_world({"TF_CONFIG": "{}"})
    with pytest.raises(SpecError, match="leave --nproc out"):
        world_for("torch", 3, {"WORLD_SIZE": "2", "RANK": "0"})
    assert world_for("keras", 2, {}) == World(2, 0, "replicas")
    assert world_for("torch", 2, {}) == World(2, 0, "nproc")
    assert world_for("torch", None, {}) == World()


def test_torch_ddp_trains_every_example_spec_as_one_process(trained):
    root, specs, _ = trained
    diffs = differences(root / "torch" / "1", root / "torch" / "2")
    assert sorted(diffs) == sorted(p.stem for p in specs)
    assert all(d <= TOLERANCE for d in diffs.values()), diffs


def test_keras_mirrored_strategy_trains_as_one_replica(trained):
    root, _, specs = trained
    diffs = differences(root / "keras" / "1", root / "keras" / "2")
    assert sorted(diffs) == sorted(p.stem for p in specs)
    assert all(d <= TOLERANCE for d in diffs.values()), diffs


def test_the_weights_compared_moved_away_from_their_start(trained):
    """Equal runs that never trained would compare equal too: two epochs move every spec's weights."""
    import seqspec

    root, specs, _ = trained
    for path in specs:
        spec = seqspec.load(path)
        start = seqspec.initial_weights(spec, seed=spec.seed if spec.seed is not None else 0, dtype="float64")
        trained_weights = np.load(root / "torch" / "2" / f"{path.stem}.npz")
        assert max(float(np.max(np.abs(trained_weights[k] - start[k]))) for k in start) > 1e-4, path.stem


def test_nproc_2_on_the_command_line_trains_as_one_process_and_writes_once(trained):
    root, _, _ = trained
    cmd = [sys.executable, "-m", "seqspec", "train", str(root / "drop_lstm.yaml"), "--backend", "torch", "--epochs", "2", "--out", str(root / "cli"), "--nproc", "2"]
    two = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("Epoch 2/2") == 1  # rank 1 reports nothing
    one, b = np.load(root / "torch" / "1" / "drop_lstm.npz"), load_file(str(root / "cli" / "weights.safetensors"))
    assert sorted(one.files) == sorted(b)
    assert max(float(np.max(np.abs(one[k] - b[k]))) for k in b) <= TOLERANCE
    m = json.loads((root / "cli" / "metrics.json").read_text())
    assert m["nproc"] == 2 and m["epochs_run"] == 2


def test_nproc_errors_are_one_line(tmp_path, capsys):
    spec = own_specs(tmp_path)[0]
    assert main(["train", str(spec), "--backend", "torch", "--nproc", "0", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "--nproc: must be at least 1, got 0"
    assert not (tmp_path / "r").exists()


def test_a_keras_shards_dropout_masks_are_the_global_batchs_rows():
    """What each replica computes in its step: the masks drawn for the global batch of 5 from the
    same seed states, cut to its rows 2-4: the Dropout layer's, an LSTM's dropout and recurrent
    dropout (one mask per sequence) and a GRU's. Drawn for its own 3 rows, they would differ."""
    import keras
    import tensorflow as tf
    from seqspec_keras import _distributed, _resume

    inputs = keras.Input((6, 3), dtype="float64")
    h = keras.layers.LSTM(4, dropout=0.3, recurrent_dropout=0.4, return_sequences=True, dtype="float64")(inputs)
    h = keras.layers.Dropout(0.5, dtype="float64")(h)
    model = keras.Model(inputs, keras.layers.GRU(2, dropout=0.2, recurrent_dropout=0.3, dtype="float64")(h))
    x = np.random.default_rng(0).normal(size=(5, 6, 3))

    def run(rows, bounds=None):
        _resume.seed_dropout(model, 7)
        with _distributed.drawing_global_masks():
            if bounds is None:
                return model(x[rows], training=True).numpy()
            with _distributed.global_masks(tf.constant(bounds[0]), tf.constant(bounds[1])):
                return model(x[rows], training=True).numpy()

    whole = run(slice(0, 5))
    np.testing.assert_array_equal(run(slice(2, 5), (2, 5)), whole[2:])
    np.testing.assert_array_equal(run(slice(0, 2), (0, 5)), whole[:2])
    assert np.max(np.abs(run(slice(2, 5)) - whole[2:])) > 1e-3  # a shard's own draw: other masks
    assert np.max(np.abs(model(x, training=False).numpy() - whole)) > 1e-3  # the masks did act


@pytest.mark.parametrize(
    "loss, metric, units, labels",
    [("mse", "last_time_step_mse", 2, "seq2seq"), ("mae", "mae", 2, "seq2seq"), ("binary_crossentropy", "accuracy", 1, "binary"), ("sparse_categorical_crossentropy", "accuracy", 3, "classes")],
)
def test_a_keras_replicas_loss_and_validation_are_one_processs(loss, metric, units, labels):
    """Every loss a spec can name: a replica's part of the loss (its unreduced values over the global
    batch's count; here the only replica's) and the validation callback's scores are what Keras's
    own compiled loss and evaluate give in one process."""
    import keras
    import tensorflow as tf
    from seqspec import Split
    from seqspec_keras import _distributed, _train

    rng = np.random.default_rng(1)
    seq = labels == "seq2seq"
    inputs = keras.Input((5, 2) if seq else (4,), dtype="float64")
    act = {"binary": "sigmoid", "classes": "softmax"}.get(labels, "linear")
    head = keras.layers.Dense(units, activation=act, dtype="float64")
    model = keras.Model(inputs, head(keras.layers.SimpleRNN(3, return_sequences=True, dtype="float64")(inputs)) if seq else head(inputs))
    x = rng.normal(size=(9, 5, 2) if seq else (9, 4))
    y = {"seq2seq": lambda: rng.normal(size=(9, 5, units)), "binary": lambda: rng.integers(0, 2, 9).astype("float64"), "classes": lambda: rng.integers(0, 3, 9).astype("float64")}[labels]()
    replicated = _distributed.ReplicatedModel(model, _train.make_loss(loss, "float64"), (x[:1], y[:1]))
    pred = model(x)
    part, total, k = replicated._global_loss(tf.constant(y), pred)
    # What one process's step differentiates.
    assert abs(float(part) - float(_train.make_loss(loss, "float64")(y, pred))) <= 1e-15 and float(total) == float(part) and int(k) == 9
    model.compile(loss=_train.make_loss(loss, "float64"), metrics=[_train.make_metric(metric, "float64", loss)])
    # One process's validation: evaluate in batches (of 4 here; a dataset keeps float64), its loss tracker in float32.
    want = model.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), verbose=0, return_dict=True)
    check = _distributed.Validation(Split(x, y), _train.make_loss(loss, "float64"), {metric: _train.make_metric(metric, "float64", loss)}, 4)
    check.set_model(replicated)
    logs = {}
    check.on_epoch_end(0, logs)
    assert logs["val_loss"] == want["loss"] and abs(logs[f"val_{metric}"] - want[metric]) <= 1e-15, (logs, want)


def test_keras_checkpoints_under_replicas_resume_bit_identical(trained):
    """One epoch with a checkpoint under --nproc 2, resumed under --nproc 2 to the second: bit-identical
    to the two epochs trained straight (weights and moving statistics, Adam's moments, the dropout
    seed states all come back on every replica)."""
    root, _, _ = trained
    resumed, straight = load_file(str(root / "keras" / "resume" / "weights.safetensors")), np.load(root / "keras" / "2" / "drop_lstm.npz")
    assert sorted(resumed) == sorted(straight.files)
    for k in resumed:
        np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)
    record = json.loads((root / "keras" / "resume" / "checkpoint" / "epoch-00002.json").read_text())
    assert record["nproc"] == 2 and record["backend"] == "keras"
    history = json.loads((root / "keras" / "resume" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_tf_config_two_keras_workers_train_as_one_process_and_worker_0_writes(trained):
    """Two processes under TF_CONFIG (MultiWorkerMirroredStrategy): the same weights as one process,
    the run and its checkpoints written by worker 0 alone, which alone reports."""
    root, _, _ = trained
    run = root / "tf_config"
    one, two = np.load(root / "keras" / "1" / "drop_lstm.npz"), load_file(str(run / "weights.safetensors"))
    assert sorted(two) == sorted(one.files)
    assert max(float(np.max(np.abs(one[k] - two[k]))) for k in two) <= TOLERANCE
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["epoch-00002.json", "epoch-00002.npz"]
    m = json.loads((run / "metrics.json").read_text())
    assert m["nproc"] == 2 and m["epochs_run"] == 2
    first, second = json.loads((root / "tf_config.stdout.json").read_text())
    assert first.count("Epoch 2/2") == 1 and second == ""
