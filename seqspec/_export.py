"""`seqspec export`: artifacts of a spec that run without seqspec (ONNX, torch.export, SavedModel, LiteRT),
written atomically, and `check --targets`, which runs each in a fresh process and compares it with both backends.

Each target is a module of a backend package, imported only when asked for, that defines

    export_artifact(spec, weights, path, dtype, shape=None) -> list[str]   # writes `path`, returns notes
    needs_fixed_shape(spec, dtype) -> str | None                          # why it needs a fixed input, or None
    RUNNER: pathlib.Path                                                  # a standalone script that runs one

The core imports no framework: numpy and the targets are imported inside the functions.
"""

from __future__ import annotations

import difflib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from ._errors import BackendError, BackendUnavailable, SpecError
from ._spec import Spec

if TYPE_CHECKING:
    import numpy as np

# Each target: (its module, the suffix of what it writes; "" for a folder).
TARGETS: dict[str, tuple[str, str]] = {
    "onnx": ("seqspec_onnx", ".onnx"),
    "torch-export": ("seqspec_torch._torch_export", ".pt2"),
    "saved-model": ("seqspec_keras._saved_model", ""),
    "litert": ("seqspec_keras._litert", ".tflite"),
}
# The pip extra that installs what each target needs.
EXTRAS = {"onnx": "onnx", "torch-export": "torch", "saved-model": "keras", "litert": "litert"}
DTYPES = ("float32", "float64")
# How long one artifact's run may take before check calls it hung (the float64 reference
# evaluator runs a 500-step Scan in Python).
RUN_TIMEOUT_S = 1800

_loaded: dict[str, ModuleType] = {}


def target_names(text: str) -> list[str]:
    """'onnx,litert' -> ['onnx', 'litert']; BackendError for an unknown name (the closest suggested)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BackendError("--targets: name at least one target (known: " + ", ".join(TARGETS) + ")")
    for name in names:
        _known(name)
    return list(dict.fromkeys(names))


def _known(name: str) -> None:
    if name not in TARGETS:
        close = difflib.get_close_matches(name, list(TARGETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise BackendError(f"unknown export target {name!r}{hint} (known: {', '.join(TARGETS)})")


def load_target(name: str) -> ModuleType:
    """The module of target `name`, imported on first use; BackendUnavailable (naming the pip
    extra) when it or a package it needs is not installed."""
    _known(name)
    if name in _loaded:
        return _loaded[name]
    module, _ = TARGETS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        missing = getattr(e, "name", None) or module
        raise BackendUnavailable(f"the {name} target needs {missing}, which is not installed: pip install 'seqspec[{EXTRAS[name]}]'") from None
    for attr in ("export_artifact", "needs_fixed_shape", "RUNNER"):
        if not hasattr(mod, attr):
            raise BackendError(f"the {name} target's module {module} defines no {attr}")
    _loaded[name] = mod
    return mod


def _with_dtype(spec: Spec, dtype: str) -> Spec:
    copy = spec.model_copy(update={"dtype": dtype})
    copy._source = spec._source
    return copy


def resolve_weights(spec: Spec, weights: Union[None, dict, str, os.PathLike]) -> dict:
    """Canonical weights in spec.dtype: a dict (checked), a .safetensors file, or the spec's seeded ones."""
    import numpy as np

    from ._weights import check_weights, initial_weights, load_weights

    if weights is None:
        if spec.seed is None:
            raise SpecError(f"{spec.where()}: the spec has no seed: give weights (--weights W.safetensors) or set `seed:`")
        return initial_weights(spec)
    if isinstance(weights, (str, os.PathLike)):
        return load_weights(os.fspath(weights), spec)
    check_weights(spec, weights)
    return {name: np.asarray(value, dtype=spec.dtype) for name, value in weights.items()}


def output_path(spec: Spec, to: str, path: Union[None, str, os.PathLike]) -> Path:
    """Where `export` writes: `path`, or NAME + the target's suffix; SpecError for one it must not write."""
    _known(to)
    suffix = TARGETS[to][1]
    out = Path(f"{spec.name}{suffix}" if path is None or os.fspath(path) == "" else os.fspath(path))
    if suffix:
        if out.is_dir():
            raise SpecError(f"{out}: is a folder; name the output file *{suffix}")
        if out.suffix != suffix:
            raise SpecError(f"{out}: the {to} target writes {suffix} files; name the output *{suffix}")
    elif out.exists() or out.is_symlink():
        raise SpecError(f"{out}: already exists; the {to} target writes a new folder (remove it or name another)")
    return out


def _fsync_tree(path: Path) -> None:
    for p in [path] if path.is_file() else sorted(q for q in path.rglob("*") if q.is_file()):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(out: Path, write: Callable[[Path], Any]) -> Any:
    """Call write(tmp) on a path that does not exist yet, inside a temporary folder beside `out`,
    then rename it to `out`: a failure, or Ctrl-C, leaves nothing behind and no old file clobbered."""
    from ._files import TMP_MARK, _fsync_dir, _remove_stale

    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}{TMP_MARK}"
    _remove_stale(out.parent, prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    try:
        tmp = folder / out.name
        result = write(tmp)
        if not tmp.exists():
            raise BackendError(f"{out}: the export wrote nothing")
        _fsync_tree(tmp)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _fsync_dir(out.parent)
    return result


def export(
    spec: Spec,
    to: str,
    path: Union[None, str, os.PathLike] = None,
    weights: Union[None, dict, str, os.PathLike] = None,
    dtype: Optional[str] = None,
    shape: Optional[tuple[int, ...]] = None,
) -> list[str]:
    """Write the artifact of `spec` for target `to` ("onnx", "torch-export", "saved-model",
    "litert") at `path` (default NAME + the target's suffix), atomically, and return its notes.

    `weights`: canonical weights (a dict or a .safetensors path); None: the spec's seeded
    initial weights (seqspec.initial_weights). `dtype`: "float32" or "float64" (the spec's by
    default). `shape`: the full input shape to fix, (batch, time, features) or (batch,
    features); None leaves batch and time free (a target that needs a fixed shape picks one and
    says so in its notes).
    """
    target = load_target(to)
    dtype = dtype or spec.dtype
    if dtype not in DTYPES:
        raise SpecError(f"dtype {dtype!r}: an artifact is float32 or float64")
    if dtype != spec.dtype:
        spec = _with_dtype(spec, dtype)
    out = output_path(spec, to, path)
    canonical = resolve_weights(spec, weights)
    notes = write_atomic(out, lambda tmp: target.export_artifact(spec, canonical, tmp, dtype, shape))
    return list(notes or [])


# --- check --targets ------------------------------------------------------------------------------


@dataclass
class TargetResult:
    """One target's comparison with both backends (its `as_json()` goes under "targets" in check --json)."""

    target: str
    tolerance: float
    exported: bool = False
    max_abs_diff: dict[str, float] = field(default_factory=lambda: {"keras": 0.0, "torch": 0.0})
    cases: list[tuple[int, Optional[int]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exported and not self.failures

    def as_json(self) -> dict[str, Any]:
        return {
            "exported": self.exported,
            "ok": self.ok,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "cases": [list(c) for c in self.cases],
            "notes": self.notes,
            "failures": self.failures,
        }

    def line(self) -> str:
        """The human line check prints under the spec's."""
        if not self.exported:
            return f"{self.target}: FAILED: {self.failures[0] if self.failures else 'not exported'}"
        lengths = sorted({t for _, t in self.cases if t is not None})
        where = f"batches {', '.join(str(b) for b in sorted({b for b, _ in self.cases}))}" + (f", lengths {', '.join(f'{t:,}' for t in lengths)}" if lengths else "")
        d = self.max_abs_diff
        return f"{self.target}: {'ok' if self.ok else 'FAILED'}: max abs diff vs keras {d['keras']:.2e}, vs torch {d['torch']:.2e} ({where}; tolerance {self.tolerance:g})"


def run_artifact(target: ModuleType, artifact: Path, xs: Sequence["np.ndarray"], work: Path) -> list["np.ndarray"]:
    """Outputs of the artifact for inputs `xs`, computed by the target's RUNNER in a fresh, isolated
    process (`python -I`: no seqspec on its path, and the runner blocks its import)."""
    import numpy as np

    inputs, outputs = work / "inputs.npz", work / "outputs.npz"
    np.savez(inputs, **{f"x{k}": x for k, x in enumerate(xs)})
    outputs.unlink(missing_ok=True)
    try:
        done = subprocess.run(
            [sys.executable, "-I", str(target.RUNNER), str(artifact), str(inputs), str(outputs)],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    except subprocess.TimeoutExpired:
        raise BackendError(f"{artifact.name}: the run did not finish in {RUN_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        raise BackendError(f"the run failed (exit {done.returncode}): {lines[-1] if lines else 'no message'}")
    with np.load(outputs) as data:
        return [data[f"y{k}"] for k in range(len(xs))]


def check_targets(
    spec: Spec,
    targets: Sequence[str],
    weights: dict,
    predict: dict[str, Callable[["np.ndarray"], "np.ndarray"]],
    lengths: Sequence[Optional[int]],
    batches: Sequence[Union[int, tuple[int, Optional[str]]]],
    tol: float,
    seed: int = 0,
    say: Callable[[str], None] = lambda message: None,
) -> dict[str, TargetResult]:
    """Export each target with `weights`, run it through its RUNNER at every batch and length
    (check's: its batches, each a size or (size, mask pattern), and input_lengths), and compare it
    with each backend's `predict` (name -> function) within `tol`, scaled as check scales it (by
    the output's size above 1). The inputs are check's kind (seqspec._inputs.draw_inputs): token
    ids, and for a spec that makes a mask from its input, rows masked at the end and anywhere.
    check passes its own settings in, so that this module does not import it (no import cycle)."""
    import numpy as np

    from ._inputs import draw_inputs

    def diff(a, b) -> float:
        if a.shape != b.shape:
            return float("inf")
        return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0

    def limit(want) -> float:
        return tol * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)

    rng = np.random.default_rng(seed + 1000)  # apart from check's own draws, which stay as they were
    kinds = [(b, None) if isinstance(b, int) else tuple(b) for b in batches]
    drawn = [(b, t, pattern) for t in lengths for b, pattern in kinds]
    cases = [(b, t) for b, t, _ in drawn]
    xs = [draw_inputs(spec, rng, b, t, pattern) for b, t, pattern in drawn]
    expected = {name: [fn(x) for x in xs] for name, fn in predict.items()}
    results = {}
    for name in targets:
        target = load_target(name)
        result = results[name] = TargetResult(name, tol)
        work = Path(tempfile.mkdtemp(prefix="seqspec-check-"))
        try:
            fixed = target.needs_fixed_shape(spec, spec.dtype)
            if fixed is not None:
                result.notes.append(f"{name}: exported once per case: {fixed}")
            runs = [(None, list(range(len(xs))))]
            if fixed is not None:  # one export per input shape (the mask patterns share one)
                shapes: dict[tuple, list[int]] = {}
                for k, x in enumerate(xs):
                    shapes.setdefault(x.shape, []).append(k)
                runs = list(shapes.items())
            for shape, ks in runs:
                steps = ", ".join(dict.fromkeys(f"batch {cases[k][0]}" + ("" if cases[k][1] is None else f" x {cases[k][1]:,} steps") for k in ks))
                say(f"checking {spec.name}: {name}: export and run ({steps}) ...")
                artifact = work / f"{spec.name}{TARGETS[name][1] or '.artifact'}"
                if artifact.exists():
                    shutil.rmtree(artifact) if artifact.is_dir() else artifact.unlink()
                notes = target.export_artifact(spec, weights, artifact, spec.dtype, shape)
                result.exported = True
                for note in notes or []:
                    if note not in result.notes:
                        result.notes.append(note)
                ys = run_artifact(target, artifact, [xs[k] for k in ks], work)
                for k, y in zip(ks, ys):
                    result.cases.append(cases[k])
                    for backend, outs in expected.items():
                        d = diff(y, outs[k])
                        result.max_abs_diff[backend] = max(result.max_abs_diff[backend], d)
                        if d > limit(outs[k]):
                            b, t, pattern = drawn[k]
                            got = f"shape {y.shape}, {backend} {outs[k].shape}" if y.shape != outs[k].shape else f"by {d:.3g}"
                            masked = f", {pattern}" if pattern else ""
                            result.failures.append(f"{name} differs from {backend} {got} at batch {b}, length {t}{masked} (tolerance {limit(outs[k]):.3g})")
        except BackendError as e:
            result.failures.append(f"{name}: {e}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return results
