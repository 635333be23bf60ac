"""What a node type's rules are written in: shapes, canonical arrays, and the ops that move steps along time.

Every spec node class (seqspec/_spec.py) states its own output shape, its canonical arrays and
its ops along time with these; shape inference, parameter counts, the weight layout and the
training targets' alignment are all derived from them, so that each fact about a node type is
written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Union

Shape = tuple  # (None, time|None, features) or (None, features); batch is always None


class ShapeError(ValueError):
    """A layer that cannot take the shape its predecessor gives it.

    `index` is the layer's position in `layers`, or None for a problem with the whole spec.
    """

    def __init__(self, index: Optional[int], message: str):
        super().__init__(message)
        self.index = index
        self.message = message


def format_shape(shape: Shape) -> str:
    """`[batch, 50, 20]`, with `null` for an unknown length."""
    return "[" + ", ".join("batch" if i == 0 else ("null" if d is None else str(d)) for i, d in enumerate(shape)) + "]"


def need_sequence(index: int, node, shape: Shape, what: str = "as input") -> None:
    """ShapeError unless `shape` is a sequence [batch, time, features]."""
    if len(shape) != 3:
        raise ShapeError(index, f"{node.type} needs a sequence [batch, time, features] {what}, got {format_shape(shape)}")


# --- canonical arrays -------------------------------------------------------------------------

# How each array is initialised, as Keras does by default: kernels glorot_uniform, recurrent
# kernels orthogonal, biases zeros (the LSTM forget bias ones with unit_forget_bias),
# normalisation gains ones and shifts zeros, batch-norm moving variance ones, embeddings uniform.
GLOROT, ORTHOGONAL, ZEROS, ONES = "glorot_uniform", "orthogonal", "zeros", "ones"
# Keras's Embedding table: RandomUniform(-0.05, 0.05).
UNIFORM = "uniform"
UNIFORM_LIMIT = 0.05


class Array:
    """One canonical array: its name, shape, whether it trains, and how Keras would draw it.

    `group` names the arrays that Keras draws as one tensor (an LSTM's four gate kernels are one
    [in, 4*units] glorot draw); `part` is this array's slice along the group's last axis.
    """

    __slots__ = ("name", "shape", "init", "trainable", "group", "part", "parts")

    def __init__(self, name, shape, init, trainable=True, group=None, part=0, parts=1):
        self.name, self.shape, self.init, self.trainable = name, tuple(shape), init, trainable
        self.group, self.part, self.parts = group, part, parts

    @property
    def size(self) -> int:
        return math.prod(self.shape)


# --- time -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """Output step j sees input steps floor((a*j + last - width) / d) .. floor((a*j + last) / d).

    `width` None: every earlier step (a recurrent layer); `last` None: it depends on the input
    length ('same' padding with a stride and an unknown length).
    """

    a: int = 1
    last: Optional[int] = 0
    width: Optional[int] = 0
    d: int = 1

    def lo(self, j: Optional[int]) -> Optional[int]:
        if j is None or self.last is None or self.width is None:
            return None
        return (self.a * j + self.last - self.width) // self.d

    def hi(self, j: Optional[int]) -> Optional[int]:
        return None if j is None or self.last is None else (self.a * j + self.last) // self.d

    def then(self, later: "_Part") -> Optional["_Part"]:
        """This part followed by `later` as one part, when the two compose exactly (else None)."""
        if later.d == 1:  # floor((a1 (a2 j + b2) + b1) / d1)
            scale, d = self.a, self.d
        elif self.a == 1:  # floor((floor((a2 j + b2) / d2) + b1) / d1) = floor((a2 j + b2 + b1 d2) / (d1 d2))
            scale, d = 1, self.d * later.d
        else:
            return None  # a stride before an upsampling: kept as two parts
        inner = later.d if later.d > 1 else 1
        last = None if self.last is None or later.last is None else scale * later.last + self.last * inner
        width = None if self.width is None or later.width is None else scale * later.width + self.width * inner
        return _Part(self.a * later.a if later.d == 1 else later.a, last, width, d)


@dataclass(frozen=True)
class TimeMap:
    """How output step j of a layer (or a stack) relates to its input steps.

    Output step j sees input steps first_input_step(j) .. last_input_step(j) (steps before 0 are
    padding); the forecast of step j is aligned to last_input_step(j). For a plain stack of
    convolutions that is stride * j + first .. stride * j + last; upsampling makes the stride a
    fraction. `receptive_field` is None when a recurrent layer lets every step see all earlier
    ones; `last` is None when it depends on the input length ('same' padding with a stride > 1
    and an unknown length).
    """

    parts: tuple[_Part, ...] = (_Part(),)

    @classmethod
    def affine(cls, stride: int = 1, last: Optional[int] = 0, receptive_field: Optional[int] = 1) -> "TimeMap":
        """Output step j sees the `receptive_field` input steps up to stride * j + last."""
        return cls((_Part(stride, last, None if receptive_field is None else receptive_field - 1, 1),))

    @classmethod
    def recurrent(cls) -> "TimeMap":
        """Step j sees every input step up to j."""
        return cls((_Part(1, 0, None, 1),))

    @classmethod
    def whole(cls, t: Optional[int]) -> "TimeMap":
        """Every step sees every input step, up to the last (t - 1; None for an unknown length)."""
        return cls((_Part(0, None if t is None else t - 1, None, 1),))

    @classmethod
    def upsampling(cls, size: int) -> "TimeMap":
        """Step j repeats input step floor(j / size)."""
        return cls((_Part(1, 0, 0, size),))

    def then(self, later: "TimeMap") -> "TimeMap":
        """The map of this layer followed by `later`."""
        parts = list(self.parts)
        for part in later.parts:
            merged = parts[-1].then(part) if parts else None
            if merged is None:
                parts.append(part)
            else:
                parts[-1] = merged
        return TimeMap(tuple(parts))

    def last_input_step(self, j: int) -> Optional[int]:
        """The last input step that output step j sees: the step its forecast is aligned to."""
        for part in reversed(self.parts):
            j = part.hi(j)
        return j

    def first_input_step(self, j: int) -> Optional[int]:
        """The first input step that output step j sees (None: every earlier step)."""
        for part in reversed(self.parts):
            j = part.lo(j)
        return j

    @property
    def stride(self) -> Union[int, Fraction]:
        """Input steps per output step (a fraction after upsampling)."""
        s = Fraction(1)
        for part in self.parts:
            s *= Fraction(part.a, part.d)
        return int(s) if s.denominator == 1 else s

    @property
    def last(self) -> Optional[int]:
        return self.last_input_step(0)

    @property
    def first(self) -> Optional[int]:
        """The first input step that output step 0 sees (negative: padding)."""
        return self.first_input_step(0)

    @property
    def receptive_field(self) -> Optional[int]:
        """The most input steps one output step sees (None: all earlier steps, or unknown)."""
        if any(p.width is None for p in self.parts):
            return None
        if len(self.parts) == 1 and self.parts[0].d == 1:
            return self.parts[0].width + 1
        if any(p.last is None for p in self.parts):
            return None
        # The map repeats (shifted) with a period of the product of the parts' a and d.
        period = math.prod(p.a * p.d for p in self.parts)
        return max(self.last_input_step(j) - self.first_input_step(j) + 1 for j in range(min(period, 4096)))

    def unaligned_steps(self) -> Optional[int]:
        """How many leading output steps see no past or present input step (left zero padding)."""
        n = 0
        while True:
            last = self.last_input_step(n)
            if last is None:
                return None
            if last >= 0:
                return n
            n += 1

    @property
    def whole_sequence(self) -> bool:
        """Whether every output step sees the whole input (a bidirectional layer)."""
        return any(p.a == 0 for p in self.parts)

    def sees(self) -> str:
        """'2*j .. 2*j + 3': the input steps that output step j sees, in words for the summary."""
        if self.whole_sequence:
            return "every step (a bidirectional layer reads the whole sequence)"
        if any(p.last is None for p in self.parts):
            return "steps that depend on T ('same' padding with a stride)"
        hi = lo = "j"
        for p in reversed(self.parts):
            hi = _affine(p.a, p.last, p.d, hi)
            lo = None if lo is None or p.width is None else _affine(p.a, p.last - p.width, p.d, lo)
        return f"steps up to {hi}" if lo is None else f"{lo} .. {hi}"


def _affine(a: int, b: int, d: int = 1, j: str = "j") -> str:
    """floor((a*j + b) / d) written simply; `j` may be an expression itself."""
    j = j if a == 1 else (f"{a}*{j}" if j == "j" or j.startswith("floor(") else f"{a}*({j})")
    text = j if b == 0 else f"{j} {'+' if b > 0 else '-'} {abs(b)}"
    if d == 1:
        return text
    return f"floor({text} / {d})" if b == 0 else f"floor(({text}) / {d})"


def compose_formula(formula: str, inner: str) -> str:
    """A length formula in T applied to the length `inner` (itself a formula in T)."""
    return formula if inner == "T" else formula.replace("T", f"({inner})")


@dataclass(frozen=True)
class Window:
    """One sliding-window op along time: a convolution, a pooling, or a pad or crop (kernel 1).

    `padding` is 'valid', 'same' or 'causal', or explicit (left, right) steps: zeros added at
    each end, or, negative, steps dropped (cropping).
    """

    kernel: int
    stride: int
    dilation: int
    padding: Union[str, tuple[int, int]]

    @property
    def span(self) -> int:
        return (self.kernel - 1) * self.dilation + 1

    def length(self, t: int) -> int:
        """Output length for input length t (Keras/TensorFlow rules)."""
        if self.padding == "same":
            return -(-t // self.stride)
        if self.padding == "causal":
            return (t - 1) // self.stride + 1  # left pad (span - 1)
        left, right = self.pads(t)
        t = t + left + right
        return (t - self.span) // self.stride + 1 if t >= self.span else 0

    def pads(self, t: int) -> tuple[int, int]:
        """(left, right) padding for input length t; 'same' puts the odd extra pad on the right."""
        if isinstance(self.padding, tuple):
            return self.padding
        if self.padding == "valid":
            return (0, 0)
        if self.padding == "causal":
            return (self.span - 1, 0)
        total = max((self.length(t) - 1) * self.stride + self.span - t, 0)
        return (total // 2, total - total // 2)

    def length_formula(self) -> str:
        if isinstance(self.padding, tuple):
            extra = sum(self.padding) - (self.span - 1)
            if self.stride == 1:
                return "T" if extra == 0 else f"T {'+' if extra > 0 else '-'} {abs(extra)}"
            return f"floor((T + {extra + self.span - 1} - {self.span}) / {self.stride}) + 1"
        if self.padding == "valid":
            if self.stride == 1:
                return f"T - {self.span - 1}" if self.span > 1 else "T"
            return f"floor((T - {self.span}) / {self.stride}) + 1"
        if self.stride == 1:
            return "T"
        return f"ceil(T / {self.stride})" if self.padding == "same" else f"floor((T - 1) / {self.stride}) + 1"

    def time_map(self, t: Optional[int]) -> TimeMap:
        if isinstance(self.padding, tuple) or self.padding in ("valid", "causal") or self.stride == 1:
            left: Optional[int] = self.pads(self.span)[0]
        else:
            left = None if t is None else self.pads(t)[0]
        return TimeMap.affine(self.stride, None if left is None else self.span - 1 - left, self.span)


@dataclass(frozen=True)
class Upsampling:
    """Every step repeated `size` times along time."""

    size: int

    def length(self, t: int) -> int:
        return t * self.size

    def length_formula(self) -> str:
        return f"{self.size} * T"

    def time_map(self, t: Optional[int]) -> TimeMap:
        return TimeMap.upsampling(self.size)


TimeOp = Union[Window, Upsampling]


def chain_length(ops, t: int) -> int:
    """The length after `ops` of an input of length t."""
    for op in ops:
        t = op.length(t)
    return t


def chain_formula(ops) -> str:
    """The length after `ops` as a formula in the input length T."""
    formula = "T"
    for op in ops:
        formula = compose_formula(op.length_formula(), formula)
    return formula
