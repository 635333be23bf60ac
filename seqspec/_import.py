"""`seqspec import`: an existing Keras model or PyTorch module read into a spec and canonical weights, proven equal to it.

The framework-free part: which reader a source goes to, the spec's YAML text, the files and the
proof. Each backend package reads its own framework (`seqspec_keras.read_model`,
`seqspec_torch.read_module`) and gives back an `Imported`: the spec's document, its canonical
weights and the original model as functions of NumPy inputs, per dtype it can run in.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._errors import SpecError

if TYPE_CHECKING:
    import numpy as np

    from ._spec import Spec

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_EXPORT_SUFFIX = ".pt2"
SCHEMA_LINE = "# yaml-language-server: $schema=https://raw.githubusercontent.com/seqspec/seqspec/main/schema/seqspec-1.schema.json"
PROOF_BATCHES = (1, 3)
# The spec's keys are written in this order; the rest of a layer's keys in the order the node class declares them.
_TOP_KEYS = ("seqspec", "name", "description", "seed", "dtype", "input", "layers")


class ImportRefused(SpecError):
    """A source seqspec cannot import: one line naming the layer (or torch node) and the option; exit 2."""


@dataclasses.dataclass
class Imported:
    """What a framework reader gives back.

    `layers`: the spec's layer documents (dicts as a user writes them), in order; `input_shape`:
    [time, features] or [features]; `weights`: canonical arrays named `layers.{i}.{array}`;
    `run`: the original model as a function of a NumPy input, per dtype it runs in ("float32"
    always, "float64" where a copy of it can run in float64); `notes`: options dropped because they
    act only in training (a regularizer, a constraint), said to the user, never silently;
    `exact`: canonical weights per dtype read from the original run in that dtype, where they differ
    from `weights` cast (torch's two biases summed in float64 rather than float32).
    """

    name: str
    input_shape: list
    layers: list[dict]
    weights: dict[str, "np.ndarray"]
    run: dict[str, Callable[["np.ndarray"], "np.ndarray"]]
    dtype: str = "float32"
    description: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)
    exact: dict[str, dict] = dataclasses.field(default_factory=dict)
    input_dtype: Optional[str] = None  # int32 or int64 for token ids (input_shape is then [time])
    # The (lowest, highest) batch and length the original takes, where it takes only some (a
    # torch.export program: a fixed dimension is (n, n), a dynamic one its proven range; highest None: unbounded).
    batch_range: Optional[tuple] = None
    length_range: Optional[tuple] = None


def spec_name(text: str) -> str:
    """A spec name ([a-z][a-z0-9_]*) made of a model's name: lower case, other characters to '_'."""
    name = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")
    name = re.sub(r"__+", "_", name)
    if not name or not name[0].isalpha():
        name = "model_" + name if name else "model"
    return name[:100]


def parse_input_shape(text: Optional[str]) -> Optional[list]:
    """--input-shape T,F (T may be 'null' or 'none' for any length) or F: [T, F] or [F]; a model of
    token ids takes T alone (null for any length): [T]."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not 1 <= len(parts) <= 2:
        raise ImportRefused(f"--input-shape {text!r}: write TIME,FEATURES (TIME may be null) or FEATURES")
    out: list = []
    for k, p in enumerate(parts):
        if p.lower() in ("null", "none", "") and k == 0 and (len(parts) == 2 or p):
            out.append(None)
            continue
        if not p.isdigit() or int(p) < 1:
            raise ImportRefused(f"--input-shape {text!r}: {p!r} is not a positive whole number")
        out.append(int(p))
    return out


# --- dispatch --------------------------------------------------------------------------------


def _reader(framework: str):
    """The reader function of a backend package, after importing its framework through get_backend
    (a missing framework is one line naming the extra to install)."""
    import importlib

    from ._backend import get_backend

    get_backend(framework)
    package = importlib.import_module(f"seqspec_{framework}")
    return package.read_model if framework == "keras" else package.read_module


def _is_keras_model(obj: Any) -> bool:
    return any(c.__module__.startswith("keras") and c.__name__ in ("Model", "Sequential", "Functional") for c in type(obj).__mro__)


def _is_torch_module(obj: Any) -> bool:
    return any(c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module" for c in type(obj).__mro__)


def read(source: Any, input_shape: Optional[list] = None, name: Optional[str] = None) -> Imported:
    """Read a source into an Imported: a .keras/.h5 path or a keras.Model; a `package.module:callable`,
    a .pt2 path or an nn.Module (these need `input_shape`). ImportRefused for anything else."""
    from ._backend import get_backend  # noqa: F401 (the readers import their frameworks through it)

    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.endswith(KERAS_SUFFIXES):
            _must_be_file(text)
            imported = _reader("keras")(text, input_shape)
        elif text.endswith(TORCH_EXPORT_SUFFIX) or re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", text):
            if text.endswith(TORCH_EXPORT_SUFFIX):
                _must_be_file(text)
            imported = _reader("torch")(text, input_shape)
        else:
            raise ImportRefused(
                f"{text}: not an importable source: a Keras file (.keras, .h5), a torch.export file (.pt2) "
                "or a PyTorch callable written package.module:callable"
            )
    elif _is_keras_model(source):
        imported = _reader("keras")(source, input_shape)
    elif _is_torch_module(source):
        imported = _reader("torch")(source, input_shape)
    else:
        raise ImportRefused(f"cannot import a {type(source).__module__}.{type(source).__qualname__}: give a keras.Model, a torch.nn.Module or a path")
    if name is not None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or len(name) > 100:
            raise ImportRefused(f"--name {name!r}: a spec name is lower case letters, digits and underscores, starting with a letter")
        imported.name = name
    return imported


def _must_be_file(path: str) -> None:
    from ._safeio import Refused, check_regular

    try:
        check_regular(path)
    except Refused as e:
        raise ImportRefused(f"{path}: {e}") from None


# --- the spec's text -------------------------------------------------------------------------


def _flow(value: Any) -> str:
    """One YAML flow value: {type: lstm, units: 20} as the example specs write it."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return text[:-4].rstrip() if text.endswith("\n...") else text


def _type_first(value: Any) -> Any:
    """A layer's mapping with `type` first (and its wrapped layer's, its cell's), as users write it."""
    if isinstance(value, dict):
        head = {"type": value["type"]} if "type" in value else {}
        return {**head, **{k: _type_first(v) for k, v in value.items() if k != "type"}}
    return value


def document(imported: Imported) -> dict:
    """The spec's document before validation, defaults not yet removed."""
    doc: dict = {"seqspec": 1, "name": imported.name}
    if imported.description:
        doc["description"] = imported.description
    if imported.dtype != "float32":
        doc["dtype"] = imported.dtype
    doc["input"] = {"shape": list(imported.input_shape), **({"dtype": imported.input_dtype} if imported.input_dtype else {})}
    doc["layers"] = imported.layers
    return doc


def spec_text(spec: "Spec") -> str:
    """The spec as YAML, with the schema line, one flow mapping per layer, defaults left out."""
    data = spec.model_dump(mode="json", exclude_defaults=True, exclude={"train"})
    data["seqspec"] = spec.seqspec  # a Literal default-free field, but keep it first whatever pydantic does
    lines = [SCHEMA_LINE]
    for key in _TOP_KEYS:
        if key not in data:
            continue
        if key == "layers":
            lines.append("layers:")
            lines += [f"  - {_flow(_type_first(layer))}" for layer in data["layers"]]
        elif key == "input":
            lines.append("input:")
            lines.append(f"  shape: {_flow(data['input']['shape'])}")
            if "dtype" in data["input"]:
                lines.append(f"  dtype: {data['input']['dtype']}")
        else:
            lines.append(f"{key}: {_flow(data[key])}")
    return "\n".join(lines) + "\n"


def to_spec(imported: Imported) -> tuple["Spec", str]:
    """The validated spec and the YAML text it was loaded from; a layer the spec language refuses is an
    ImportRefused naming it (the reader mapped it to keys the spec cannot hold)."""
    import json

    from ._loader import load
    from ._spec import Spec

    try:
        first = load(json.dumps(document(imported)))
    except SpecError as e:
        raise ImportRefused(f"{imported.name}: the imported model is not a valid spec: {str(e).splitlines()[0]}") from None
    text = spec_text(first)
    spec = load(text)
    assert isinstance(spec, Spec)
    return spec, text


# --- the API ---------------------------------------------------------------------------------


def import_model(obj_or_path: Any, input_shape: Optional[list] = None, name: Optional[str] = None) -> tuple["Spec", dict]:
    """(Spec, canonical weights) of a Keras model or PyTorch module, or of a path to one.

    `obj_or_path`: a keras.Model, a torch.nn.Module, a .keras/.h5/.pt2 path or a
    `package.module:callable` string; `input_shape`: [time, features] (time None = any length) or
    [features], required for torch. Raises seqspec.ImportRefused, one line naming the layer and the
    option, for anything without a spec equivalent. The proof is `seqspec.prove_import`.
    """
    imported = read(obj_or_path, input_shape, name)
    spec, _ = to_spec(imported)
    from ._weights import check_weights

    check_weights(spec, imported.weights, source=f"the weights read from {spec.name}")
    return spec, imported.weights


# --- the proof -------------------------------------------------------------------------------


@dataclasses.dataclass
class ProofResult:
    """The largest differences between the original model and each backend's build of the spec, per dtype."""

    tolerance: dict[str, float] = dataclasses.field(default_factory=dict)
    max_abs_diff: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # dtype -> backend -> diff
    failures: list[str] = dataclasses.field(default_factory=list)
    cases: list[tuple[str, int, Optional[int]]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        out = []
        for dtype, diffs in self.max_abs_diff.items():
            parts = ", ".join(f"{backend} {d:.2e}" for backend, d in diffs.items())
            out.append(f"  {dtype}: max abs diff against the original: {parts}; tolerance {self.tolerance[dtype]:g}")
        return out


def prove_import(
    spec: "Spec", weights: dict, run: dict[str, Callable], lengths: Optional[list] = None, seed: int = 0, exact: Optional[dict] = None, batches: Optional[list] = None
) -> ProofResult:
    """Build `spec` with `weights` on both backends and compare each with the original (`run`, per dtype)
    on random inputs at batch 1 and 3 (or `batches`) and the lengths `seqspec check` uses (or `lengths`),
    with check's tolerances. `exact[dtype]`, where given, are the weights to use in that dtype."""
    import numpy as np

    from ._backend import get_backend
    from ._check import MASKED_BATCH, TOLERANCE, _accepts, _diff, _limit, _with_dtype, input_lengths
    from ._inputs import draw_inputs, mask_patterns

    if lengths is not None and len(spec.input.shape) == 2:
        refused = [t for t in lengths if not _accepts(spec, t)]
        if spec.input.shape[0] is not None and any(t != spec.input.shape[0] for t in lengths):
            raise ImportRefused(f"--lengths: the model {spec.name!r} takes only {spec.input.shape[0]} steps")
        if refused:
            raise ImportRefused(f"--lengths: the model {spec.name!r} cannot take {', '.join(map(str, refused))} steps (too short for its windows)")
    result = ProofResult()
    rng = np.random.default_rng(seed)
    backends = [get_backend("keras"), get_backend("torch")]
    for dtype, original in run.items():
        typed = _with_dtype(spec, dtype)
        w = {k: np.asarray(v).astype(dtype) for k, v in (exact or {}).get(dtype, weights).items()}
        models = [(b, b.build(typed, w)) for b in backends]
        tol = TOLERANCE[dtype]
        result.tolerance[dtype] = tol
        result.max_abs_diff[dtype] = {b.name: 0.0 for b in backends}
        # check's inputs: token ids for an embedding, and for a model that makes a mask its masked
        # batches too (masked at the end and anywhere), where the original's mask handling shows.
        cases = [(b, None) for b in batches or PROOF_BATCHES] + [(MASKED_BATCH, p) for p in mask_patterns(typed) if p is not None and MASKED_BATCH in (batches or [MASKED_BATCH])]
        for t in lengths or input_lengths(typed):
            for batch, pattern in cases:
                x = draw_inputs(typed, rng, batch, t, pattern)
                want = np.asarray(original(x))
                result.cases.append((dtype, batch, t))
                for backend, model in models:
                    got = backend.predict(model, x)
                    d = _diff(want, got)
                    result.max_abs_diff[dtype][backend.name] = max(result.max_abs_diff[dtype][backend.name], d)
                    if d > _limit(tol, want):
                        shapes = "" if want.shape == got.shape else f" (shapes {want.shape} and {got.shape})"
                        result.failures.append(
                            f"{backend.name} [{dtype}] differs from the original by {d:.3g} at batch {batch}, length {t}{', masked ' + pattern if pattern else ''}{shapes} (tolerance {_limit(tol, want):.3g})"
                        )
    return result


def _within(n: int, bounds: Optional[tuple]) -> bool:
    return bounds is None or (bounds[0] <= n and (bounds[1] is None or n <= bounds[1]))


def _clamp(n: int, bounds: tuple) -> int:
    low, high = bounds
    return max(n, low, 1) if high is None else min(max(n, low, 1), high)


def proof_shapes(spec: "Spec", imported: Imported, lengths: Optional[list] = None) -> tuple[Optional[list], Optional[list]]:
    """The proof's batches and lengths (None: prove_import's own) for an original that takes only
    some (imported.batch_range, .length_range): prove_import's, each moved into the range."""
    from ._check import _accepts, input_lengths

    batches = None if imported.batch_range is None else sorted({_clamp(b, imported.batch_range) for b in PROOF_BATCHES})
    if imported.length_range is None:
        return batches, lengths
    if lengths is not None:
        refused = [t for t in lengths if not _within(t, imported.length_range)]
        if refused:
            low, high = imported.length_range
            raise ImportRefused(f"--lengths: the original takes {low} to {'any number of' if high is None else high} steps, not {', '.join(map(str, refused))}")
        return batches, lengths
    return batches, sorted({_clamp(t, imported.length_range) for t in input_lengths(spec) if _accepts(spec, _clamp(t, imported.length_range))}) or None


def import_files(source: Any, output: str, input_shape: Optional[list] = None, name: Optional[str] = None, lengths: Optional[list] = None):
    """`seqspec import`: read, validate, prove; write OUTPUT (.yaml) and its .safetensors beside it.

    Both files are written atomically, only after the spec validates, the weights fit it and the
    proof passes: a spec file on disk is one proven equal to its source. Returns
    (spec, ProofResult, notes, weights path); nothing is written when the proof fails."""
    from pathlib import Path

    from ._files import atomic_write
    from ._weights import check_weights, save_weights

    if not output.endswith((".yaml", ".yml")):
        raise ImportRefused(f"{output}: name the spec file *.yaml")
    if os.path.isdir(output):
        raise ImportRefused(f"{output}: is a folder; name the spec file *.yaml")
    weights_path = str(Path(output).with_suffix(".safetensors"))
    imported = read(source, input_shape, name)
    spec, text = to_spec(imported)
    check_weights(spec, imported.weights, source=f"the weights read from {spec.name}")
    batches, lengths = proof_shapes(spec, imported, lengths)
    result = prove_import(spec, imported.weights, imported.run, lengths, exact=imported.exact, batches=batches)
    if not result.ok:
        return spec, result, imported.notes, None
    save_weights(imported.weights, weights_path, spec)
    atomic_write(output, lambda tmp: Path(tmp).write_text(text), suffix=".yaml")
    return spec, result, imported.notes, weights_path


def _lengths(text: Optional[str]) -> Optional[list]:
    if text is None:
        return None
    try:
        values = [int(p) for p in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ImportRefused(f"--lengths {text!r}: write positive whole numbers separated by commas, e.g. 1,7,500")
    return values


def run_command(args) -> int:
    """`seqspec import SOURCE -o SPEC.yaml`: 0 when proven equal, 1 when the proof fails (nothing
    written), 2 when the source cannot be imported (nothing written)."""
    import sys

    spec, result, notes, weights_path = import_files(args.source, args.output, parse_input_shape(args.input_shape), args.name, _lengths(args.lengths))
    for note in notes:
        print(f"{args.source}: note: {note}", file=sys.stderr)
    if not result.ok:
        print(f"{args.source}: FAILED: the spec {spec.name!r} does not compute the original's function; nothing written")
        for line in result.lines():
            print(line)
        for failure in result.failures[:10]:
            print(f"  {failure}")
        return 1
    n = len(spec.layers)
    print(f"{args.source}: wrote {args.output} and {weights_path}: {spec.name}, {n} layer{'' if n == 1 else 's'}; proven equal to the original")
    for line in result.lines():
        print(line)
    return 0
