"""Every example spec x every artifact target (torch-export, saved-model, litert): export, run through the target's RUNNER
in a fresh process, compare with both backends at batch 1 and 3 and the lengths seqspec check uses.

    PYTHONPATH=.:backends python benchmarks/export_matrix.py [--targets torch-export,saved-model,litert] [SPEC ...]

Prints one line per spec x target: the largest difference from either backend, or the one-line reason it failed.
"""

import argparse
import glob
import importlib
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

import seqspec
from seqspec._check import BATCH_SIZES, TOLERANCE, input_lengths, random_weights

MODULES = {"torch-export": "seqspec_torch._torch_export", "saved-model": "seqspec_keras._saved_model", "litert": "seqspec_keras._litert"}


def cases(spec):
    for t in input_lengths(spec):
        for b in BATCH_SIZES:
            yield (b,) + ((t,) if t is not None else ()) + (spec.input.shape[-1],)


def run(mod, artifact, xs, tmp):
    np.savez(tmp / "in.npz", **{f"x{i}": x for i, x in enumerate(xs)})
    r = subprocess.run([sys.executable, "-I", str(mod.RUNNER), str(artifact), str(tmp / "in.npz"), str(tmp / "out.npz")], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr.strip().splitlines()[-1])
    with np.load(tmp / "out.npz") as out:
        return [out[f"y{i}"] for i in range(len(xs))]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--targets", default=",".join(MODULES))
    p.add_argument("--dtype", default="float32")
    p.add_argument("specs", nargs="*")
    a = p.parse_args()
    backends = [seqspec.get_backend(n) for n in ("keras", "torch")]
    for target in a.targets.split(","):
        mod = importlib.import_module(MODULES[target])
        for path in a.specs or sorted(glob.glob("specs/*.yaml")):
            spec = seqspec.load(path)
            weights = random_weights(spec, 1)
            rng = np.random.default_rng(0)
            shapes = list(cases(spec))
            xs = [rng.standard_normal(s).astype(a.dtype) for s in shapes]
            start = time.time()
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    tmp = pathlib.Path(tmp)
                    fixed = mod.needs_fixed_shape(spec, a.dtype)
                    ys = []
                    if fixed is None:
                        mod.export_artifact(spec, weights, tmp / ("m" + mod.SUFFIX), a.dtype)
                        ys = run(mod, tmp / ("m" + mod.SUFFIX), xs, tmp)
                    else:
                        for k, x in enumerate(xs):
                            art = tmp / (f"m{k}" + mod.SUFFIX)
                            mod.export_artifact(spec, weights, art, a.dtype, x.shape)
                            ys += run(mod, art, [x], tmp)
                spec_d = spec if a.dtype == spec.dtype else seqspec.load(path).model_copy(update={"dtype": a.dtype})
                worst, ok = 0.0, True
                for be in backends:
                    m = be.build(spec_d, {n: w.astype(a.dtype) for n, w in weights.items()})
                    for x, y in zip(xs, ys):
                        ref = be.predict(m, x)
                        d = float(np.max(np.abs(ref.astype(np.float64) - y))) if ref.shape == y.shape else float("inf")
                        worst = max(worst, d)
                        ok &= d <= TOLERANCE[a.dtype] * max(1.0, float(np.max(np.abs(ref))))
                how = "fixed per case" if fixed else "dynamic"
                print(f"{target}\t{path}\t{'agrees' if ok else 'DIFFERS'}\tmax diff {worst:.3g}\t{how}\t{time.time() - start:.0f} s", flush=True)
            except Exception as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                print(f"{target}\t{path}\tFAILS\t{first}\t\t{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
