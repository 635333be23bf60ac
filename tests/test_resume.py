"""Checkpoints and resume: `--checkpoint-every K` writes the model, optimizer, random state and epoch
into the run folder; `--resume DIR` continues; a stopped and resumed run (Ctrl-C included) ends
bit-identical in float64 to one that was not stopped, on both backends (keras under --nproc 2:
tests/test_distributed.py, whose process has its replicas' devices)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from seqspec.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def no_plots():
    """The in-process runs write their two .png files empty: drawing them (matplotlib's import and
    two savefigs a run, most of a tiny run's time) proves nothing about resuming, and test_train
    checks the plots. The Ctrl-C run, a process of its own, still draws them."""
    from seqspec._train import RunRecord

    with pytest.MonkeyPatch.context() as mp:
        for name in ("plot_learning_curves", "plot_forecasts"):
            mp.setattr(RunRecord, name, lambda self, path: Path(path).write_bytes(b""))
        yield


def write_spec(path: Path, series: int = 25, early_stopping: dict | None = None) -> Path:
    """Dropout (the random state must come back), batch norm (its moving statistics), Adam with clipnorm (its moments)."""
    doc = {
        "seqspec": 1, "name": "tiny", "seed": 3, "dtype": "float64", "input": {"shape": [None, 1]},
        "layers": [
            {"type": "lstm", "units": 4, "return_sequences": True, "dropout": 0.2},
            {"type": "batch_norm"},
            {"type": "dropout", "rate": 0.3},
            {"type": "time_distributed", "layer": {"type": "dense", "units": 2}},
        ],
        "train": {
            "data": {"source": "synthetic", "series": series + 10, "steps": 8, "split": [series, 5, 5], "seed": 1},
            "target": {"kind": "seq2seq", "horizon": 2},
            "optimizer": {"type": "adam", "learning_rate": 0.01, "clipnorm": 0.05},
            "batch_size": 8,
            **({"early_stopping": early_stopping} if early_stopping else {}),
        },
    }
    path.write_text(json.dumps(doc))
    return path


def weights(run: Path) -> dict:
    return load_file(str(run / "weights.safetensors"))


def assert_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert sorted(wa) == sorted(wb)
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    ha, hb = (json.loads((r / "metrics.json").read_text())["history"] for r in (a, b))
    assert [{k: v for k, v in h.items() if k != "time_s"} for h in ha] == [{k: v for k, v in h.items() if k != "time_s"} for h in hb]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Four epochs without a stop."""
    folder = tmp_path_factory.mktemp("resume")
    spec = write_spec(folder / "s.yaml")
    assert main(["train", str(spec), "--backend", "torch", "--epochs", "4", "--out", str(folder / "straight")]) == 0
    return spec, folder / "straight"


def test_a_resumed_run_ends_bit_identical_to_one_never_stopped(straight, tmp_path, capsys):
    spec, full = straight
    run = tmp_path / "run"
    assert main(["train", str(spec), "--backend", "torch", "--epochs", "2", "--checkpoint-every", "1", "--out", str(run)]) == 0
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["epoch-00002.json", "epoch-00002.pt"]  # older ones removed
    record = json.loads((run / "checkpoint" / "epoch-00002.json").read_text())
    assert record["epoch"] == 2 and record["backend"] == "torch" and record["every"] == 1
    assert main(["train", str(spec), "--backend", "torch", "--epochs", "4", "--resume", str(run)]) == 0
    assert_identical(full, run)
    # The schedule carries on: the resumed run wrote epoch 4's checkpoint.
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["epoch-00004.json", "epoch-00004.pt"]


def test_a_resume_of_another_training_or_without_a_checkpoint_is_one_line(straight, tmp_path, capsys):
    spec, full = straight
    run = tmp_path / "run"
    assert main(["train", str(spec), "--backend", "torch", "--epochs", "1", "--checkpoint-every", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    cases = [
        (["--resume", str(full)], f"--resume {full}: holds no complete checkpoint (checkpoint/epoch-*.json); train with --checkpoint-every K to write them"),
        (["--resume", str(run), "--batch-size", "4"], f"--resume {run}: the checkpoint is of another training: batch_size was 8, now 4"),
        (["--resume", str(run), "--out", str(tmp_path / "x")], f"--out {tmp_path / 'x'}: a resumed run is written where it was (--resume {run}); leave --out out"),
        (["--resume", str(run), "--epochs", "1"], f"--resume {run}: the checkpoint is of epoch 1, the run has 1 epochs: pass a larger --epochs to train on"),
        (["--resume", str(tmp_path / "none")], f"--resume {tmp_path / 'none'}: not a folder (the run folder a seqspec train --checkpoint-every wrote)"),
    ]
    for extra, message in cases:
        assert main(["train", str(spec), "--backend", "torch", *extra]) == 2, extra
        assert capsys.readouterr().err.strip() == message
    assert main(["train", str(spec), "--backend", "keras", "--resume", str(run), "--epochs", "3"]) == 2
    assert capsys.readouterr().err.strip() == f"--resume {run}: the checkpoint is of the torch backend, not keras"


@pytest.mark.parametrize(
    "early_stopping, stop_at, epochs",
    [(None, 2, 5), ({"patience": 2, "restore_best_weights": True}, 5, 8)],
    ids=["plain", "early-stopping"],
)
def test_keras_resumed_run_ends_bit_identical_to_one_never_stopped(tmp_path, capsys, early_stopping, stop_at, epochs):
    """The keras backend's checkpoint: weights and moving statistics, Adam's moments and count, the
    dropout seed states, early stopping's best weights and counters. With early stopping (learning
    rate 0.1), the run stops after epoch 6 keeping epoch 4's weights: the resume from epoch 5 has
    to carry the best weights and the wait of 1 over."""
    spec = write_spec(tmp_path / "s.yaml", early_stopping=early_stopping)
    if early_stopping:
        doc = json.loads(spec.read_text())
        doc["train"]["optimizer"]["learning_rate"] = 0.1
        spec.write_text(json.dumps(doc))
    full, run = tmp_path / "straight", tmp_path / "run"
    assert main(["train", str(spec), "--backend", "keras", "--epochs", str(epochs), "--out", str(full)]) == 0
    assert main(["train", str(spec), "--backend", "keras", "--epochs", str(stop_at), "--checkpoint-every", "1", "--out", str(run)]) == 0
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == [f"epoch-{stop_at:05d}.json", f"epoch-{stop_at:05d}.npz"]
    with np.load(run / "checkpoint" / f"epoch-{stop_at:05d}.npz", allow_pickle=False) as state:  # arrays only: no pickle to trust
        assert any(k.startswith("optimizer/") for k in state.files) and any(k.startswith("seeds/") for k in state.files)
    assert main(["train", str(spec), "--backend", "keras", "--epochs", str(epochs), "--resume", str(run)]) == 0
    assert_identical(full, run)
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (full, run)]
    want = (6, 4) if early_stopping else (5, 5)
    assert [(m["epochs_run"], m["weights_epoch"]) for m in metrics] == [want, want]


def test_ctrl_c_leaves_a_checkpoint_that_resumes_bit_identical(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", series=400)  # 50 batches an epoch: the signal lands inside epoch 2
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends"), os.environ.get("PYTHONPATH", "")])}
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "seqspec", "train", str(spec), "--backend", "torch", "--epochs", "3", "--checkpoint-every", "10", "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("Epoch 1/3"):
            proc.send_signal(signal.SIGINT)
            break
    proc.stdout.read()
    assert proc.wait(timeout=300) == 130
    m = json.loads((run / "metrics.json").read_text())
    n = m["epochs_run"]
    assert m["interrupted"] is True and 1 <= n < 3
    record = json.loads((run / "checkpoint" / f"epoch-{n:05d}.json").read_text())
    assert record["epoch"] == n  # the schedule (every 10) had written none: the interrupt did
    assert main(["train", str(spec), "--backend", "torch", "--resume", str(run)]) == 0
    assert main(["train", str(spec), "--backend", "torch", "--epochs", "3", "--out", str(tmp_path / "straight")]) == 0
    assert_identical(tmp_path / "straight", run)


def test_keras_ctrl_c_leaves_a_checkpoint_that_resumes_bit_identical(tmp_path, capsys, monkeypatch):
    """In this process: SIGINT raised as epoch 2 ends (the schedule, every 10, writes none) stops
    training at the next batch; the interrupt writes epoch 2's checkpoint; the resume ends as a run
    never stopped."""
    from seqspec_keras import _resume

    spec = write_spec(tmp_path / "s.yaml")
    run, full = tmp_path / "run", tmp_path / "straight"
    assert main(["train", str(spec), "--backend", "keras", "--epochs", "4", "--out", str(full)]) == 0
    real = _resume.Checkpoints.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        real(self, epoch, logs)
        if epoch == 1:
            signal.raise_signal(signal.SIGINT)

    with monkeypatch.context() as m:
        m.setattr(_resume.Checkpoints, "on_epoch_end", on_epoch_end)
        assert main(["train", str(spec), "--backend", "keras", "--epochs", "4", "--checkpoint-every", "10", "--out", str(run)]) == 130
    assert json.loads((run / "metrics.json").read_text())["interrupted"] is True
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["epoch-00002.json", "epoch-00002.npz"]
    assert main(["train", str(spec), "--backend", "keras", "--resume", str(run)]) == 0
    assert_identical(full, run)
