"""Data-parallel training throughput: training samples per second for N = 1 and 2 workers, per
backend, for the book's LSTM seq-to-seq model (specs/seq2seq_lstm.yaml) and an LSTM(128) on
[batch 64, 500 steps, 64 features].

Each case is one `python -m seqspec train --nproc N` (torch: N processes, DDP over gloo; keras: N
replicas, MirroredStrategy on N logical CPU devices) in a fresh process; the figure is the training
series over the mean epoch time after the first (metrics.json `epoch_time_s_after_first`, which
includes the epoch's validation pass), so start-up and tracing are left out.

    python benchmarks/bench_distributed.py [--quick] [--backends torch keras] [--nproc 1 2] [--cases ...] [--out FILE]

--quick trains fewer series (the shape of each step is unchanged): a check that it runs, not a
measurement. Results go to benchmarks/results/distributed.json by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def seq2seq_lstm(folder: Path, series: int) -> Path:
    text = (ROOT / "specs" / "seq2seq_lstm.yaml").read_text()
    if series:
        text = text.replace("series: 10000", f"series: {series + 200}").replace("split: [7000, 2000, 1000]", f"split: [{series}, 100, 100]")
    path = folder / "seq2seq_lstm.yaml"
    path.write_text(text)
    return path


def lstm_500x64(folder: Path, series: int) -> Path:
    """LSTM(128) over 500 steps of 64 features in batches of 64, forecasting the next 64 values."""
    series = series or 1024
    rng = np.random.default_rng(0)
    # Twice the training series: a split of halves and quarters is exact in binary fractions.
    np.save(folder / "x.npy", rng.standard_normal((2 * series, 501, 64)).astype("float32"))
    spec = f"""seqspec: 1
name: lstm_500x64
seed: 0
input: {{shape: [500, 64]}}
layers:
  - {{type: lstm, units: 128}}
  - {{type: dense, units: 64}}
train:
  data: {{source: npy, path: x.npy, steps: 500, split: [0.5, 0.25, 0.25], scale: none}}
  target: {{kind: next}}
  loss: mse
  optimizer: {{type: adam, learning_rate: 0.001}}
  batch_size: 64
  epochs: 3
"""
    path = folder / "lstm_500x64.yaml"
    path.write_text(spec)
    return path


def run(spec: Path, backend: str, nproc: int, epochs: int, folder: Path) -> dict:
    out = folder / f"{spec.stem}-{backend}-{nproc}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends"), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cmd = [sys.executable, "-m", "seqspec", "train", str(spec), "--backend", backend, "--nproc", str(nproc), "--epochs", str(epochs), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    m = json.loads((out / "metrics.json").read_text())
    epoch_s = m["epoch_time_s_after_first"]
    return {
        "spec": spec.stem, "backend": backend, "nproc": nproc, "train_series": m["data"]["series"]["train"],
        "batch_size": m["batch_size"], "epoch_time_s": epoch_s,
        "samples_per_s": m["data"]["series"]["train"] / epoch_s, "command": " ".join(cmd[1:]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few series: proves it runs; not a measurement")
    parser.add_argument("--backends", nargs="+", default=["torch", "keras"])
    parser.add_argument("--nproc", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["seq2seq_lstm", "lstm_500x64"], choices=["seq2seq_lstm", "lstm_500x64"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distributed.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        makers = {"seq2seq_lstm": lambda: seq2seq_lstm(folder, 640 if args.quick else 0), "lstm_500x64": lambda: lstm_500x64(folder, 256 if args.quick else 0)}
        specs = [makers[c]() for c in args.cases]
        for spec in specs:
            for backend in args.backends:
                for nproc in args.nproc:
                    row = run(spec, backend, nproc, args.epochs, folder)
                    rows.append(row)
                    print(f"{row['spec']:14} {backend:6} N={nproc}  {row['samples_per_s']:9.1f} samples/s  ({row['epoch_time_s']:.2f} s/epoch, {row['train_series']} series)", flush=True)
    record = {
        "quick": args.quick, "rows": rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
