"""`seqspec check`: prove that the Keras and PyTorch models of a spec compute the same function."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ._backend import Backend, get_backend
from ._inputs import draw_inputs, mask_patterns
from ._loader import LONGEST_CHECK_LENGTH, LONGEST_CHECK_LENGTH_WAVENET
from ._shapes import ShapeError, infer
from ._spec import Spec
from ._weights import arrays, initial_weights

TOLERANCE = {"float32": 1e-5, "float64": 1e-9}
LENGTHS = (1, 7, LONGEST_CHECK_LENGTH)
BATCH_SIZES = (1, 3)
MASKED_BATCH = 6


DIRECTIONS = ("keras_to_torch", "torch_to_keras")


def direction_label(direction: str) -> str:
    """'keras_to_torch' -> 'keras->torch', as reports and test ids name a direction."""
    return direction.replace("_to_", "->")


@dataclass
class CheckResult:
    """The outcome of one spec's equivalence check (its `as_json()` is the --json object).

    `directions` are the directions checked; `failed[direction]` lists the failures that belong
    to it: its own outputs and weight round trip, and what concerns both models (parameter
    counts, training mode, and the gradients, compared once with the weights the last direction
    moved), so each direction's verdict is whole on its own. `fraction_of_tolerance[direction]`
    is the largest difference over the tolerance of its case (the tolerance scales with the
    output's size): 1 or more fails; `seconds[direction]` is the time it took.
    """

    spec: str
    name: str
    dtype: str
    params: dict[str, int]
    tolerance: float
    directions: tuple[str, ...] = DIRECTIONS
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    fraction_of_tolerance: dict[str, float] = field(default_factory=dict)
    grad_max_abs_diff: Optional[float] = None
    grad_fraction_of_tolerance: Optional[float] = None
    first_divergent_layer: Optional[dict[str, Any]] = None
    failures: list[str] = field(default_factory=list)
    failed: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cases: list[tuple[int, Optional[int]]] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)  # export target -> seqspec._export.TargetResult

    def __post_init__(self):
        for d in self.directions:
            self.max_abs_diff.setdefault(d, 0.0)
            self.fraction_of_tolerance.setdefault(d, 0.0)
            self.failed.setdefault(d, [])
            self.seconds.setdefault(d, 0.0)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, message: str, direction: Optional[str] = None) -> None:
        """Record a failure of `direction`, or of every direction checked when None."""
        self.failures.append(message)
        for d in self.directions if direction is None else (direction,):
            self.failed[d].append(message)

    def as_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "name": self.name,
            "params": self.params,
            "dtype": self.dtype,
            "max_abs_diff": self.max_abs_diff,
            "fraction_of_tolerance": self.fraction_of_tolerance,
            "grad_max_abs_diff": self.grad_max_abs_diff,
            "grad_fraction_of_tolerance": self.grad_fraction_of_tolerance,
            "tolerance": self.tolerance,
            "first_divergent_layer": self.first_divergent_layer,
            "ok": self.ok,
            "failures": self.failures,
            **({"targets": {name: t.as_json() for name, t in self.targets.items()}} if self.targets else {}),
            "failed": self.failed,
            "seconds": {d: round(t, 3) for d, t in self.seconds.items()},
        }


def random_weights(spec: Spec, seed: int) -> dict[str, np.ndarray]:
    """Canonical weights that exercise every array: Keras's initial weights, each perturbed by 10%
    of its own spread (constant arrays, biases and gains, by 0.1), and batch-norm statistics away
    from 0 and 1, so a mapping that drops or swaps an array shows.

    The perturbation keeps each array at Keras's scale: much larger recurrent kernels make some
    cells (ln_simple_rnn) chaotic over hundreds of steps, where float32 rounding alone, in either
    framework, grows past any tolerance.
    """
    rng = np.random.default_rng(seed)
    base = initial_weights(spec, seed=seed, dtype="float64")
    out = {}
    for a in arrays(spec):
        value = base[a.name]
        if a.name.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, size=a.shape)
        else:
            spread = float(value.std()) if value.size > 1 and value.std() > 0 else 1.0
            value = value + 0.1 * spread * rng.standard_normal(a.shape)
        out[a.name] = value.astype(spec.dtype)
    return out


def input_lengths(spec: Spec) -> list[Optional[int]]:
    """Sequence lengths to feed: 1 (or the shortest the model accepts), a short one and a long one."""
    if len(spec.input.shape) == 1 and not spec.input.tokens:
        return [None]
    if spec.input.shape[0] is not None:
        return [spec.input.shape[0]]
    # WaveNets exist for long receptive fields: feed them 2,000 steps.
    lengths = LENGTHS[:-1] + (LONGEST_CHECK_LENGTH_WAVENET,) if any(layer.type == "wavenet" for layer in spec.layers) else LENGTHS
    ok = [t for t in lengths if _accepts(spec, t)]
    if 1 not in ok:
        ok = sorted({next(t for t in range(1, 10_000) if _accepts(spec, t)), *ok})
    return ok


def _accepts(spec: Spec, t: int) -> bool:
    fixed = spec.model_copy(update={"input": spec.input.model_copy(update={"shape": [t] + spec.input.shape[1:]})})
    try:
        info = infer(fixed)
    except ShapeError:
        return False
    return all(d is None or d >= 1 for li in info.layers for d in li.output_shape[1:])


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _limit(tol: float, *values: np.ndarray) -> float:
    scale = max([1.0] + [float(np.max(np.abs(v))) for v in values if v.size])
    return tol * scale


def _first_divergent(spec: Spec, keras: Backend, km: Any, torch: Backend, tm: Any, x: np.ndarray, tol: float):
    k_outs, t_outs = keras.layer_outputs(km, x), torch.layer_outputs(tm, x)
    for i, (a, b) in enumerate(zip(k_outs, t_outs)):
        d = _diff(a, b)
        if d > _limit(tol, a):
            return {"index": i, "type": spec.layers[i].type, "where": spec.where("layers", i), "max_abs_diff": d}
    return None


def check(
    spec: Spec,
    *,
    dtype: Optional[str] = None,
    path: str = "",
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
    targets: Sequence[str] = (),
    directions: Sequence[str] = DIRECTIONS,
    models: Optional[tuple[Any, Any]] = None,
) -> CheckResult:
    """Build `spec` in both backends, move weights each way, compare outputs (and in float64 the
    gradients of sum(output * r) with respect to inputs and every weight).

    `targets` (export target names, seqspec._export.TARGETS): each artifact, exported with the
    models' weights and run in a fresh process, is compared with both backends as well.

    `directions` picks "keras_to_torch", "torch_to_keras" or both; each draws its own weights
    and inputs from `seed`, so a direction checked alone gives the numbers it gives in a full
    check. `models`, if given, is a (keras model, torch module) pair built from `spec` (in its
    dtype) to reuse: every direction sets all their weights before it compares.
    `progress`, if given, is called with a line before each step (a long input runs for minutes).
    """
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown or not directions:
        raise ValueError(f"directions must be some of {DIRECTIONS}; received {tuple(directions)!r}")
    if dtype is not None and dtype != spec.dtype:
        spec = _with_dtype(spec, dtype)
    say = progress or (lambda message: None)
    say(f"checking {spec.name}: building both models")
    keras, torch = get_backend("keras"), get_backend("torch")
    info = infer(spec)
    tol = TOLERANCE[spec.dtype]
    km, tm = models if models is not None else (keras.build(spec), torch.build(spec))
    k_params, t_params = keras.count_params(km), torch.count_params(tm)
    result = CheckResult(
        spec=path or spec.name,
        name=spec.name,
        dtype=spec.dtype,
        params={"core": info.params, "keras": sum(k_params), "torch": sum(t_params)},
        tolerance=tol,
        directions=tuple(d for d in DIRECTIONS if d in directions),
    )
    core = (info.trainable_params, info.non_trainable_params)
    for name, counted in (("keras", k_params), ("torch", t_params)):
        if counted != core:
            result.fail(f"{name} counts {counted[0]:,} trainable + {counted[1]:,} non-trainable parameters, the core {core[0]:,} + {core[1]:,}")

    lengths = input_lengths(spec)
    ends = {"keras_to_torch": (keras, km, torch, tm), "torch_to_keras": (torch, tm, keras, km)}
    for direction in result.directions:
        started = time.perf_counter()
        k = DIRECTIONS.index(direction)
        src, src_model, dst, dst_model = ends[direction]
        rng = np.random.default_rng([seed, k])
        weights = random_weights(spec, seed + k + 1)
        src.set_weights(src_model, spec, weights)
        exported = src.get_weights(src_model, spec)
        for name, value in weights.items():
            if _diff(exported[name], value) != 0.0:
                result.fail(f"{src.name}: weight {name} does not survive set_weights/get_weights", direction)
        dst.set_weights(dst_model, spec, exported)
        for t in lengths:
            for b, pattern in _batches(spec):
                steps = "no time axis" if t is None else f"{t:,} steps"
                masked = f", {pattern}" if pattern else ""
                say(f"checking {spec.name}: {direction_label(direction)}, {spec.dtype}, batch {b}, {steps}{masked} ...")
                x = draw_inputs(spec, rng, b, t, pattern)
                a, c = src.predict(src_model, x), dst.predict(dst_model, x)
                d, limit = _diff(a, c), _limit(tol, a)
                result.max_abs_diff[direction] = max(result.max_abs_diff[direction], d)
                result.fraction_of_tolerance[direction] = max(result.fraction_of_tolerance[direction], d / limit)
                result.cases.append((b, t))
                if d > limit:
                    result.fail(f"{direction}: outputs differ by {d:.3g} at batch {b}, length {t}{masked} (tolerance {limit:.3g})", direction)
                    if result.first_divergent_layer is None:
                        result.first_divergent_layer = _first_divergent(spec, keras, km, torch, tm, x, tol)
                        if result.first_divergent_layer is not None:
                            result.first_divergent_layer["direction"] = direction
                    break
        result.seconds[direction] += time.perf_counter() - started

    if targets:
        from ._export import check_targets

        predict = {"keras": lambda x: keras.predict(km, x), "torch": lambda x: torch.predict(tm, x)}
        result.targets = check_targets(spec, targets, torch.get_weights(tm, spec), predict, input_lengths(spec), _batches(spec), tol, seed, say)
        result.failures += [f for t in result.targets.values() for f in t.failures]

    last = result.directions[-1]
    started = time.perf_counter()
    rng = np.random.default_rng([seed, len(DIRECTIONS)])
    if spec.dtype == "float64":
        say(f"checking {spec.name}: gradients ...")
        result.grad_max_abs_diff, result.grad_fraction_of_tolerance = _check_gradients(spec, keras, km, torch, tm, rng, tol, result)

    # Training mode, where some layer computes another function in it (dropout, batch statistics):
    # elsewhere it is inference again, compared above, and tracing it costs Keras ~0.4 s a model.
    for t in lengths[-1:] if any(layer.trains_differently for layer in spec.layers) else ():
        say(f"checking {spec.name}: training mode ...")
        x = draw_inputs(spec, rng, 2, t, mask_patterns(spec)[-1])
        ks, ts = keras.training_output(km, x, seed).shape, torch.training_output(tm, x, seed).shape
        if ks != ts:
            result.fail(f"training mode: keras gives shape {ks}, torch {ts}")
    result.seconds[last] += time.perf_counter() - started
    return result


def _check_gradients(spec, keras, km, torch, tm, rng, tol, result) -> tuple[float, float]:
    """The largest gradient difference, and the largest over its tolerance; failures to `result`."""
    worst = fraction = 0.0
    lengths = input_lengths(spec)
    t = lengths[min(1, len(lengths) - 1)]
    # Masked anywhere (when the spec has a mask): a gradient through a carried state shows there.
    x = draw_inputs(spec, rng, 3, t, mask_patterns(spec)[-1])
    y = keras.predict(km, x)
    r = rng.standard_normal(y.shape)
    ky, kx, kw = keras.gradients(km, spec, x, r)
    ty, tx, tw = torch.gradients(tm, spec, x, r)
    pairs = [("output", ky, ty)] + ([] if spec.input.tokens else [("d/dx", kx, tx)])  # token ids have no gradient
    trainable = [a.name for a in arrays(spec) if a.trainable]
    for name in trainable:
        if name not in kw or name not in tw:
            result.fail(f"gradient of {name} missing from {'keras' if name not in kw else 'torch'}")
            continue
        pairs.append((f"d/d {name}", kw[name], tw[name]))
    for label, a, b in pairs:
        d = _diff(a, b)
        limit = _limit(tol, a)
        worst, fraction = max(worst, d), max(fraction, d / limit)
        if d > limit:
            result.fail(f"gradients: {label} differs by {d:.3g} (tolerance {limit:.3g})")
    return worst, fraction


def _batches(spec: Spec) -> list[tuple[int, Optional[str]]]:
    """(batch size, mask pattern) of each case: BATCH_SIZES unmasked; for a spec whose first layer
    makes a mask, 6 rows (whole, one step, none, random lengths) padded at the end and masked anywhere."""
    patterns = mask_patterns(spec)
    if patterns == (None,):
        return [(b, None) for b in BATCH_SIZES]
    return [(1, None)] + [(MASKED_BATCH, p) for p in patterns]


def _with_dtype(spec: Spec, dtype: str) -> Spec:
    copy = spec.model_copy(update={"dtype": dtype})
    copy._source = spec._source
    return copy
