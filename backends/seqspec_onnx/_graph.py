"""A small writer of ONNX graphs over onnx.helper: named constants in the model's dtype, one call per node."""

from __future__ import annotations

import itertools
from typing import Optional, Sequence, Union

import numpy as np
from onnx import TensorProto, helper, numpy_helper

# The opset every artifact is written in: recent, and run in full by onnxruntime 1.32 and by
# onnx's reference evaluator (the float64 runtime). Pad, ReduceMean and Unsqueeze take their
# axes as inputs since opset 18; Scan, Conv and the recurrent ops are stable since opset 14.
OPSET = 21
# The IR version of opset 21 (onnx 1.16); newer IR versions would refuse older runtimes for nothing.
IR_VERSION = 10

ONNX_DTYPES = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "int32": TensorProto.INT32, "int64": TensorProto.INT64}
INT64_MAX, INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


class Graph:
    """The nodes and initializers of one graph (the model's, or a Scan body), in `dtype`.

    `scope` prefixes the names of what the builders add, so that a node's name says which spec
    layer it belongs to (`layers.2/gru`); names are unique across a model and its bodies.
    """

    def __init__(self, dtype: str, counter: Optional[itertools.count] = None, scope: str = ""):
        self.dtype = dtype
        self.np_dtype = np.dtype(dtype)
        self.elem_type = ONNX_DTYPES[dtype]
        self.nodes: list = []
        self.initializers: list = []
        self.counter = counter if counter is not None else itertools.count()
        self.scope = scope

    def body(self) -> "Graph":
        """An empty graph for a Scan body, sharing this graph's names."""
        return Graph(self.dtype, self.counter, self.scope)

    def name(self, hint: str) -> str:
        return f"{self.scope}/{hint}_{next(self.counter)}" if self.scope else f"{hint}_{next(self.counter)}"

    def const(self, value, hint: str = "c", dtype=None) -> str:
        """An initializer holding `value` (cast to the graph's float dtype unless `dtype` is given)."""
        array = np.asarray(value, dtype=dtype or self.np_dtype)
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, values: Union[int, Sequence[int]], hint: str = "i") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, dtype=np.int64)

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs) -> Union[str, list[str]]:
        """Add one node; returns its output name (a list when `outputs` > 1)."""
        names = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.name(op_type), **attrs))
        return names[0] if outputs == 1 else names

    # --- small compositions the builders share --------------------------------------------

    def matmul_add(self, x: str, kernel: np.ndarray, bias: Optional[np.ndarray], hint: str = "kernel") -> str:
        y = self.op("MatMul", [x, self.const(kernel, hint)])
        return y if bias is None else self.op("Add", [y, self.const(bias, "bias")])

    def dim(self, x: str, axis: int) -> str:
        """The size of `x` along `axis`, as an int64 tensor of shape [1]."""
        return self.op("Shape", [x], start=axis, end=axis + 1)

    def zeros_like_rows(self, x: str, units: int) -> str:
        """Zeros [batch, units] for a [batch, ...] input: a recurrent layer's first state."""
        shape = self.op("Concat", [self.dim(x, 0), self.ints([units])], axis=0)
        return self.op("ConstantOfShape", [shape], value=numpy_helper.from_array(np.zeros(1, self.np_dtype)))

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.op("Transpose", [x], perm=list(perm))

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        return self.op("Slice", [x, self.ints([start]), self.ints([end]), self.ints([axis])])

    def squeeze(self, x: str, axis: int) -> str:
        return self.op("Squeeze", [x, self.ints([axis])])

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", [x, self.ints([axis])])


def value_info(name: str, dtype: str, shape: Sequence[Union[int, str, None]]):
    """A graph input or output of `shape`; a str dimension is symbolic (`batch`, `time`)."""
    return helper.make_tensor_value_info(name, ONNX_DTYPES[dtype], list(shape))
