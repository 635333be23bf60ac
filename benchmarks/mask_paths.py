"""Times the torch backend's two paths for masked recurrent layers: compaction (each row's real
steps first, then the fused kernel or scan) against the general masked step loop.

    PYTHONPATH=.:backends python benchmarks/mask_paths.py [--batch 32] [--steps 100] [--units 32] [--repeats 5]
"""

import argparse
import json
import time

import numpy as np
import torch

import seqspec
from seqspec._inputs import ANYWHERE, END_PADDING, draw_inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    backend = seqspec.get_backend("torch")
    for cell in ("lstm", "gru"):
        doc = {"seqspec": 1, "name": "b", "seed": 0, "input": {"shape": [None, 8]},
               "layers": [{"type": "masking"}, {"type": cell, "units": args.units}]}
        spec = seqspec.load(json.dumps(doc))
        model = backend.build(spec)
        recurrent = model.layers[1]
        for pattern in (END_PADDING, ANYWHERE):
            x = torch.from_numpy(draw_inputs(spec, np.random.default_rng(0), args.batch, args.steps, pattern))
            for mode in ("inference", "training step"):
                times = {}
                for compaction in (True, False):
                    recurrent.use_compaction = compaction
                    best = float("inf")
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        if mode == "inference":
                            with torch.inference_mode():
                                model(x)
                        else:
                            model(x).sum().backward()
                        best = min(best, time.perf_counter() - start)
                    times[compaction] = best
                print(f"{cell:4} {pattern:15} {mode:13} compaction {times[True] * 1e3:8.1f} ms  masked loop {times[False] * 1e3:8.1f} ms  ratio {times[False] / times[True]:5.1f}x")


if __name__ == "__main__":
    main()
