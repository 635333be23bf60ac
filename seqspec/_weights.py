"""The canonical, backend-neutral weight layout, and seeded initial weights drawn with NumPy.

Every array is named `layers.{i}.{name}` after the layer's position in the spec and follows
the textbook equations (x W, so input kernels are [in_features, units]). docs/weights.md
describes every layer's arrays, which each node class lists (seqspec/_spec.py `arrays`);
`layout(spec)` lists them with their shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from . import _spec as s
from ._rules import GLOROT, ONES, UNIFORM, UNIFORM_LIMIT, ZEROS, Array
from ._shapes import infer

if TYPE_CHECKING:
    import numpy as np


def arrays(spec: s.Spec) -> list[Array]:
    """Every canonical array of the spec, in layer order."""
    return [a for layer in infer(spec).layers for a in layer.arrays]


def layout(spec: s.Spec) -> dict[str, tuple[int, ...]]:
    """Canonical array names and shapes, in layer order."""
    return {a.name: a.shape for a in arrays(spec)}


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = 1
    for d in shape[:-2]:
        receptive *= d
    return shape[-2] * receptive, shape[-1] * receptive


def _glorot(rng: np.random.Generator, shape) -> np.ndarray:
    fan_in, fan_out = _fans(shape)
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return rng.uniform(-limit, limit, size=shape)


def _orthogonal(rng: np.random.Generator, shape) -> np.ndarray:
    import numpy as np

    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    a = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return q.reshape(shape)


def initial_weights(spec: s.Spec, seed: Optional[int] = None, dtype: Optional[str] = None) -> dict[str, np.ndarray]:
    """Initial canonical weights drawn with NumPy as Keras's default initializers would draw them.

    Arrays that Keras draws as one tensor (the gate kernels of a cell) are drawn together and
    split, so their scale matches Keras exactly. Deterministic for a given spec and seed
    (`seed` defaults to the spec's).
    """
    import numpy as np  # imported here: `import seqspec` stays fast for validate

    seed = spec.seed if seed is None else seed
    if seed is None:
        raise ValueError("initial_weights needs a seed: set `seed:` in the spec or pass one")
    rng = np.random.default_rng(seed)
    dtype = dtype or spec.dtype
    out: dict[str, np.ndarray] = {}
    groups: dict[str, np.ndarray] = {}
    for a in arrays(spec):
        if a.init in (ZEROS, ONES):
            value = (np.zeros if a.init == ZEROS else np.ones)(a.shape)
        elif a.init == UNIFORM:
            value = rng.uniform(-UNIFORM_LIMIT, UNIFORM_LIMIT, a.shape)
        else:
            draw = _glorot if a.init == GLOROT else _orthogonal
            if a.group is None:
                value = draw(rng, a.shape)
            else:
                if a.part == 0:
                    groups[a.group] = draw(rng, a.shape[:-1] + (a.shape[-1] * a.parts,))
                width = a.shape[-1]
                value = groups[a.group][..., a.part * width : (a.part + 1) * width]
        out[a.name] = np.ascontiguousarray(value, dtype=dtype)
    return out


# The safetensors dtype codes seqspec reads, and the NumPy names they load as.
_FLOAT_CODES = {"F32": "float32", "F64": "float64"}
_CODE_PREFIXES = {"BF": "bfloat", "F": "float", "C": "complex", "I": "int", "U": "uint"}


def _dtype_word(code: str) -> str:
    """'BF16' -> 'bfloat16', 'F8_E4M3' -> 'float8_e4m3': the name a user knows a dtype by."""
    import re

    m = re.fullmatch(r"(BF|F|C|I|U)(\d\w*)", code)
    return _CODE_PREFIXES[m[1]] + m[2].lower() if m else code.lower()


def _listed(names: list[str], limit: int = 3, sep: str = ", ") -> str:
    shown = sep.join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def check_weights(spec: s.Spec, weights: dict, source: str = "weights") -> None:
    """Raise WeightsError unless `weights` has exactly the spec's canonical arrays with their shapes, all real."""
    import numpy as np

    from ._errors import WeightsError

    want = layout(spec)
    missing = [n for n in want if n not in weights]
    extra = [n for n in weights if n not in want]
    wrong = [f"{n} is {tuple(weights[n].shape)}, the spec needs {want[n]}" for n in want if n in weights and tuple(weights[n].shape) != want[n]]
    # Casting to the spec's float dtype would drop the imaginary part without a word.
    complex_ = [f"{n} ({np.asarray(weights[n]).dtype})" for n in weights if np.iscomplexobj(weights[n])]
    # A file for a large spec lists hundreds of names: the counts and a few of them say enough.
    problems = ([f"missing {_listed(missing)}"] if missing else []) + ([f"unexpected {_listed(extra)}"] if extra else [])
    if wrong:
        problems.append(_listed(wrong, sep="; "))
    if complex_:
        problems.append(f"complex, not real: {_listed(complex_)}")
    if problems:
        raise WeightsError(f"{source}: does not fit spec {spec.name!r}: " + "; ".join(problems))


def save_weights(weights: dict, path: str, spec: Optional[s.Spec] = None) -> None:
    """Write canonical weights to a .safetensors file through seqspec's atomic_write (a failure leaves
    no partial file; the umask is honoured).

    With `spec`, the arrays are checked against its layout first and the spec's name is stored
    in the file's metadata. Arrays must be float32 or float64: the only kinds load_weights reads.
    """
    import numpy as np
    from safetensors.numpy import save_file

    from ._errors import SpecError
    from ._files import atomic_write

    if spec is not None:
        check_weights(spec, weights, source=str(path))
    arrays = {name: np.ascontiguousarray(value) for name, value in weights.items()}
    odd = [f"{name} ({a.dtype})" for name, a in arrays.items() if a.dtype.name not in _FLOAT_CODES.values()]
    if odd:
        raise SpecError(f"{path}: not written: weights are float32 or float64; got {_listed(odd)}")
    metadata = {"format": "seqspec-weights/1", **({"spec": spec.name} if spec else {})}
    atomic_write(str(path), lambda tmp: save_file(arrays, tmp, metadata=metadata), suffix=".safetensors")


def load_weights(path: str, spec: Optional[s.Spec] = None) -> dict:
    """Read canonical weights from a .safetensors file; with `spec`, check names and shapes and
    cast to the spec's dtype. Anything but a regular file of finite float32/float64 arrays is a
    SpecError naming the file, and the array where one is to blame."""
    import errno

    import numpy as np
    from safetensors import SafetensorError, safe_open

    from . import _safeio
    from ._errors import SpecError

    # safetensors maps the file: a folder or a device fails with "No such device", a FIFO blocks.
    try:
        _safeio.check_regular(path)
    except _safeio.Refused as e:
        raise SpecError(f"{path}: no such weights file" if e.errno == errno.ENOENT else f"{path}: {e}") from None
    try:
        with safe_open(path, framework="np") as f:
            names = list(f.keys())
            # NumPy has no bfloat16 or float8 (reading them raises TypeError), and ints or
            # complex numbers are not weights: refuse by the header, before any data is read.
            odd = [f"{n} ({_dtype_word(d)})" for n in names if (d := f.get_slice(n).get_dtype()) not in _FLOAT_CODES]
            if odd:
                raise SpecError(f"{path}: weights are float32 or float64; got {_listed(odd)}")
            weights = {n: f.get_tensor(n) for n in names}
    except (SafetensorError, OSError, ValueError) as e:
        raise SpecError(f"{path}: not a readable .safetensors file ({e})") from None
    if spec is not None:
        check_weights(spec, weights, source=str(path))
    # A NaN loads and compiles silently, then turns every output it touches into NaN.
    bad = [f"{n} ({np.size(v) - np.count_nonzero(np.isfinite(v)):,} of {np.size(v):,})" for n, v in weights.items() if not np.isfinite(v).all()]
    if bad:
        raise SpecError(f"{path}: weights hold NaN or infinity: {_listed(bad)}")
    if spec is not None:
        weights = {name: value.astype(spec.dtype, copy=False) for name, value in weights.items()}
    return weights
