"""`seqspec train`: data sources, target alignment, the naive baseline, Keras/torch optimizer equivalence, run outputs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

import seqspec
from seqspec import _data, _train
from seqspec.cli import main

ROOT = Path(__file__).resolve().parent.parent


def spec_with(train: dict, layers: list | None = None, shape: list | None = None, dtype: str = "float32", path: Path | None = None) -> seqspec.Spec:
    doc = {
        "seqspec": 1,
        "name": "tiny",
        "seed": 3,
        "dtype": dtype,
        "input": {"shape": shape or [None, 1]},
        "layers": layers or [{"type": "simple_rnn", "units": 3}, {"type": "dense", "units": 1}],
        "train": train,
    }
    if path is None:
        return seqspec.load(json.dumps(doc))
    path.write_text(json.dumps(doc))
    return seqspec.load(str(path))


def synthetic(series=40, steps=12, split=(24, 8, 8)) -> dict:
    return {"source": "synthetic", "series": series, "steps": steps, "split": list(split), "seed": 5}


# --- data ------------------------------------------------------------------------------------


def test_synthetic_series_is_deterministic_and_follows_the_formula():
    a = _data.synthetic_series(6, 15, seed=7, dtype="float64")
    assert a.shape == (6, 15, 1)
    np.testing.assert_array_equal(a, _data.synthetic_series(6, 15, seed=7, dtype="float64"))
    assert not np.array_equal(a, _data.synthetic_series(6, 15, seed=8, dtype="float64"))
    rng = np.random.default_rng(7)
    f1, f2, a1, a2 = rng.random((4, 6, 1))
    e = rng.random((6, 15)) - 0.5
    t = np.linspace(0, 1, 15)
    expected = 0.5 * np.sin((t - a1) * (10 * f1 + 10)) + 0.2 * np.sin((t - a2) * (20 * f2 + 20)) + 0.1 * e
    np.testing.assert_allclose(a[..., 0], expected, rtol=0, atol=1e-15)


def test_synthetic_split_in_order_with_horizon_values_after_the_window():
    spec = spec_with({"data": synthetic(), "target": {"kind": "horizon", "horizon": 4}}, layers=[{"type": "simple_rnn", "units": 4}])
    w = _data.load_windows(spec)
    full = _data.synthetic_series(40, 16, seed=5)
    np.testing.assert_array_equal(w.train, full[:24])
    np.testing.assert_array_equal(w.validation, full[24:32])
    np.testing.assert_array_equal(w.test, full[32:40])
    targets = _data.plan_targets(spec, w.steps, 1)
    split = _data.make_split(w.train, w.steps, targets)
    assert split.x.shape == (24, 12, 1) and split.y.shape == (24, 4)
    np.testing.assert_array_equal(split.y, full[:24, 12:16, 0])


def write_csv(path: Path, rows: int) -> None:
    lines = ["time,value,other"] + [f"{i},{float(i)},{-float(i)}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


def test_csv_windows_split_in_time_order_without_straddling(tmp_path):
    write_csv(tmp_path / "series.csv", 100)
    data = {"source": "csv", "path": "series.csv", "columns": ["value"], "steps": 5, "stride": 2, "split": [0.6, 0.2, 0.2]}
    spec = spec_with({"data": data, "target": {"kind": "next"}}, path=tmp_path / "spec.yaml")  # the path is relative to the spec
    w = _data.load_windows(spec)
    # Rows 0-59 train, 60-79 validation, 80-99 test; each window holds 5 inputs and the value after.
    for part, lo, hi in ((w.train, 0, 59), (w.validation, 60, 79), (w.test, 80, 99)):
        assert part.min() >= lo and part.max() <= hi
        np.testing.assert_array_equal(part[:, :, 0], part[:, :1, 0] + np.arange(6))  # consecutive rows
        np.testing.assert_array_equal(np.diff(part[:, 0, 0]), 2)  # stride 2
    assert [len(w.train), len(w.validation), len(w.test)] == [28, 8, 8]
    split = _data.make_split(w.validation, w.steps, _data.plan_targets(spec, w.steps, 1))
    np.testing.assert_array_equal(split.y[:, 0], split.x[:, -1, 0] + 1)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("time,value\n0,1\n1,2\n2,oops\n", "line 4, column 'value': 'oops' is not a number"),
        ("time,other\n0,1\n", "no column 'value' in the header (columns: time, other)"),
        ("", "empty CSV file"),
        (None, "no such data file"),
    ],
)
def test_bad_csv_is_one_line_data_error_and_nothing_is_written(tmp_path, capsys, content, problem):
    if content is not None:
        (tmp_path / "bad.csv").write_text(content)
    data = {"source": "csv", "path": "bad.csv", "columns": ["value"], "steps": 2}
    spec_with({"data": data, "target": {"kind": "next"}}, path=tmp_path / "spec.yaml")
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "spec.yaml"), "--backend", "torch", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"{tmp_path / 'bad.csv'}: {problem}" or (problem in err and "\n" not in err and str(tmp_path / "bad.csv") in err)
    assert not out.exists()
    with pytest.raises(seqspec.DataError):
        _data.load_windows(seqspec.load(str(tmp_path / "spec.yaml")))


def test_npy_series_split_in_order_and_all_features_forecast(tmp_path):
    array = np.arange(20 * 9 * 2, dtype=np.float64).reshape(20, 9, 2)
    np.save(tmp_path / "a.npy", array)
    data = {"source": "npy", "path": str(tmp_path / "a.npy"), "steps": 6, "split": [0.5, 0.25, 0.25]}
    spec = spec_with({"data": data, "target": {"kind": "horizon", "horizon": 2}}, layers=[{"type": "flatten"}, {"type": "dense", "units": 4}], shape=[6, 2])
    w = _data.load_windows(spec)
    np.testing.assert_array_equal(w.train, array[:10, :8])
    np.testing.assert_array_equal(w.validation, array[10:15, :8])
    np.testing.assert_array_equal(w.test, array[15:, :8])
    split = _data.make_split(w.test, w.steps, _data.plan_targets(spec, w.steps, 2))
    # Step-major: y[:, k * features + f] = series[steps + k, f].
    np.testing.assert_array_equal(split.y, array[15:, 6:8].reshape(5, 4))
    (tmp_path / "b.npy").write_bytes(b"not an array")
    bad = spec_with({"data": {**data, "path": str(tmp_path / "b.npy")}, "target": {"kind": "horizon", "horizon": 2}}, layers=[{"type": "flatten"}, {"type": "dense", "units": 4}], shape=[6, 2])
    with pytest.raises(seqspec.DataError, match=r"b\.npy: not a readable \.npy array"):
        _data.load_windows(bad)


# --- targets and the naive baseline ----------------------------------------------------------


def test_conv_gru_seq2seq_targets_align_to_the_strided_output_steps():
    spec = seqspec.load(str(ROOT / "specs" / "conv_gru.yaml"))
    targets = _data.plan_targets(spec, 50, 1)
    assert targets.aligned == tuple(range(3, 50, 2)) and len(targets.aligned) == 24
    windows = _data.synthetic_series(4, 60, seed=1)
    split = _data.make_split(windows, 50, targets)
    assert split.y.shape == (4, 24, 10)
    for j, step in enumerate(targets.aligned):
        np.testing.assert_array_equal(split.y[:, j], windows[:, step + 1 : step + 11, 0])


def test_seq2seq_targets_without_convolution_are_the_next_values_at_every_step():
    spec = seqspec.load(str(ROOT / "specs" / "seq2seq_lstm.yaml"))
    targets = _data.plan_targets(spec, 50, 1)
    windows = _data.synthetic_series(3, 60, seed=2)
    y = _data.make_split(windows, 50, targets).y
    for t in (0, 17, 49):
        np.testing.assert_array_equal(y[:, t], windows[:, t + 1 : t + 11, 0])


def test_target_that_does_not_fit_the_model_is_refused():
    spec = spec_with({"data": synthetic(), "target": {"kind": "horizon", "horizon": 3}})  # dense(1) output
    with pytest.raises(seqspec.SpecError, match=r"the next 3 values of 1 feature\(s\) is a target \[batch, 3\], but the model's output is \[batch, 1\]"):
        _data.plan_targets(spec, 12, 1)


def test_naive_baseline_repeats_the_last_value_it_sees():
    x = np.arange(2 * 6 * 1, dtype=np.float64).reshape(2, 6, 1)
    nxt = _data.Targets("next", 1, 1, None)
    np.testing.assert_array_equal(_data.naive_forecast(x, nxt), [[5.0], [11.0]])
    hor = _data.Targets("horizon", 3, 1, None)
    np.testing.assert_array_equal(_data.naive_forecast(x, hor), [[5.0] * 3, [11.0] * 3])
    s2s = _data.Targets("seq2seq", 2, 1, (1, 3, 5))
    np.testing.assert_array_equal(_data.naive_forecast(x, s2s)[0], [[1, 1], [3, 3], [5, 5]])
    y = np.zeros((2, 3, 2))
    pred = np.ones((2, 3, 2))
    pred[:, -1] = 2.0
    assert _data.score("mse", y, pred) == pytest.approx(2.0)
    assert _data.score("last_time_step_mse", y, pred) == pytest.approx(4.0)
    assert _data.score("last_time_step_mse", y[:, 0], pred[:, 0]) == pytest.approx(1.0)  # no time axis: plain mse


# --- Keras and torch take the same steps ------------------------------------------------------

TINY_LAYERS = [
    {"type": "simple_rnn", "units": 4, "return_sequences": True},
    {"type": "gru", "units": 3, "return_sequences": True},
    {"type": "time_distributed", "layer": {"type": "dense", "units": 2}},
]


@pytest.mark.parametrize(
    "optimizer",
    [
        {"type": "adam", "learning_rate": 0.01},
        {"type": "rmsprop", "learning_rate": 0.01, "clipnorm": 0.1},
        {"type": "sgd", "learning_rate": 0.1, "momentum": 0.9, "clipnorm": 0.5},
    ],
    ids=["adam", "rmsprop-clipnorm", "sgd-momentum-clipnorm"],
)
def test_float64_training_steps_match_across_backends(optimizer):
    """Two epochs of two batches (4 + 2 series): every step, batch order and clipping must agree."""
    train = {"data": synthetic(), "target": {"kind": "seq2seq", "horizon": 2}, "optimizer": optimizer, "batch_size": 4, "epochs": 2}
    spec = spec_with(train, layers=TINY_LAYERS, dtype="float64")
    rng = np.random.default_rng(0)
    split = _data.Split(rng.standard_normal((6, 5, 1)), rng.standard_normal((6, 5, 2)))
    plan = _train.make_plan(spec)
    start = seqspec.initial_weights(spec)
    weights = {}
    for name in ("keras", "torch"):
        backend = seqspec.get_backend(name)
        model = backend.build(spec)
        importlib.import_module(f"seqspec_{name}._train").fit(spec, model, plan, split, split)
        weights[name] = backend.get_weights(model, spec)
    moved = max(np.max(np.abs(weights["torch"][k] - start[k])) for k in start)
    diff = max(np.max(np.abs(weights["keras"][k] - weights["torch"][k])) for k in start)
    assert moved > 1e-3
    assert diff <= 1e-9, f"keras and torch weights differ by {diff:.3g} after 4 steps"


def test_torch_early_stopping_restores_the_best_weights_as_keras_does():
    import torch

    from seqspec_torch._train import _EarlyStopping

    model = torch.nn.Linear(1, 1)
    stopper = _EarlyStopping(seqspec._spec.EarlyStopping(patience=2), model)
    losses = [3.0, 1.0, 2.0, 2.5, 0.5]
    stopped = None
    for epoch, loss in enumerate(losses):
        with torch.no_grad():
            model.weight.fill_(loss)
        if stopper.update(epoch, loss):
            stopped = epoch
            break
    stopper.restore()
    assert stopped == 3 and model.weight.item() == 1.0


# --- a whole run -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["keras", "torch"])
def test_train_writes_model_weights_metrics_and_plots(tmp_path, capsys, backend):
    train = {
        "data": {"source": "synthetic", "series": 200, "steps": 10, "split": [140, 40, 20], "seed": 1},
        "target": {"kind": "seq2seq", "horizon": 3},
        "metrics": ["last_time_step_mse"],
        "epochs": 5,
        "early_stopping": {"patience": 3},
    }
    spec = spec_with(train, layers=[{"type": "gru", "units": 4, "return_sequences": True}, {"type": "dense", "units": 3}], path=tmp_path / "spec.yaml")
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "spec.yaml"), "--backend", backend, "--epochs", "2", "--out", str(out), "--seed", "9"]) == 0
    stdout = capsys.readouterr().out
    assert "validation" in stdout and "naive last_time_step_mse" in stdout
    b = seqspec.get_backend(backend)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model" + b.suffix, "weights.safetensors", "metrics.json", "learning_curves.png", "forecasts.png"]
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["backend"] == backend and m["seed"] == 9 and m["epochs_run"] == 2
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert set(m["history"][0]) == {"epoch", "loss", "last_time_step_mse", "val_loss", "val_last_time_step_mse", "time_s"}
    assert set(m["final"]) == {"train", "validation", "test"} and m["final"]["validation"]["mse"] < m["naive"]["validation"]["mse"]
    assert m["wall_time_s"] > 0 and m["epoch_time_s"] > 0
    from safetensors.numpy import load_file

    saved = load_file(str(out / "weights.safetensors"))
    reloaded = b.load(str(out / ("model" + b.suffix)))
    for name, array in b.get_weights(reloaded, spec).items():
        np.testing.assert_array_equal(saved[name], array)
    for png in ("learning_curves.png", "forecasts.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spec_without_train_section_is_refused(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(json.dumps({"seqspec": 1, "name": "x", "input": {"shape": [None, 1]}, "layers": [{"type": "dense", "units": 1}]}))
    assert main(["train", str(tmp_path / "s.yaml"), "--backend", "torch", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 's.yaml'}:1:1: the spec has no train: section, so seqspec train does not know its data or target"
    assert not (tmp_path / "run").exists()


def test_scaled_run_records_its_scaler_and_a_naive_baseline_in_the_history_units(tmp_path, capsys):
    write_csv(tmp_path / "series.csv", 120)
    data = {"source": "csv", "path": "series.csv", "columns": ["value"], "steps": 5, "split": [0.6, 0.2, 0.2], "scale": "standard"}
    spec_with({"data": data, "target": {"kind": "next"}}, path=tmp_path / "spec.yaml")
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "spec.yaml"), "--backend", "torch", "--epochs", "1", "--out", str(out)]) == 0
    assert "the model trains on standard-scaled data" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["scale"]["scale"] == "standard" and len(m["data"]["scale"]["mean"]) == 1
    assert m["units"].startswith("scores in the data's own units")
    # The naive forecast's error in scaled units is the data-unit error over std squared (mse).
    std = m["data"]["scale"]["std"][0]
    assert m["naive_scaled"]["validation"]["mse"] == pytest.approx(m["naive"]["validation"]["mse"] / std**2, rel=1e-5)
