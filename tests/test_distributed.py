"""Data-parallel training equals one process: every example spec's float64 weights after two epochs
agree to 1e-9 between N = 1 and N = 2 (torch DDP over gloo; Keras MirroredStrategy on two logical
CPU devices), with uneven and empty shards, batch norm, dropout and clipnorm; `--nproc` and
`python -m seqspec`; the launcher's environment."""

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
# Keras traces its steps per spec and replica set (seconds each): an example spec (batch norm, Adam)
# and keras_mix below, which holds every other kind of layer its strategy path meets.
KERAS_SPECS = [ROOT / "specs" / "seq2seq_batch_norm.yaml"]
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
    """conv_gru's strided convolution and GRU, batch norm, wavenet_gated's custom layer, SGD with
    momentum and clipnorm; 25 series in batches of 8 (an empty shard). No dropout: refused under replicas."""
    layers = [
        {"type": "conv1d", "filters": 4, "kernel_size": 4, "strides": 2, "padding": "valid"},
        {"type": "gru", "units": 4, "return_sequences": True},
        {"type": "batch_norm"},
        {"type": "wavenet", "filters": 3, "dilation_rates": [1, 2], "gated": True},
        {"type": "time_distributed", "layer": {"type": "dense", "units": 2}},
    ]
    return write_spec(folder / "keras_mix.yaml", layers, 25, 8, {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9, "clipnorm": 0.1})


def launch(out: Path, backend: str, specs: list[Path]) -> list[subprocess.Popen]:
    """Train `specs` with N = 2, then N = 1, into out/2 and out/1: torch as two processes (torchrun's
    variables; rank 0 also trains N = 1), keras as one process of two replicas (N = 1: plain Keras)."""
    cmd = [sys.executable, str(WORKER), str(out), backend, "2,1", "2", *map(str, specs)]
    if backend == "keras":
        return [subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    world = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    return [subprocess.Popen(cmd, env=env(**world, RANK=str(r)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in range(2)]


def finish(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]


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
    torch_specs = [*TRAIN_SPECS, *own_specs(root)]
    keras_specs = [*KERAS_SPECS, keras_mix(root)]
    runs = [launch(root / "torch", "torch", torch_specs), launch(root / "keras", "keras", keras_specs)]
    for procs in runs:
        finish(procs)
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


def test_keras_refuses_dropout_under_replicas(tmp_path):
    import seqspec
    from seqspec_keras._distributed import refuse_dropout

    specs = own_specs(tmp_path)
    with pytest.raises(SpecError, match=r"drop_lstm.yaml:1:\d+: layers\[0\]: .*depend on --nproc\); use --backend torch$"):
        refuse_dropout(seqspec.load(specs[0]))
    with pytest.raises(SpecError, match=r"layers\[0\]"):
        refuse_dropout(seqspec.load(specs[1]))
    refuse_dropout(seqspec.load(specs[2]))  # no dropout: trained


def test_keras_refuses_tf_config_across_workers_in_one_line(monkeypatch):
    """Two workers under TF_CONFIG fail inside Keras's fit (docs/scale.md): refused before any strategy is made."""
    import dataclasses

    import seqspec
    from seqspec import _train
    from seqspec_keras import _distributed

    config = {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    spec = seqspec.load(ROOT / "specs" / "seq2seq_lstm.yaml")
    plan = dataclasses.replace(_train.make_plan(spec, epochs=1), nproc=2)
    with pytest.raises(seqspec.BackendError) as e:
        _distributed.start_world(plan)
    assert "\n" not in str(e.value) and str(e.value).startswith("TF_CONFIG: the keras backend cannot train across 2 workers yet")
    assert _distributed.strategy() is None
