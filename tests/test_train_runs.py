"""`seqspec train`'s run folder: --out checked first, locked, written whole; interrupts, nan losses, early stopping, file modes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqspec import _files
from seqspec.cli import main

ROOT = Path(__file__).resolve().parent.parent


def write_spec(path: Path, train: dict | None = None, layers: list | None = None) -> Path:
    doc = {
        "seqspec": 1,
        "name": "tiny",
        "seed": 3,
        "input": {"shape": [None, 1]},
        "layers": layers or [{"type": "simple_rnn", "units": 3}, {"type": "dense", "units": 1}],
        "train": {
            "data": {"source": "synthetic", "series": 40, "steps": 12, "split": [24, 8, 8], "seed": 5},
            "target": {"kind": "next"},
            **(train or {}),
        },
    }
    path.write_text(json.dumps(doc))
    return path


def train(spec: Path, out: Path, *extra: str, backend: str = "torch") -> int:
    return main(["train", str(spec), "--backend", backend, "--epochs", "1", "--out", str(out), *extra])


def test_out_that_is_a_file_is_refused_before_the_data_loads(tmp_path, capsys):
    bad = {"data": {"source": "csv", "path": "missing.csv", "columns": ["v"], "steps": 2}}
    spec = write_spec(tmp_path / "s.yaml", bad)  # the data would fail too: --out must be seen first
    (tmp_path / "file").write_text("x")
    assert train(spec, tmp_path / "file") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"--out {tmp_path / 'file'}: is a file, not a folder"
    assert train(spec, tmp_path / "file" / "run") == 2
    assert capsys.readouterr().err.strip() == f"--out {tmp_path / 'file' / 'run'}: {tmp_path / 'file'} is a file, not a folder"
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, a folder nobody can write in")
def test_out_in_an_unwritable_folder_is_refused_before_training(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml")
    assert train(spec, Path("/proc/self/seqspec-run")) == 2
    err = capsys.readouterr().err
    assert err.startswith("--out /proc/self/seqspec-run: cannot write in /proc/self") and err.count("\n") == 1


def test_a_folder_holding_a_run_needs_overwrite_and_is_replaced_whole(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml")
    out = tmp_path / "run"
    assert train(spec, out) == 0
    first = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert train(spec, out, "--seed", "8") == 2
    assert capsys.readouterr().err.strip() == f"--out {out}: holds another run (metrics.json); pass --overwrite to replace it, or choose another folder"
    assert json.loads((out / "metrics.json").read_text()) == first
    assert train(spec, out, "--seed", "8", "--overwrite") == 0
    assert json.loads((out / "metrics.json").read_text())["seed"] == 8
    # Nothing is left beside it: no temporary folder, no old run, no lock file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "s.yaml"]


def test_overwrite_never_replaces_a_folder_that_is_not_a_run(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml")
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep me")
    assert train(spec, out) == 2
    assert "holds 1 file (todo.txt); pass --overwrite" in capsys.readouterr().err
    assert train(spec, out, "--overwrite") == 2
    assert "not a seqspec run" in capsys.readouterr().err
    assert (out / "todo.txt").read_text() == "keep me"


def test_a_second_run_into_a_locked_folder_fails_at_once(tmp_path, capsys):
    import fcntl

    spec = write_spec(tmp_path / "s.yaml")
    out = tmp_path / "run"
    fd = os.open(tmp_path / ".run.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert train(spec, out) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert f"another seqspec train is writing {out}" in err and err.count("\n") == 1
    assert not out.exists()


def test_nan_loss_stops_training_in_one_line_and_writes_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml", {"optimizer": {"type": "sgd", "learning_rate": 1e30}})
    out = tmp_path / "run"
    assert main(["train", str(spec), "--backend", "torch", "--epochs", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training stopped: the " in err and "loss became " in err and " in epoch 1;" in err
    assert not out.exists()
    assert json.dumps(_files.finite_json({"a": [float("nan"), 1.0, float("inf")]}), allow_nan=False) == '{"a": [null, 1.0, null]}'


def test_metrics_record_the_scaler_units_and_interrupted_and_honour_the_umask(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml")
    out = tmp_path / "run"
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    old = os.umask(0o022)
    try:
        assert train(spec, out) == 0
    finally:
        os.umask(old)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # only while training
    stdout = capsys.readouterr().out
    assert "\nscores in the data's own units" in stdout and "1 epoch in" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["scale"] == {"scale": "none"} and m["units"].startswith("scores in the data's own units")
    assert m["interrupted"] is False and m["weights_epoch"] == 1 and "naive_scaled" in m
    for p in [out, *out.iterdir()]:
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p


def test_atomic_write_removes_its_own_stale_temporaries_only(tmp_path):
    stale = tmp_path / ".x.json.seqspec-tmp-abcd.json"
    fresh = tmp_path / ".x.json.seqspec-tmp-efgh.json"
    other = tmp_path / ".y.json.seqspec-tmp-abcd.json"
    for p in (stale, fresh, other):
        p.write_text("")
    hour_ago = time.time() - 3700
    os.utime(stale, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    _files.atomic_write(str(tmp_path / "x.json"), lambda t: Path(t).write_text("{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["x.json", fresh.name, other.name])


def test_two_compiles_of_one_spec_give_identical_pt_files(tmp_path):
    spec = str(ROOT / "specs" / "seq2seq_lstm.yaml")
    for name in ("a.pt", "b.pt"):
        assert main(["compile", spec, "--backend", "torch", "-o", str(tmp_path / name)]) == 0
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_early_stopping_says_where_it_stopped_and_whose_weights_it_kept(tmp_path, capsys, backend):
    # A learning rate too small to move the float32 validation loss: no epoch after the first improves.
    spec = write_spec(tmp_path / "s.yaml", {"optimizer": {"type": "sgd", "learning_rate": 1e-12}, "early_stopping": {"patience": 1}})
    assert main(["train", str(spec), "--backend", backend, "--epochs", "5", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "early stopping after epoch 2: val_loss did not improve for 1 epoch; restored the weights of epoch 1 (the best val_loss)\n" in out
    assert "Epoch 2/5" in out and "Epoch 3/5" not in out


# Epochs of 40 batches: the signal, sent when epoch 1 (or 2) is reported, lands in a later epoch,
# long before the 50th.
SIGNAL_DATA = {"source": "synthetic", "series": 400, "steps": 50, "split": [320, 40, 40], "seed": 5}


def big_spec(path: Path) -> Path:
    return write_spec(
        path,
        {"data": SIGNAL_DATA, "batch_size": 8},
        layers=[{"type": "gru", "units": 16}, {"type": "dense", "units": 1}],
    )


@pytest.mark.parametrize("backend, sig", [("torch", signal.SIGINT), ("keras", signal.SIGINT)])
def test_a_signal_during_training_writes_the_run_so_far_and_exits_130(tmp_path, backend, sig):
    spec = big_spec(tmp_path / "s.yaml")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "seqspec.cli", "train", str(spec), "--backend", backend, "--epochs", "50", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Epoch 1/50"):
            proc.send_signal(sig)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130
    stdout = "".join(lines) + rest
    m = json.loads((out / "metrics.json").read_text())
    n = m["epochs_run"]
    assert 1 <= n < 50 and m["interrupted"] is True and len(m["history"]) == n
    assert f"interrupted after {n} epoch{'' if n == 1 else 's'}; writing the run with the weights of epoch {n}" in stdout
    assert m["weights_epoch"] == n


def test_sigterm_during_training_stops_as_sigint_does(tmp_path, capsys, monkeypatch):
    """In this process (a real process gets SIGINT above): SIGTERM raised as epoch 1 ends stops
    training at the next batch, writes the run so far and exits 130."""
    from seqspec import _train

    real = _train.Progress.close

    def close(self, record, batches):
        real(self, record, batches)
        if record is not None and record["epoch"] == 1:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(_train.Progress, "close", close)
    out = tmp_path / "run"
    assert main(["train", str(big_spec(tmp_path / "s.yaml")), "--backend", "torch", "--epochs", "50", "--out", str(out)]) == 130
    m = json.loads((out / "metrics.json").read_text())
    n = m["epochs_run"]
    assert 1 <= n < 50 and m["interrupted"] is True and len(m["history"]) == n and m["weights_epoch"] == n
    assert f"interrupted after {n} epoch{'' if n == 1 else 's'}; writing the run with the weights of epoch {n}" in capsys.readouterr().out


def test_an_interrupt_under_early_stopping_writes_the_best_epochs_weights(tmp_path):
    # As in the early-stopping test, no epoch after the first improves; patience outlasts the run.
    spec = write_spec(
        tmp_path / "s.yaml",
        {
            "data": SIGNAL_DATA,
            "batch_size": 8,
            "optimizer": {"type": "sgd", "learning_rate": 1e-12},
            "early_stopping": {"patience": 100},
        },
        layers=[{"type": "gru", "units": 16}, {"type": "dense", "units": 1}],
    )
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "seqspec.cli", "train", str(spec), "--backend", "torch", "--epochs", "50", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Epoch 2/50"):
            proc.send_signal(signal.SIGINT)
            break
    stdout = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=120) == 130
    m = json.loads((out / "metrics.json").read_text())
    n = m["epochs_run"]
    assert n >= 2 and m["interrupted"] is True and m["weights_epoch"] == 1
    assert f"interrupted after {n} epochs; writing the run with the weights of epoch 1" in stdout
