"""The GPU comparison of docs/performance.md: seqspec's custom cells against cuDNN, on one CUDA device.

    python benchmarks/bench_gpu.py                       # ~2-4 minutes, compiling included
    python benchmarks/bench_gpu.py --json out.json       # also write the figures as JSON
    python benchmarks/bench_gpu.py --autotune            # + the scans compiled with max-autotune (~2 min a cell more)

For [64, 500, 64] inputs and 128 units (the issue's case) it times, with CUDA events, medians
after warm-up:

- cuDNN: nn.LSTM / nn.GRU of the same size, float32 (TF32 off, the arithmetic seqspec's cells
  do; the TF32 figure is printed beside it);
- seqspec's torch backend, built from a spec, for `peephole_lstm` and `gru` with
  `reset_after: false`, four ways: the plain loop under autograd (what the backend ran before
  _scan existed), the scan with eager elementwise steps, the scan with torch.compile'd steps,
  and the compiled scan under a CUDA graph (torch.cuda.graph for the forward,
  torch.cuda.make_graphed_callables for forward + backward);

forward (no gradients) and forward + backward (loss sum(y * r), gradients of every weight). It
also checks that every fast path computes what the plain loop computes: float32 differences
at full size, and float64 differences on [8, 50, 16] with 16 units.

Needs a CUDA device, torch, pydantic and pyyaml; run from the repository root (it puts
backends/ on the path itself, no install needed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "backends")]

import torch  # noqa: E402

import seqspec  # noqa: E402
from seqspec_torch import _cells, _scan  # noqa: E402
from seqspec_torch import backend as torch_backend  # noqa: E402

CELLS = {
    "peephole_lstm": ({"type": "rnn", "cell": {"type": "peephole_lstm", "units": None}, "return_sequences": True}, torch.nn.LSTM),
    "gru reset_after=false": ({"type": "gru", "units": None, "reset_after": False, "return_sequences": True}, torch.nn.GRU),
}


def build(cell: str, units: int, features: int, dtype: str, device: torch.device):
    layer = json.loads(json.dumps(CELLS[cell][0]))
    (layer.get("cell") or layer)["units"] = units
    doc = {"seqspec": 1, "name": "gpu", "dtype": dtype, "seed": 0, "input": {"shape": [None, features]}, "layers": [layer]}
    return torch_backend.build(seqspec.load(json.dumps(doc))).to(device)


def set_path(model, path: str) -> None:
    """path: 'loop' (autograd over the plain loop), 'eager' (scan), 'compiled' (scan, compiled steps)."""
    _scan.COMPILE_ON_CUDA = path == "compiled"
    for m in model.modules():
        if isinstance(m, _cells.Recurrent):
            m.use_scan = path != "loop"


class _FirstOutput(torch.nn.Module):
    """nn.LSTM / nn.GRU returning only the sequence of outputs."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


def time_ms(fn, reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    if not torch.cuda.is_available():  # --smoke on a CPU: wall time
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps * 1e3
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def forward_fn(model, x):
    def run():
        with torch.no_grad():
            return model(x)

    return run


def train_fn(model, x, r):
    def run():
        for p in model.parameters():
            p.grad = None
        y = model(x)
        (y * r).sum().backward()
        return y

    return run


def graphed_forward(model, x):
    """The whole forward pass replayed from one CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = model(x)
    return graph.replay, out


def graphed_figures(model, x, r, reference, reps: int) -> dict:
    """Forward and forward + backward of the compiled scan, each replayed from CUDA graphs."""
    replay, out = graphed_forward(model, x)
    replay()
    torch.cuda.synchronize()
    forward_diff = max_diff((out, []), (reference[0], []))
    graphed = torch.cuda.make_graphed_callables(model, (x,))

    def graphed_train():
        for p in model.parameters():
            p.grad = None
        y = graphed(x)
        (y * r).sum().backward()
        return y

    y = graphed_train()
    train_diff = max_diff((y.detach(), [p.grad for p in model.parameters()]), reference)
    return {"forward": time_ms(replay, reps), "train": time_ms(graphed_train, reps), "max_rel_diff_vs_loop": max(forward_diff, train_diff)}


def grads(model, x, r):
    y = train_fn(model, x, r)()
    return y.detach().clone(), [p.grad.detach().clone() for p in model.parameters()]


def max_diff(a, b) -> float:
    """The largest difference between two (output, gradients) pairs, relative to the largest
    magnitude of each tensor of b (gradients of weights sum over B * T terms)."""
    ya, ga = a
    yb, gb = b
    return max(float((p - q).abs().max() / q.abs().max().clamp_min(1e-30)) for p, q in zip([ya, *ga], [yb, *gb]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--units", type=int, default=128)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--autotune", action="store_true", help="last, also the graphed scans compiled with mode='max-autotune-no-cudagraphs'")
    ap.add_argument("--smoke", action="store_true", help="no CUDA: run every step but the CUDA graphs on the CPU, tiny sizes")
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch, args.steps, args.features, args.units, args.reps = 4, 12, 3, 5, 2
    elif not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; this comparison needs one (--smoke runs it on the CPU)", file=sys.stderr)
        return 2
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (smoke)"
    print(f"device: {name}, torch {torch.__version__}, "
          f"[{args.batch}, {args.steps}, {args.features}] x {args.units} units, float32", flush=True)
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(args.batch, args.steps, args.features, device=dev, generator=g)
    r = torch.randn(args.batch, args.steps, args.units, device=dev, generator=g)
    results = {"device": name, "torch": torch.__version__, "shape": [args.batch, args.steps, args.features], "units": args.units, "cells": {}}

    for cell, (_, fused_cls) in CELLS.items():
        row = results["cells"][cell] = {}
        fused = fused_cls(args.features, args.units, batch_first=True).to(dev)
        fused_seq = _FirstOutput(fused)
        for tf32 in (False, True):
            torch.backends.cudnn.allow_tf32 = tf32
            key = "cudnn_tf32" if tf32 else "cudnn"
            row[key] = {"forward": time_ms(forward_fn(fused_seq, x), args.reps), "train": time_ms(train_fn(fused_seq, x, r), args.reps)}
        torch.backends.cudnn.allow_tf32 = False

        model = build(cell, args.units, args.features, "float32", dev)
        model.train()  # no dropout in these specs: train mode changes nothing but the path taken
        set_path(model, "loop")
        reference = grads(model, x, r)
        row["loop"] = {"forward": time_ms(forward_fn(model, x), 3, 1), "train": time_ms(train_fn(model, x, r), 3, 1)}
        for path in ("eager", "compiled"):
            set_path(model, path)
            t0 = time.perf_counter()
            diff = max_diff(grads(model, x, r), reference)
            with torch.no_grad():
                model(x)
            first = time.perf_counter() - t0
            row[path] = {"forward": time_ms(forward_fn(model, x), args.reps), "train": time_ms(train_fn(model, x, r), args.reps),
                         "max_rel_diff_vs_loop": diff, "first_call_s": round(first, 1)}
            print(f"{cell}: {path} done ({first:.1f} s first call, max rel diff vs loop {diff:.2e})", flush=True)

        # The compiled scan under CUDA graphs.
        set_path(model, "compiled")
        if dev.type != "cuda":
            row["graphed"] = dict(row["compiled"])
        else:
            row["graphed"] = graphed_figures(model, x, r, reference, args.reps)
        # float64: the fast paths against the loop on a small case, where rounding cannot hide a mistake.
        small = build(cell, 16, 16, "float64", dev)
        small.train()
        xs = torch.randn(8, 50, 16, device=dev, dtype=torch.float64, generator=g)
        rs = torch.randn(8, 50, 16, device=dev, dtype=torch.float64, generator=g)
        set_path(small, "loop")
        ref64 = grads(small, xs, rs)
        row["float64_max_rel_diff_vs_loop"] = {}
        for path in ("eager", "compiled"):
            set_path(small, path)
            row["float64_max_rel_diff_vs_loop"][path] = max_diff(grads(small, xs, rs), ref64)

        base = row["cudnn"]
        for path in ("loop", "eager", "compiled", "graphed"):
            row[path]["forward_x_cudnn"] = round(row[path]["forward"] / base["forward"], 2)
            row[path]["train_x_cudnn"] = round(row[path]["train"] / base["train"], 2)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    paths = ["loop", "eager", "compiled", "graphed"]
    if args.autotune and dev.type == "cuda":
        paths.append("graphed_autotune")
        _scan.COMPILE_MODE = "max-autotune-no-cudagraphs"
        for cell, row in results["cells"].items():
            t0 = time.perf_counter()
            model = build(cell, args.units, args.features, "float32", dev)
            model.train()
            set_path(model, "loop")
            reference = grads(model, x, r)
            set_path(model, "compiled")
            _scan.COMPILE_MODE = "max-autotune-no-cudagraphs"
            grads(model, x, r)
            with torch.no_grad():
                model(x)
            row["graphed_autotune"] = graphed_figures(model, x, r, reference, args.reps)
            row["graphed_autotune"]["first_call_s"] = round(time.perf_counter() - t0, 1)
            for k in ("forward", "train"):
                row["graphed_autotune"][f"{k}_x_cudnn"] = round(row["graphed_autotune"][k] / row["cudnn"][k], 2)
            print(f"{cell}: graphed_autotune done ({row['graphed_autotune']['first_call_s']} s): {row['graphed_autotune']}", flush=True)
            if args.json:  # autotuning takes minutes: keep what is done
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
        _scan.COMPILE_MODE = None

    print()
    print("| cell | path | forward ms | x cuDNN | forward + backward ms | x cuDNN |")
    print("|---|---|---:|---:|---:|---:|")
    for cell, row in results["cells"].items():
        for key in ("cudnn", "cudnn_tf32"):
            print(f"| {cell} | {key} ({'nn.LSTM' if 'lstm' in cell else 'nn.GRU'}) | {row[key]['forward']:.2f} | | {row[key]['train']:.2f} | |")
        for path in paths:
            v = row[path]
            print(f"| {cell} | {path} | {v['forward']:.2f} | {v['forward_x_cudnn']} | {v['train']:.2f} | {v['train_x_cudnn']} |")
        print(f"| {cell} | float64 max rel diff vs loop | {row['float64_max_rel_diff_vs_loop']} | | | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
