"""The inputs `seqspec check` feeds: random values, token ids, and masked rows of random lengths when the spec's first layer makes a mask."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ._masks import AVERAGES
from ._shapes import infer
from ._spec import Embedding, Masking, Spec

# How the masked steps of a batch are laid out: at the end of each row (padding), or anywhere.
END_PADDING, ANYWHERE = "end padding", "masked anywhere"


def batch_shape(spec: Spec, batch: int, steps: Optional[int]) -> tuple:
    """The shape of a batch: [batch, steps] of token ids, [batch, steps, features] or [batch, features]."""
    if spec.input.tokens:
        return (batch, steps)
    return (batch,) + (() if steps is None else (steps,)) + (spec.input.shape[-1],)


def mask_patterns(spec: Spec) -> tuple[Optional[str], ...]:
    """The layouts of masked steps to feed: both when the first layer makes a mask from the input
    (masking, or embedding with mask_zero); (None,) otherwise, where no input can choose the mask."""
    first = spec.layers[0]
    if isinstance(first, Masking) or (isinstance(first, Embedding) and first.mask_zero):
        return (END_PADDING, ANYWHERE)
    return (None,)


def _keeps_empty_rows(spec: Spec) -> bool:
    # Keras's masked global average of a row with no real step is 0 / 0: NaN, compared with nothing.
    info = infer(spec)
    return not any(node.mask_rule == AVERAGES and info.masks.received[i] is not None for i, node in enumerate(spec.layers))


def row_masks(rng: np.random.Generator, batch: int, steps: int, pattern: str, empty_rows: bool = True) -> np.ndarray:
    """[batch, steps] booleans (True: a real step). Row 0 is whole, row 1 one real step, row 2 none
    (when `empty_rows`), the others of random lengths; ANYWHERE scatters each row's real steps
    (row 1's single step at a random place), END_PADDING puts them first."""
    lengths = rng.integers(0 if empty_rows else 1, steps + 1, size=batch)
    fixed = [steps, 1] + ([0] if empty_rows else [])
    lengths[: min(batch, len(fixed))] = fixed[:batch]
    mask = np.zeros((batch, steps), dtype=bool)
    for row, n in enumerate(lengths):
        where = np.sort(rng.choice(steps, size=n, replace=False)) if pattern == ANYWHERE else np.arange(n)
        mask[row, where] = True
    return mask


def draw_inputs(spec: Spec, rng: np.random.Generator, batch: int, steps: Optional[int], pattern: Optional[str] = None) -> np.ndarray:
    """A batch for `spec`: standard normal values in its dtype, or token ids (0 reserved for
    padding with mask_zero); with a mask `pattern`, the masked steps set to what makes the mask
    (masking's mask_value in every feature, token 0)."""
    shape = batch_shape(spec, batch, steps)
    first = spec.layers[0]
    if spec.input.tokens:
        low = 1 if first.mask_zero else 0
        x = rng.integers(low, first.input_dim, size=shape).astype(spec.input.dtype)
    else:
        x = rng.standard_normal(shape).astype(spec.dtype)
    if pattern is None or steps is None:
        return x
    mask = row_masks(rng, batch, steps, pattern, empty_rows=_keeps_empty_rows(spec))
    x[~mask] = 0 if spec.input.tokens else first.mask_value
    return x
