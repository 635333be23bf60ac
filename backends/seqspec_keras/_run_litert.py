"""Run a .tflite export on the arrays of an .npz with LiteRT alone: python -I _run_litert.py MODEL.tflite IN.npz OUT.npz [MODEL IN OUT ...].

Standalone: it imports nothing of seqspec, and refuses to (an import blocker goes on sys.meta_path
first), nor TensorFlow: ai_edge_litert's interpreter runs the model. Reads "x0", "x1", ... and
writes "y0", "y1", ...; an input whose shape differs from the model's resizes the input (a model
converted at a fixed shape may refuse it). An error is one line on stderr and exit status 1.
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
        raise ValueError("usage: _run_litert.py MODEL.tflite INPUTS.npz OUTPUTS.npz [MODEL.tflite INPUTS.npz OUTPUTS.npz ...]")
    for k in range(0, len(argv), 3):  # several artifacts share one process
        run(*argv[k : k + 3])


def run(model_path, inputs_path, outputs_path):
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{model_path}: no such file")
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model_path)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs = {}
    with np.load(inputs_path) as inputs:
        for i in range(len(inputs.files)):
            x = inputs[f"x{i}"]
            if tuple(interpreter.get_input_details()[0]["shape"]) != x.shape:
                interpreter.resize_tensor_input(inp["index"], list(x.shape))
                interpreter.allocate_tensors()
            interpreter.set_tensor(inp["index"], x.astype(inp["dtype"], copy=False))
            # The fused LSTM op keeps its h and c in variable tensors that persist between
            # invocations: each batch is a new sequence, from zero states, as in Keras.
            interpreter.reset_all_variables()
            interpreter.invoke()
            outputs[f"y{i}"] = interpreter.get_tensor(out["index"]).copy()
    np.savez(outputs_path, **outputs)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Exception as e:  # one line, whatever failed: the caller reports it
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"{type(e).__name__}: {first}", file=sys.stderr)
        sys.exit(1)
