"""Inference speed of exported artifacts against the torch backend, same process, as ratios.

    PYTHONPATH=.:backends python benchmarks/bench_export.py                    # specs/ and the large LSTM
    PYTHONPATH=.:backends python benchmarks/bench_export.py --cases seq2seq_lstm,large_lstm --repeats 7 --json out.json

Contenders per case, each run on the same input in one process, with --threads intra-op threads:
- torch: seqspec's torch model (seqspec.build(spec, "torch")), forward under torch.inference_mode;
- onnx: the ONNX artifact (seqspec.export --to onnx) in an onnxruntime InferenceSession, default
  (full) graph optimisation;
- torch-export: the torch.export program (seqspec.export --to torch-export, loaded with
  torch.export.load), when that target is installed; otherwise the column says so.

Cases: every spec in specs/ on [32, 50, features] ([32, T] for a fixed length, [32, features] for
a vector input), and `large_lstm`, LSTM(128) on [64, 500, 64]. After --warmup untimed calls, each
sample times enough back-to-back calls to last >= --min-sample s; contenders alternate sample by
sample. Reported: each contender's median time per call, and the median over repeats of the
ratio of each artifact's sample to torch's sample taken beside it (below 1: the artifact is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH, STEPS = 32, 50
LARGE_LSTM = {
    "seqspec": 1,
    "name": "large_lstm",
    "seed": 0,
    "input": {"shape": [None, 64]},
    "layers": [{"type": "lstm", "units": 128, "return_sequences": True}],
}


def _sample(fn, min_s: float) -> float:
    """Seconds per call of fn, over enough calls to last >= min_s."""
    n, total = 0, 0.0
    start = time.perf_counter()
    while total < min_s:
        fn()
        n += 1
        total = time.perf_counter() - start
    return total / n


def _cases(names):
    import seqspec

    specs = {p.stem: (seqspec.load(str(p)), None) for p in sorted((ROOT / "specs").glob("*.yaml"))}
    specs["large_lstm"] = (seqspec.load(json.dumps(LARGE_LSTM)), (64, 500, 64))
    return {k: v for k, v in specs.items() if not names or k in names}


def _input(spec, shape):
    import numpy as np

    if shape is None:
        dims = spec.input.shape
        shape = (BATCH, dims[0]) if len(dims) == 1 else (BATCH, dims[0] or STEPS, dims[1])
    return np.random.default_rng(0).standard_normal(shape).astype(spec.dtype)


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="", help="comma-separated case names (default all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-sample", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime as ort
    import torch

    import seqspec
    from seqspec._export import load_target

    torch.set_num_threads(args.threads)
    try:
        load_target("torch-export")
        have_pt2 = True
    except seqspec.SpecError as e:
        have_pt2, why = False, str(e)
        print(f"torch-export: {why}")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    names = [c for c in args.cases.split(",") if c]
    for name, (spec, shape) in _cases(names).items():
        x = _input(spec, shape)
        model = seqspec.build(spec, "torch")
        xt = torch.from_numpy(x)

        def run_torch():
            with torch.inference_mode():
                model(xt)

        seqspec.export(spec, "onnx", work / f"{name}.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(work / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        contenders = {"torch": run_torch, "onnx": lambda: session.run(None, {"x": x})}
        with torch.inference_mode():
            want = model(xt).numpy()
        diffs = {"onnx": float(np.max(np.abs(session.run(None, {"x": x})[0] - want)))}
        if have_pt2:
            from seqspec_torch._torch_export import needs_fixed_shape

            # A stride or upsampling: the program is exported at the benchmark's own input shape.
            fixed = tuple(x.shape) if needs_fixed_shape(spec, spec.dtype) else None
            seqspec.export(spec, "torch-export", work / f"{name}.pt2", shape=fixed)
            program = torch.export.load(str(work / f"{name}.pt2")).module()

            def run_pt2():
                with torch.inference_mode():
                    program(xt)

            contenders["torch-export"] = run_pt2
            with torch.inference_mode():
                diffs["torch-export"] = float(np.max(np.abs(program(xt).numpy() - want)))
        for fn in contenders.values():
            for _ in range(args.warmup):
                fn()
        samples = {k: [] for k in contenders}
        order = list(contenders)
        for r in range(args.repeats):
            for k in order[r % len(order):] + order[: r % len(order)]:
                samples[k].append(_sample(contenders[k], args.min_sample))
        row = {
            "case": name,
            "input": list(x.shape),
            "ms": {k: statistics.median(v) * 1e3 for k, v in samples.items()},
            "ratio_to_torch": {k: statistics.median(a / b for a, b in zip(samples[k], samples["torch"])) for k in contenders if k != "torch"},
            "max_abs_diff": diffs,
        }
        rows.append(row)
        ratios = ", ".join(f"{k} x{v:.2f}" for k, v in row["ratio_to_torch"].items())
        times = ", ".join(f"{k} {v:.3f} ms" for k, v in row["ms"].items())
        print(f"{name} {row['input']}: {times}; vs torch: {ratios}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
