"""Run a torch-export artifact (.pt2) on the arrays of an .npz with torch alone: python -I _run_torch_export.py MODEL.pt2 IN.npz OUT.npz [MODEL IN OUT ...].

Standalone: it imports nothing of seqspec, and refuses to (an import blocker goes on sys.meta_path
first), so a run proves that the artifact needs no seqspec. Reads "x0", "x1", ... and writes
"y0", "y1", ...; an error is one line on stderr and exit status 1.
"""

import os
import sys


class _NoSeqspec:
    """A meta-path finder that refuses seqspec and every seqspec_* package."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        top = name.partition(".")[0]
        if top == "seqspec" or top.startswith("seqspec_"):
            raise ImportError(f"{name} imported while running an exported artifact, which must not need seqspec")
        return None


sys.meta_path.insert(0, _NoSeqspec())


def main(argv):
    if not argv or len(argv) % 3:
        raise ValueError("usage: _run_torch_export.py MODEL.pt2 INPUTS.npz OUTPUTS.npz [MODEL.pt2 INPUTS.npz OUTPUTS.npz ...]")
    for k in range(0, len(argv), 3):  # several artifacts share one start of torch
        run(*argv[k : k + 3])


def run(model_path, inputs_path, outputs_path):
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{model_path}: no such file")
    import numpy as np
    import logging

    import torch

    logging.getLogger("torch").setLevel(logging.ERROR)  # torch.export.load warns on stderr, which is for errors here
    program = torch.export.load(model_path)
    module = program.module()
    outputs = {}
    with np.load(inputs_path) as inputs, torch.no_grad():
        for i in range(len(inputs.files)):
            x = torch.from_numpy(np.ascontiguousarray(inputs[f"x{i}"]))
            outputs[f"y{i}"] = module(x).numpy()
    np.savez(outputs_path, **outputs)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Exception as e:  # one line, whatever failed: the caller reports it
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"{type(e).__name__}: {first}", file=sys.stderr)
        sys.exit(1)
