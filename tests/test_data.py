"""Training data as users bring it: spreadsheet CSVs, hostile or broken files, scaling, the synthetic draw, the forecasts plot."""

from __future__ import annotations

import json
import os
import signal
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import seqspec
from seqspec import _data, _train
from seqspec.cli import main

ROOT = Path(__file__).resolve().parent.parent


def spec_at(tmp_path: Path, data: dict, target: dict | None = None, layers: list | None = None, shape: list | None = None, dtype: str = "float32") -> seqspec.Spec:
    doc = {
        "seqspec": 1,
        "name": "tiny",
        "seed": 3,
        "dtype": dtype,
        "input": {"shape": shape or [None, len(data.get("columns", [1]))]},
        "layers": layers or [{"type": "simple_rnn", "units": 3}, {"type": "dense", "units": len(data.get("columns", [1]))}],
        "train": {"data": data, "target": target or {"kind": "next"}},
    }
    (tmp_path / "spec.yaml").write_text(json.dumps(doc))
    return seqspec.load(str(tmp_path / "spec.yaml"))


def csv_spec(tmp_path: Path, text: str | bytes, columns=("value",), **keys) -> seqspec.Spec:
    target = tmp_path / "data.csv"
    target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return spec_at(tmp_path, {"source": "csv", "path": "data.csv", "columns": list(columns), "steps": 2, **keys})


def series_csv(rows: int = 30, sep: str = ",") -> str:
    return "\n".join([f"time{sep}value"] + [f"{i}{sep}{i * 0.5}" for i in range(rows)]) + "\n"


def refused(spec: seqspec.Spec) -> str:
    with pytest.raises(seqspec.DataError) as e:
        _data.load_windows(spec)
    message = str(e.value)
    assert "\n" not in message
    return message


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: a FIFO opened the ordinary way blocks until a writer comes."""

    def stop(*_):
        raise TimeoutError(f"still reading after {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --- CSV files as spreadsheets write them ----------------------------------------------------


def test_csv_with_a_utf8_byte_order_mark_reads_its_first_column(tmp_path):
    # Excel's "CSV UTF-8" puts a BOM before the first header name.
    spec = csv_spec(tmp_path, "\ufeffvalue,other\n" + "\n".join(f"{i},0" for i in range(30)) + "\n")
    w = _data.load_windows(spec)
    np.testing.assert_array_equal(w.train[0, :, 0], [0, 1, 2])


def test_blank_lines_above_the_header_are_skipped(tmp_path):
    spec = csv_spec(tmp_path, "\n  \n" + series_csv())
    w = _data.load_windows(spec)
    np.testing.assert_array_equal(w.train[0, :, 0], [0.0, 0.5, 1.0])


def test_a_column_named_twice_is_refused_naming_it(tmp_path):
    spec = csv_spec(tmp_path, "value,time,value\n" + "\n".join(f"{i},{i},{-i}" for i in range(30)) + "\n")
    assert refused(spec) == f"{tmp_path / 'data.csv'}: the header names column 'value' 2 times; rename all but one so that the data is unambiguous"


def test_a_duplicated_column_the_spec_does_not_use_is_fine(tmp_path):
    # Trailing empty header cells (",,") are what spreadsheets leave; they are not the data.
    spec = csv_spec(tmp_path, "value,,\n" + "\n".join(f"{i},," for i in range(30)) + "\n")
    assert len(_data.load_windows(spec).train) > 0


@pytest.mark.parametrize("sep, written", [(";", "';'"), ("\t", '"\\t"')])
def test_semicolon_or_tab_separated_file_gets_a_hint_and_reads_with_delimiter(tmp_path, sep, written):
    spec = csv_spec(tmp_path, series_csv(sep=sep))
    message = refused(spec)
    assert message.startswith(f"{tmp_path / 'data.csv'}: no column 'value' in the header (columns: ")
    assert message.endswith(f"; the file seems to be separated by {written}, not ',': set train.data.delimiter: {written}")
    spec = csv_spec(tmp_path, series_csv(sep=sep), delimiter=sep)
    np.testing.assert_array_equal(_data.load_windows(spec).train[0, :, 0], [0.0, 0.5, 1.0])


def test_header_error_shows_the_count_and_at_most_three_cut_names(tmp_path):
    secret = "AKIA" + "X" * 60
    spec = csv_spec(tmp_path, f"{secret},b,c,hunter2,e\n1,2,3,4,5\n")
    message = refused(spec)
    assert message == f"{tmp_path / 'data.csv'}: no column 'value' in the header (5 columns: {secret[:20]}..., b, c, ...)"
    assert "hunter2" not in message and secret not in message


def test_a_newline_inside_a_quoted_header_name_stays_on_one_line(tmp_path, capsys):
    csv_spec(tmp_path, '"a\nb",c\n1,2\n')
    assert main(["train", str(tmp_path / "spec.yaml"), "--backend", "torch", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'a\\nb'" in err
    assert not (tmp_path / "run").exists()


def test_a_value_that_overflows_float32_is_refused_after_the_cast(tmp_path):
    text = "value\n" + "\n".join(["1.0"] * 5 + ["1e39"] + ["2.0"] * 20) + "\n"
    message = refused(csv_spec(tmp_path, text))
    assert message == f"{tmp_path / 'data.csv'}: line 7, column 'value': 1e+39 is too large for float32 (at most 3.403e+38)"
    (tmp_path / "data.csv").write_text(text)
    spec64 = spec_at(tmp_path, {"source": "csv", "path": "data.csv", "columns": ["value"], "steps": 2}, dtype="float64")
    assert _data.load_windows(spec64).train.max() == 1e39


# --- files that are not data ------------------------------------------------------------------


def npy_spec(tmp_path: Path, dtype: str = "float32", **keys) -> seqspec.Spec:
    return spec_at(tmp_path, {"source": "npy", "path": "a.npy", "split": [0.5, 0.25, 0.25], **keys}, layers=[{"type": "simple_rnn", "units": 2}, {"type": "dense", "units": 1}], dtype=dtype)


def test_npy_header_claiming_terabytes_is_refused_before_allocating(tmp_path, capsys):
    with open(tmp_path / "a.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6, 5)})
        f.write(b"\0" * 800)
    spec = npy_spec(tmp_path)
    tracemalloc.start()
    try:
        message = refused(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == f"{tmp_path / 'a.npy'}: the header declares an array of shape [1000000, 1000000, 5] (3.73e+04 GiB), but the file holds 800 bytes of data"
    assert peak < 1 << 20
    assert main(["train", str(tmp_path / "spec.yaml"), "--backend", "torch", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == message + "\n"


def test_npy_that_fits_the_file_but_not_the_limit_is_refused(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", np.zeros((40, 10), np.float64))
    monkeypatch.setattr(_data, "MAX_ARRAY_BYTES", 1000)
    assert refused(npy_spec(tmp_path)) == f"{tmp_path / 'a.npy'}: 40 series of 10 steps and 1 feature(s) take 1.56 KiB as float32, more than seqspec loads (1000 bytes)"


def test_npy_is_read_through_the_header_and_only_the_used_steps(tmp_path):
    array = np.arange(8 * 12 * 2, dtype=np.int64).reshape(8, 12, 2)
    np.save(tmp_path / "a.npy", np.asfortranarray(array))
    spec = npy_spec(tmp_path, steps=4)
    spec = spec.model_copy(update={"input": seqspec._spec.Input(shape=[None, 2])})
    w = _data.load_windows(spec)
    np.testing.assert_array_equal(w.train, array[:4, :5])
    assert w.train.dtype == np.float32
    np.savez(tmp_path / "a.npy", x=array)
    (tmp_path / "a.npy").write_bytes((tmp_path / "a.npy.npz").read_bytes())
    assert refused(spec).endswith("holds an archive of several arrays, expected one .npy array [series, time, features]")
    np.save(tmp_path / "a.npy", np.array(["a", "b"]))
    assert refused(spec) == f"{tmp_path / 'a.npy'}: array of dtype <U1, expected numbers"


def test_npy_value_that_overflows_float32_is_refused(tmp_path):
    array = np.ones((8, 6), np.float64)
    array[5, 2] = 1e39
    np.save(tmp_path / "a.npy", array)
    assert "too large for float32" in refused(npy_spec(tmp_path))
    assert _data.load_windows(npy_spec(tmp_path, dtype="float64")).validation.max() == 1e39


@pytest.mark.parametrize("name", ["data.csv", "a.npy"])
def test_fifo_and_device_are_refused_without_hanging(tmp_path, name):
    source = {"source": "csv", "path": name, "columns": ["value"], "steps": 2} if name.endswith(".csv") else {"source": "npy", "path": name}
    os.mkfifo(tmp_path / name)
    spec = spec_at(tmp_path, source)
    with deadline(10):
        assert refused(spec) == f"{tmp_path / name}: not a regular file (a pipe), expected a data file"
    os.remove(tmp_path / name)
    os.symlink("/dev/zero", tmp_path / name)
    with deadline(10):
        assert refused(spec) == f"{tmp_path / name}: not a regular file (a device or other special file), expected a data file"


# --- the synthetic source ----------------------------------------------------------------------


def test_synthetic_draws_only_the_series_the_split_uses(tmp_path):
    data = {"source": "synthetic", "series": 1_000_000, "steps": 12, "split": [20, 5, 5], "seed": 5}
    spec = spec_at(tmp_path, data)
    tracemalloc.start()
    try:
        w = _data.load_windows(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # a million series of 13 float64 values would be 104 MB
    used = _data.synthetic_series(30, 13, seed=5)
    np.testing.assert_array_equal(np.concatenate([w.train, w.validation, w.test]), used)


def test_synthetic_series_drawn_in_blocks_equals_one_draw():
    length = (1 << 20) // 2  # two series per block: five series take three blocks
    got = _data.synthetic_series(5, length, seed=11, dtype="float64")
    rng = np.random.default_rng(11)
    f1, f2, a1, a2 = rng.random((4, 5, 1))
    t = np.linspace(0, 1, length)
    want = 0.5 * np.sin((t - a1) * (10 * f1 + 10)) + 0.2 * np.sin((t - a2) * (20 * f2 + 20)) + 0.1 * (rng.random((5, length)) - 0.5)
    np.testing.assert_array_equal(got[..., 0], want)


# --- scaling ------------------------------------------------------------------------------------


def two_feature_csv(tmp_path: Path, scale: str | None) -> seqspec.Spec:
    # 'level' in the hundreds, 'flat' constant: per-feature scaling, and no division by zero.
    rows = [f"{100 + 50 * np.sin(i / 3):.6f},7.5" for i in range(60)]
    (tmp_path / "data.csv").write_text("level,flat\n" + "\n".join(rows) + "\n")
    data = {"source": "csv", "path": "data.csv", "columns": ["level", "flat"], "steps": 4, "split": [0.5, 0.25, 0.25]}
    if scale is not None:
        data["scale"] = scale
    return spec_at(tmp_path, data, layers=[{"type": "simple_rnn", "units": 3}, {"type": "dense", "units": 2}])


def test_csv_is_standard_scaled_per_feature_on_the_training_rows_only(tmp_path):
    spec = two_feature_csv(tmp_path, None)
    assert spec.train.data.scale == "standard"
    prepared = _train.prepare(spec)
    train_rows = np.loadtxt(tmp_path / "data.csv", delimiter=",", skiprows=1, dtype=np.float32)[:30].astype(np.float64)
    record = prepared.scaler.as_json()
    assert record["scale"] == "standard" and record["fitted_on"] == "train"
    np.testing.assert_allclose(record["mean"], [train_rows[:, 0].mean(), 7.5], rtol=1e-12)
    np.testing.assert_allclose(record["std"], [train_rows[:, 0].std(), 1.0], rtol=1e-12)
    json.dumps(record)
    for name in _data.SPLITS:
        x = prepared.splits[name].x
        assert x.dtype == np.float32 and np.all(np.isfinite(x))
        np.testing.assert_array_equal(x[..., 1], 0.0)  # the constant feature, shifted only
        raw = prepared.windows.split(name)[:, :4]
        np.testing.assert_allclose(x[..., 0], (raw[..., 0] - record["mean"][0]) / record["std"][0], rtol=1e-5, atol=1e-6)
    # Targets are scaled as the inputs: the next value of window i is input step 3 of window i + 1.
    s = prepared.splits["train"]
    np.testing.assert_allclose(s.y[:-1], s.x[1:, 3], atol=0)
    assert "scaled" in prepared.units and "own units" in prepared.units


def test_minmax_maps_the_training_values_onto_0_1(tmp_path):
    prepared = _train.prepare(two_feature_csv(tmp_path, "minmax"))
    x = prepared.splits["train"].x[..., 0]
    assert x.min() == pytest.approx(0.0, abs=1e-6) and x.max() == pytest.approx(1.0, abs=1e-6)
    assert set(prepared.scaler.as_json()) == {"scale", "fitted_on", "min", "range", "scaled"}
    np.testing.assert_array_equal(prepared.splits["validation"].x[..., 1], 0.0)


def test_synthetic_defaults_to_unscaled_and_csv_can_opt_out(tmp_path):
    spec = spec_at(tmp_path, {"source": "synthetic", "series": 40, "steps": 6, "split": [24, 8, 8], "seed": 1})
    prepared = _train.prepare(spec)
    assert prepared.scaler.as_json() == {"scale": "none"}
    np.testing.assert_array_equal(prepared.splits["train"].x, prepared.windows.train[:, :6])
    prepared = _train.prepare(two_feature_csv(tmp_path, "none"))
    np.testing.assert_array_equal(prepared.splits["train"].x, prepared.windows.train[:, :4])


def test_unknown_scale_is_a_spec_error(tmp_path):
    with pytest.raises(seqspec.SpecError, match="train.data.scale: must be one of 'none', 'standard', 'minmax', got the string 'zscore'"):
        two_feature_csv(tmp_path, "zscore")


class LastValue:
    """A stand-in backend whose model forecasts the last input value: the naive forecast, in whatever units it is fed."""

    @staticmethod
    def predict(model, x):
        return np.tile(x[:, -1], 1)


def test_evaluate_reports_data_units_and_the_naive_baseline_in_the_same_units(tmp_path):
    spec = two_feature_csv(tmp_path, "standard")
    prepared = _train.prepare(spec)
    plan = _train.make_plan(spec)
    scores, naive = _train.evaluate(LastValue, None, prepared, plan)
    raw = _data.make_split(prepared.windows.validation, 4, prepared.targets)
    want = _data.score("mse", raw.y, raw.x[:, -1])
    assert naive["validation"]["mse"] == pytest.approx(want, rel=1e-12)
    assert scores["validation"]["mse"] == pytest.approx(want, rel=1e-5)  # the same forecast, unscaled
    scaled_scores, scaled_naive = _train.evaluate(LastValue, None, prepared, plan, units="scaled")
    # mse over [level, flat]: only 'level' varies, so scaled mse = data mse / std^2.
    std = prepared.scaler.as_json()["std"][0]
    assert scaled_naive["validation"]["mse"] == pytest.approx(want / std**2, rel=1e-5)


# --- the forecasts plot ------------------------------------------------------------------------


def test_forecasts_plot_spreads_over_the_validation_set_in_data_units(tmp_path, monkeypatch):
    import matplotlib.figure

    spec = two_feature_csv(tmp_path, "standard")
    prepared = _train.prepare(spec)
    val = prepared.splits["validation"]
    asked = []

    def pred(x):
        asked.append(x)
        return x[:, -1]

    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: (figures.append(self), save(self, *a, **k))[1])
    _train.plot_forecasts(str(tmp_path / "f.png"), {"spec": "tiny", "backend": "torch"}, val, pred, prepared.targets, scaler=prepared.scaler)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    (x,) = asked
    picked = [int(np.flatnonzero((val.x == row).all(axis=(1, 2)))[0]) for row in x]
    assert len(picked) == 3 and picked[0] == 0 and picked[2] == len(val.x) - 1 and abs(picked[1] - (len(val.x) - 1) / 2) <= 0.5
    (fig,) = figures
    axes = fig.axes
    raw = prepared.windows.validation
    np.testing.assert_allclose(axes[0].lines[0].get_ydata(), raw[0, :4, 0], rtol=1e-5)  # drawn in the data's units
    np.testing.assert_allclose(axes[-1].lines[1].get_ydata(), raw[-1, 4:, 0], rtol=1e-5)
    assert all(ax.get_legend() is None for ax in axes) and len(fig.legends) == 1
    for ax in axes:
        ticks = ax.get_xticks()
        np.testing.assert_array_equal(ticks, np.round(ticks))
    # The whole split with predictions for every row also works.
    _train.plot_forecasts(str(tmp_path / "g.png"), {"spec": "tiny", "backend": "torch"}, val, val.x[:, -1], prepared.targets)


# --- the shipped real series -------------------------------------------------------------------


def test_sunspots_spec_loads_the_shipped_csv_and_its_licence_is_noted():
    spec = seqspec.load(str(ROOT / "specs" / "sunspots.yaml"))
    w = _data.load_windows(spec)
    assert "309 rows" in w.origin
    assert len(w.train) + len(w.validation) + len(w.test) == (216 - 20) + (62 - 20) + (31 - 20)
    readme = (ROOT / "specs" / "data" / "README.md").read_text()
    assert "sunspots.csv" in readme and "public domain" in readme
