"""The torch backend's scans against its plain step loop under autograd, same layer, same weights.

    python benchmarks/scan_vs_loop.py                 # book size and [64, 500, 64] x 128 (~3 min)
    python benchmarks/scan_vs_loop.py --no-large

For peephole_lstm, gru (reset_after false) and gru (reset_after true, against nn.GRU): forward
without gradients and forward + backward (gradients of every weight), one intra-op thread,
contenders interleaved (the first one alternating), medians of per-call times (ms) over
--repeats samples. The scan is forced whatever `prefers_scan` would choose: these figures are
what `prefers_scan` (seqspec_torch/_cells.py) was set from.
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


def _always(x) -> bool:
    return True


def use(model, scan: bool) -> None:
    """scan: the scan whatever prefers_scan would choose; else the loop (nn.GRU for `gru`)."""
    for m in model.modules():
        if isinstance(m, _cells.Recurrent):
            m.use_scan = scan
            m.cell.prefers_scan = _always
            m.use_fused = not scan  # for `gru` the other path is nn.GRU itself


def timed(fn, min_sample: float = 0.1) -> float:
    """Seconds a call: back-to-back calls for at least min_sample seconds."""
    t0, n = time.perf_counter(), 0
    while True:
        fn()
        n += 1
        if time.perf_counter() - t0 >= min_sample:
            return (time.perf_counter() - t0) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-large", action="store_true")
    ap.add_argument("--repeats", type=int, default=6)
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
                samples = {False: [], True: []}
                for scan in (False, True):
                    use(model, scan)
                    fn()  # warm-up
                for r in range(args.repeats):
                    for scan in ((False, True) if r % 2 else (True, False)):
                        use(model, scan)
                        samples[scan].append(timed(fn))
                loop, scan = statistics.median(samples[False]) * 1e3, statistics.median(samples[True]) * 1e3
                print(f"| {name} | {list(shape)} | {units} | {mode} | {loop:.3g} | {scan:.3g} | {scan / loop:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
