"""How a mask flows through a spec's layers, as Keras 3 passes it: each node class's `mask_rule`, and the check of a whole spec.

A mask is a [batch, time] boolean per step (True: a real step). Keras 3 makes one in
`Masking` (a step whose features all equal mask_value) and in `Embedding(mask_zero=True)`
(token id 0), and hands it from layer to layer (keras/src/layers/layer.py, `_set_mask_metadata`):
a layer whose `compute_mask` is Keras's default passes it on unchanged; one that defines none
(convolutions, pools, flatten, padding, cropping, upsampling) drops it with a warning and then
computes over the masked steps as if they were real, which changes what the model means. seqspec
refuses a spec in which a mask reaches such a layer, with the layer's place in the file.

The rules, one per node class (`mask_rule` in seqspec/_spec.py):

| rule | layers | what it does with a mask |
|---|---|---|
| `makes` | masking, embedding | makes a new one (masking replaces any mask it receives; embedding only with mask_zero) |
| `passes` | dense, time_distributed, activation, dropout, layer_norm | computes each step alone and passes the mask on |
| `reads` | batch_norm | passes it on; in training its batch moments skip masked steps |
| `recurrent` | simple_rnn, lstm, gru, rnn, bidirectional | skips masked steps and carries its state through them; passes the mask on with return_sequences, drops it without |
| `averages` | global_avg_pool1d | averages the unmasked steps only; drops the mask |
| `refuses` | everything else | refused when a mask reaches it |

What a recurrent layer outputs at a masked step (keras/src/backend/tensorflow/rnn.py): with
return_sequences, the output of the last unmasked step before it (zeros before the first one);
inside `bidirectional` (which sets `zero_output_for_mask` when returning sequences), zeros.
Without return_sequences, the output of the last unmasked step (zeros for a row with none).
`go_backwards` reverses the mask with the steps, so the backward pass starts at each row's last
unmasked step. With go_backwards and return_sequences, Keras outputs the steps in reverse order
but passes the mask on unreversed: a later layer that reads it would skip the wrong steps, so
seqspec refuses that combination when a later layer reads the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

MAKES = "makes"
PASSES = "passes"
READS = "reads"
RECURRENT = "recurrent"
AVERAGES = "averages"
REFUSES = "refuses"

# The rules of layers that use the mask they receive (a reversed mask would mislead them).
_READERS = (READS, RECURRENT, AVERAGES)


@dataclass(frozen=True)
class Mask:
    """The mask reaching a layer: the layer that made it, and the go_backwards layer that reversed
    its steps without reversing the mask (None when its steps are in order)."""

    origin: int
    origin_type: str
    reversed_by: Optional[int] = None


@dataclass(frozen=True)
class MaskFlow:
    """Per top-level layer, the mask it receives and the mask it gives (None: no mask)."""

    received: tuple[Optional[Mask], ...]
    given: tuple[Optional[Mask], ...]

    @property
    def any(self) -> bool:
        return any(m is not None for m in self.given + self.received)

    @property
    def at_output(self) -> Optional[Mask]:
        """The mask on the model's output (Keras would weight a training loss by it)."""
        return self.given[-1] if self.given else None


def _makes(node) -> bool:
    # An embedding makes a mask only with mask_zero (Keras's compute_mask returns None otherwise).
    return node.type != "embedding" or node.mask_zero


def mask_flow(layers, error) -> MaskFlow:
    """Follow the mask through `layers` (spec nodes); `error(index, message)` makes the exception
    raised for a layer that cannot take the mask reaching it."""
    received, given = [], []
    mask: Optional[Mask] = None
    for i, node in enumerate(layers):
        rule = node.mask_rule
        received.append(mask)
        if rule == MAKES:
            mask = Mask(i, node.type) if _makes(node) else None
        elif mask is not None:
            made = f"layers[{mask.origin}] ({mask.origin_type})"
            if rule == REFUSES:
                raise error(
                    i,
                    f"{node.type} cannot take the mask that {made} makes: Keras drops a mask here and "
                    f"{node.type} would compute over the masked steps as if they were real; end the masked "
                    "part first (a recurrent layer without return_sequences, or global_avg_pool1d)",
                )
            if rule in _READERS and mask.reversed_by is not None:
                raise error(
                    i,
                    f"{node.type} would read the mask of {made} against steps that layers[{mask.reversed_by}] "
                    "(go_backwards with return_sequences) gives in reverse order: Keras passes the mask on "
                    "unreversed, so masked and real steps would be swapped",
                )
            if rule == RECURRENT:
                if not node.return_sequences:
                    mask = None
                elif node.reversed_output:
                    mask = Mask(mask.origin, mask.origin_type, i)
            elif rule == AVERAGES:
                mask = None
        given.append(mask)
    return MaskFlow(tuple(received), tuple(given))
