"""Shape inference without a framework: every layer's shapes, parameter counts and time mapping, from its node's rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import _spec as s
from ._masks import MaskFlow, mask_flow
from ._rules import Array, Shape, ShapeError, TimeMap, TimeOp, Window, chain_formula, chain_length, format_shape

__all__ = ["LayerInfo", "ModelInfo", "ShapeError", "TimeMap", "Window", "format_shape", "infer"]


@dataclass(frozen=True)
class LayerInfo:
    """What the core knows of one layer without building it: shapes, canonical arrays and time mapping."""

    index: int
    type: str
    input_shape: Shape
    output_shape: Shape
    arrays: tuple[Array, ...] = ()
    time_ops: tuple[TimeOp, ...] = ()  # the ops along time (windows, pads, upsampling), in order
    time_map: Optional[TimeMap] = None  # None: the layer removes or replaces the time axis

    @property
    def trainable_params(self) -> int:
        return sum(a.size for a in self.arrays if a.trainable)

    @property
    def non_trainable_params(self) -> int:
        return sum(a.size for a in self.arrays if not a.trainable)

    @property
    def params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    def length_formula(self) -> str:
        """Its output length as a formula in its input length T."""
        return chain_formula(self.time_ops)


@dataclass(frozen=True)
class ModelInfo:
    """Shapes, parameter counts and the time mapping of a whole spec."""

    input_shape: Shape
    layers: tuple[LayerInfo, ...]
    time_map: Optional[TimeMap]
    time_ops: tuple[TimeOp, ...] = field(default=())  # every op along time from the input to the output
    masks: Optional[MaskFlow] = None  # the mask each layer receives and gives (seqspec/_masks.py)

    @property
    def output_shape(self) -> Shape:
        return self.layers[-1].output_shape

    @property
    def trainable_params(self) -> int:
        return sum(layer.trainable_params for layer in self.layers)

    @property
    def non_trainable_params(self) -> int:
        return sum(layer.non_trainable_params for layer in self.layers)

    @property
    def params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    def output_length(self, t: int) -> Optional[int]:
        """Output time length for input length t (None when the output has no time axis)."""
        return None if self.time_map is None else chain_length(self.time_ops, t)

    def length_formula(self) -> Optional[str]:
        return None if self.time_map is None else chain_formula(self.time_ops)


def infer(spec: s.Spec) -> ModelInfo:
    """Every layer's input and output shape, canonical arrays and time mapping.

    Raises ShapeError naming the first layer whose input shape it cannot take.
    """
    shape: Shape = (None, *spec.input.shape)
    tokens = spec.input.tokens
    if shape[-1] is None and not tokens:
        raise ShapeError(None, "the number of features must be fixed, got null")
    _check_tokens(spec)
    infos = []
    tmap: Optional[TimeMap] = TimeMap() if len(shape) == 3 or tokens else None
    chain: list[TimeOp] = []
    for index, layer in enumerate(spec.layers):
        try:
            out = layer.output_shape(index, shape)
        except ShapeError as e:
            before = spec.layers[index - 1] if index else None
            if len(shape) == 2 and isinstance(before, (s.SimpleRNN, s.LSTM, s.GRU, s.RNN)) and not before.return_sequences:
                raise ShapeError(e.index, f"{e.message}: layers[{index - 1}] ({before.type}) returns only its last step; set return_sequences: true on it") from None
            raise
        arrays = tuple(layer.arrays(f"layers.{index}.", shape))
        ops = tuple(layer.time_ops(shape))
        layer_map = layer.time_map(shape, out)
        infos.append(LayerInfo(index, layer.type, shape, out, arrays, ops, layer_map))
        # A layer that drops the time axis ends the alignment for good: a time axis that
        # repeat_vector makes later has no relation to the input's steps.
        if layer_map is None:
            tmap, chain = None, []
        elif tmap is not None:
            tmap = tmap.then(layer_map)
            chain.extend(ops)
        shape = out
    masks = mask_flow(spec.layers, ShapeError)
    return ModelInfo((None, *spec.input.shape), tuple(infos), tmap, tuple(chain), masks)


def _check_tokens(spec: s.Spec) -> None:
    """An integer input is token ids for an embedding first; an embedding takes nothing else."""
    first = spec.layers[0]
    if spec.input.tokens and not isinstance(first, s.Embedding):
        raise ShapeError(0, f"an integer input ({spec.input.dtype}) is token ids: the first layer must be an embedding, got {first.type}")
    for index, layer in enumerate(spec.layers):
        if isinstance(layer, s.Embedding) and not spec.input.tokens:
            raise ShapeError(index, "embedding takes integer token ids: set input.dtype to int32 or int64, with input.shape [time_steps]")
