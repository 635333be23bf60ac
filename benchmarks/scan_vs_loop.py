"""The torch backend's scans against its plain step loop under autograd, same layer, same weights.

    python benchmarks/scan_vs_loop.py                 # book size and [64, 500, 64] x 128 (~3 min)
    python benchmarks/scan_vs_loop.py --no-large

For peephole_lstm, gru (reset_after false) and gru (reset_after true, against nn.GRU): forward
without gradients and forward + backward (gradients of every weight), one intra-op thread,
contenders interleaved, medians of per-call times (ms). The loop at [64, 500, 64] x 128 takes
tens of seconds a training step, so it is timed once there (--loop-large to skip it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import seqspec
from seqspec_torch import _cells

LAYERS = {
    "peephole_lstm": lambda u: {"type": "rnn", "cell": {"type": "peephole_lstm", "units": u}, "return_sequences": True},
    "gru reset_after=false": lambda u: {"type": "gru", "units": u, "reset_after": False, "return_sequences": True},
    "gru": lambda u: {"type": "gru", "units": u, "return_sequences": True},
}


def build(layer: dict, features: int):
    doc = {"seqspec": 1, "name": "scan", "seed": 0, "input": {"shape": [None, features]}, "layers": [layer]}
    return seqspec.get_backend("torch").build(seqspec.load(json.dumps(doc)))


def use(model, scan: bool) -> None:
    for m in model.modules():
        if isinstance(m, _cells.Recurrent):
            m.use_scan = scan
            m.use_fused = not scan  # "loop" for nn.GRU's own path is nn.GRU itself


def timed(fn, repeats: int, min_sample: float = 0.1) -> float:
    t0, n = time.perf_counter(), 0
    while True:
        fn()
        n += 1
        if time.perf_counter() - t0 >= min_sample or repeats == 0:
            return (time.perf_counter() - t0) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-large", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sizes = [((32, 50, 1), 20)] + ([] if args.no_large else [((64, 500, 64), 128)])
    print("| layer | input | units | mode | loop (or nn.GRU) ms | scan ms | scan / loop |")
    print("|---|---|---:|---|---:|---:|---:|")
    for shape, units in sizes:
        x = torch.randn(*shape)
        for name, layer in LAYERS.items():
            model = build(layer(units), shape[2])

            def forward():
                with torch.no_grad():
                    model(x)

            def train():
                model.zero_grad(set_to_none=True)
                model(x).square().mean().backward()

            for mode, fn in (("forward", forward), ("train", train)):
                slow_loop = units == 128 and mode == "train" and name != "gru"
                samples = {False: [], True: []}
                for scan in (False, True):
                    use(model, scan)
                    fn()  # warm-up
                for _ in range(1 if slow_loop else args.repeats):
                    for scan in (False, True):
                        use(model, scan)
                        samples[scan].append(timed(fn, 0 if (slow_loop and not scan) else 1))
                loop, scan = statistics.median(samples[False]) * 1e3, statistics.median(samples[True]) * 1e3
                print(f"| {name} | {list(shape)} | {units} | {mode} | {loop:.3g} | {scan:.3g} | {scan / loop:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
