"""A whole spec as one ONNX model: its input, every layer through BUILDERS, its output; checked by onnx.checker."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import onnx
from onnx import helper

import seqspec as s

from ._builders import BACKEND_NAME, Site, build, mask_of
from ._graph import IR_VERSION, ONNX_DTYPES, OPSET, Graph, value_info

INPUT, OUTPUT = "x", "y"


def _dims(shape: tuple, fixed: Optional[tuple], names: tuple[str, str]) -> list:
    """[batch, (time,) features] for value_info: ints where known, symbols (`batch`, `time`) where free."""
    if fixed is not None:
        return list(fixed)
    return [names[0]] + [names[1] if d is None else d for d in shape[1:]]


def to_onnx(spec: s.Spec, weights: dict, dtype: Optional[str] = None, shape: Optional[tuple] = None) -> tuple[onnx.ModelProto, list[str]]:
    """The ONNX model of `spec` with canonical `weights`, in `dtype` (the spec's by default), and the
    notes on how it was written. `shape` fixes the input (batch, time, features); None leaves
    batch and time free. BackendError (located at the layer) for a spec it cannot write."""
    dtype = dtype or spec.dtype
    info = s.infer(spec)
    g = Graph(dtype)
    notes: list[str] = []
    x = INPUT
    in_shape = (None, *spec.input.shape)
    shape_in = in_shape
    mask = None  # the [batch, time] bool tensor of the mask between layers, as Keras hands it on (seqspec/_masks.py)
    for i, (node, li) in enumerate(zip(spec.layers, info.layers)):
        g.scope = f"layers.{i}"
        site = Site(BACKEND_NAME, spec, ("layers", i), shape_in, prefix=f"layers.{i}.", model_dtype=dtype, weights=weights, notes=notes, mask=mask)
        x_in, x = x, build(node, site, g, x)
        if node.mask_rule == s.MAKES:
            mask = mask_of(node, site, g, x_in)
        elif info.masks.given[i] is None:
            mask = None
        shape_in = li.output_shape
    g.scope = ""
    g.nodes.append(helper.make_node("Identity", [x], [OUTPUT], name="output"))
    out_fixed = None
    if shape is not None and len(info.output_shape) == 3:
        out_fixed = (shape[0], info.output_length(shape[1]), info.output_shape[2])
    elif shape is not None:
        out_fixed = (shape[0], info.output_shape[1])
    graph = helper.make_graph(
        g.nodes,
        spec.name,
        [helper.make_tensor_value_info(INPUT, ONNX_DTYPES[spec.input.dtype or dtype], _dims(in_shape, shape, ("batch", "time")))],
        [value_info(OUTPUT, dtype, _dims(info.output_shape, out_fixed, ("batch", "time_out")))],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="seqspec", producer_version=s.__version__)
    model.ir_version = IR_VERSION
    model.doc_string = spec.description or spec.name
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise s.BackendError(f"{spec.where()}: the onnx target wrote a model onnx.checker refuses: {first}") from None
    axes = f"[batch, time] {spec.input.dtype} token ids" if spec.input.tokens else "[batch, time, features]" if len(in_shape) == 3 else "[batch, features]"
    return model, [f"onnx: opset {OPSET}, {dtype}, input {axes if shape is None else list(shape)}"] + notes


def export_artifact(spec: s.Spec, weights: dict, path: Path, dtype: str, shape: Optional[tuple] = None) -> list[str]:
    """Write the ONNX model of `spec` at `path` (the interface of `seqspec export` targets, docs/export.md); returns its notes."""
    weights = {k: np.asarray(v, dtype=dtype) for k, v in weights.items()}
    model, notes = to_onnx(spec, weights, dtype, shape)
    onnx.save_model(model, str(path))
    return notes


def needs_fixed_shape(spec: s.Spec, dtype: str) -> Optional[str]:
    """None: an ONNX artifact takes any batch and any time length (symbolic dims)."""
    return None
