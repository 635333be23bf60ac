"""The ONNX target of `seqspec export`: a spec and its canonical weights written as an ONNX model with onnx.helper.

Not through torch.onnx or tf2onnx: seqspec knows each layer's mathematics (both GRU forms,
peepholes, TensorFlow's padding) and writes ONNX's own RNN, LSTM and GRU ops with the right
gate orders and attributes. The artifact runs in onnxruntime (float32) or onnx's reference
evaluator (float64, which onnxruntime's LSTM and GRU lack), with no seqspec installed.
"""

from __future__ import annotations

from pathlib import Path

from ._builders import BUILDERS, ONNX_GRU_GATES, ONNX_LSTM_GATES, ONNX_PEEPHOLES, Site
from ._export import export_artifact, needs_fixed_shape, to_onnx
from ._graph import OPSET

# Run as [sys.executable, "-I", RUNNER, ARTIFACT, INPUTS.npz, OUTPUTS.npz]: no seqspec in that process.
RUNNER: Path = Path(__file__).with_name("_run_onnx.py")

__all__ = [
    "BUILDERS",
    "ONNX_GRU_GATES",
    "ONNX_LSTM_GATES",
    "ONNX_PEEPHOLES",
    "OPSET",
    "RUNNER",
    "Site",
    "export_artifact",
    "needs_fixed_shape",
    "to_onnx",
]
