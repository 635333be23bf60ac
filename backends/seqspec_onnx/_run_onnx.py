"""Run an ONNX artifact with its own runtime only, in a process where seqspec cannot be imported.

    python -I _run_onnx.py MODEL.onnx INPUTS.npz OUTPUTS.npz

Reads x0, x1, ... from INPUTS.npz and writes y0, y1, ... to OUTPUTS.npz. float32 inputs run in
onnxruntime; float64 inputs in onnx's reference evaluator (onnxruntime has no float64 LSTM or
GRU). An error is one line on stderr and exit status 1.
"""

import importlib.abc
import sys


class _NoSeqspec(importlib.abc.MetaPathFinder):
    """Refuses seqspec and its backends: the run proves the artifact needs none of them."""

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top == "seqspec" or top.startswith("seqspec_"):
            raise ImportError(f"{name} is blocked: an exported artifact must run without seqspec")
        return None


sys.meta_path.insert(0, _NoSeqspec())


def _run(model_path: str, inputs_path: str, outputs_path: str) -> None:
    import numpy as np

    with np.load(inputs_path) as data:
        xs = [data[f"x{k}"] for k in range(len(data.files))]
    if any(x.dtype == np.float64 for x in xs):
        from onnx.reference import ReferenceEvaluator

        session = ReferenceEvaluator(model_path)
        name = session.input_names[0]

        def run(x):
            return session.run(None, {name: x})[0]

    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x):
            return session.run(None, {name: x})[0]

    np.savez(outputs_path, **{f"y{k}": np.asarray(run(x)) for k, x in enumerate(xs)})


def main(argv) -> int:
    if len(argv) != 4:
        sys.stderr.write("usage: _run_onnx.py MODEL.onnx INPUTS.npz OUTPUTS.npz\n")
        return 1
    try:
        _run(*argv[1:])
    except Exception as e:  # one line for the caller, whatever the runtime raised
        first = (str(e).strip().splitlines() or [""])[0]
        sys.stderr.write(f"{argv[1]}: {type(e).__name__}: {first}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
