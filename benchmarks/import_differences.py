"""The import proof's largest differences for the tests' models (tests/test_import_*.py), at lengths 1, 7, 50 (fixed-length models: their length);
the torch.export programs of tests/test_import_torch.py's PROGRAMS at the batches and lengths each takes.

Run: PYTHONPATH=.:backends python benchmarks/import_differences.py
"""
import os, sys
os.environ['TF_CPP_MIN_LOG_LEVEL']='3'; os.environ['KERAS_BACKEND']='tensorflow'
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests'))
import numpy as np, seqspec, keras
import test_import_keras as tk, test_import_torch as tt
import tempfile
from seqspec._import import proof_shapes, read, to_spec
def show(label, src, shape=None, lengths=None):
    imp = read(src, shape); spec, _ = to_spec(imp)
    batches, lengths = proof_shapes(spec, imp, lengths)
    r = seqspec.prove_import(spec, imp.weights, imp.run, lengths, exact=imp.exact, batches=batches)
    d = "; ".join(f"{dt}: keras {v['keras']:.2e}, torch {v['torch']:.2e}" for dt, v in r.max_abs_diff.items())
    print(f"{label:28s} ok={r.ok} {d}", flush=True)
rng = np.random.default_rng(7)
for name, (layers, _) in tk._textbook().items():
    m = keras.Sequential(layers, name=f"book_{name}")
    m.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") if "variance" not in v.path else rng.uniform(0.5, 2, w.shape).astype("float32") for w, v in zip(m.get_weights(), m.weights)])
    show("keras " + name, m, None, None if name == "linear" else ([4, 7, 50] if name == "conv_gru" else [1, 7, 50]))
for name, (make, shape, lengths, _) in tt.MODULES.items():
    show("torch " + name, tt._trained(make), shape, None if shape[0] is not None or (len(shape) == 1 and name != 'token_lstm') else ([12, 31, 50] if name == "conv_classifier" else [9, 50] if name == "conv_gru" else [1, 7, 50]))
with tempfile.TemporaryDirectory() as tmp:
    for name, (make, example, dynamic) in tt.PROGRAMS.items():
        path = tt._program(os.path.join(tmp, name + ".pt2"), tt._trained(make), example, tt._dynamic(*dynamic) if dynamic else None)
        show("pt2 " + name, path)
