"""The `seqspec` command: validate, summary, schema, compile, check and train."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Optional, Sequence

from . import _loader
from ._backend import backend_names
from ._errors import SpecError
from ._files import atomic_write
from ._shapes import format_shape, infer

EXIT_OK, EXIT_FAIL, EXIT_INVALID = 0, 1, 2
SCHEMA_URL = "https://raw.githubusercontent.com/seqspec/seqspec/main/schema/seqspec-1.schema.json"


def spec_files(args: Sequence[str]) -> list[str]:
    """Expand directories to the .yaml/.yml files directly inside them (not subfolders such as invalid/)."""
    out = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            out.extend(str(f) for f in sorted(p.iterdir()) if f.suffix in (".yaml", ".yml") and f.is_file())
        else:
            out.append(arg)
    return out


def _load(path: str, max_params: int):
    return _loader.load(path, max_params=max_params)


def cmd_validate(args) -> int:
    code = EXIT_OK
    for path in spec_files(args.specs):
        try:
            spec = _load(path, args.max_params)
        except SpecError as e:
            print(e)
            code = EXIT_INVALID
            continue
        info = infer(spec)
        print(f"{path}: ok: {spec.name}, {len(spec.layers)} layers, {info.params:,} params")
    return code


def _summary_json(spec, info) -> dict:
    def shape(s):
        return list(s)

    tmap = info.time_map
    return {
        "name": spec.name,
        "params": info.params,
        "trainable_params": info.trainable_params,
        "non_trainable_params": info.non_trainable_params,
        "input_shape": shape(info.input_shape),
        "output_shape": shape(info.output_shape),
        "time_mapping": None
        if tmap is None
        else {
            "output_length": info.length_formula(),
            "stride": _number(tmap.stride),
            "last_input_step_of_output_0": tmap.last,
            "receptive_field": tmap.receptive_field,
            "unaligned_output_steps": tmap.unaligned_steps(),
        },
        "layers": [
            {
                "index": li.index,
                "type": li.type,
                "input_shape": shape(li.input_shape),
                "output_shape": shape(li.output_shape),
                "params": li.params,
                "trainable_params": li.trainable_params,
                "non_trainable_params": li.non_trainable_params,
                "receptive_field": None if li.time_map is None else li.time_map.receptive_field,
                "stride": None if li.time_map is None else _number(li.time_map.stride),
                "time": _layer_time(li) or None,
            }
            for li in info.layers
        ],
    }


def _number(value):
    """An int, or a fraction (an upsampled stride) as the string '1/2'."""
    return value if isinstance(value, int) else str(value)


def _alignment(info) -> str:
    tmap = info.time_map
    if tmap is None:
        return "the output has no time axis aligned to the input"
    rf = "all earlier steps (recurrent)" if tmap.receptive_field is None else f"{tmap.receptive_field} steps"
    text = f"output length {info.length_formula()}; receptive field {rf}; output step j sees input {tmap.sees()}"
    unaligned = tmap.unaligned_steps()
    if unaligned:
        steps = "output step 0" if unaligned == 1 else f"output steps 0 to {unaligned - 1}"
        text += f"; {steps} see no past or present input step (left zero padding): train refuses seq2seq targets for them"
    return text


def _layer_time(li) -> str:
    """The time column of the summary table: for layers that move steps along time."""
    if not li.time_ops:
        return ""
    rf = li.time_map.receptive_field
    return f"T -> {li.length_formula()}; rf {rf}; j sees {li.time_map.sees()}"


def cmd_summary(args) -> int:
    spec = _load(args.spec, args.max_params)
    info = infer(spec)
    if args.json:
        print(json.dumps(_summary_json(spec, info), indent=2))
        return EXIT_OK
    rows = [("#", "layer", "output shape", "params", "time")]
    for li in info.layers:
        rows.append((str(li.index), li.type, format_shape(li.output_shape), f"{li.params:,}", _layer_time(li)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"{spec.name}: input {format_shape(info.input_shape)}")
    for j, row in enumerate(rows):
        print("  ".join(c.rjust(w) if i in (0, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))
    print(f"params: {info.params:,} ({info.trainable_params:,} trainable, {info.non_trainable_params:,} non-trainable)")
    print(f"time: {_alignment(info)}")
    return EXIT_OK


def schema() -> dict:
    """The JSON Schema of the spec language (what `seqspec schema` prints)."""
    from ._spec import Spec

    out = Spec.model_json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["$id"] = SCHEMA_URL
    out["title"] = "seqspec spec, format version 1"
    return out


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


def cmd_schema(args) -> int:
    if args.output:
        atomic_write(args.output, lambda tmp: Path(tmp).write_text(schema_text()))
    else:
        sys.stdout.write(schema_text())
    return EXIT_OK


def _quiet_frameworks() -> None:
    # TensorFlow logs through C++ and absl at import; keep the CLI's own output clean.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def cmd_compile(args) -> int:
    from ._backend import get_backend
    from ._weights import load_weights

    spec = _load(args.spec, args.max_params)
    _quiet_frameworks()
    backend = get_backend(args.backend)
    weights = load_weights(args.weights, spec) if args.weights else None
    model = backend.build(spec, weights)
    out = args.output or f"{spec.name}{backend.suffix}"
    if not out.endswith(backend.suffix):
        raise SpecError(f"{out}: the {backend.name} backend writes {backend.suffix} files; name the output *{backend.suffix}")
    atomic_write(out, lambda tmp: backend.save(model, spec, tmp), suffix=backend.suffix)
    print(f"{args.spec}: wrote {out} ({backend.name})")
    return EXIT_OK


def cmd_check(args) -> int:
    from ._check import check

    specs = []
    code = EXIT_OK
    for path in spec_files(args.specs):
        try:
            specs.append((path, _load(path, args.max_params)))
        except SpecError as e:
            print(e, file=sys.stderr)
            code = EXIT_INVALID
    if code == EXIT_INVALID:
        return code
    _quiet_frameworks()
    results = []
    for path, spec in specs:
        r = check(spec, dtype=args.dtype, path=path)
        results.append(r)
        if args.json:
            continue
        status = "ok" if r.ok else "FAILED"
        p = r.params
        diffs = f"max abs diff keras->torch {r.max_abs_diff['keras_to_torch']:.2e}, torch->keras {r.max_abs_diff['torch_to_keras']:.2e}"
        grads = "" if r.grad_max_abs_diff is None else f", gradients {r.grad_max_abs_diff:.2e}"
        print(f"{path}: {status}: {r.name} [{r.dtype}] params {p['core']:,} (keras {p['keras']:,}, torch {p['torch']:,}); {diffs}{grads}; tolerance {r.tolerance:g}")
        for failure in r.failures:
            print(f"  {failure}")
        if r.first_divergent_layer:
            f = r.first_divergent_layer
            print(f"  first divergent layer: {f['where']}: layers[{f['index']}] ({f['type']}) differs by {f['max_abs_diff']:.3g}")
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=2))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAIL


def cmd_train(args) -> int:
    import importlib.util

    from . import _train
    from ._backend import get_backend
    from ._files import check_out, lock_out, write_run

    spec = _load(args.spec, args.max_params)
    out = Path(args.out or os.path.join("runs", f"{spec.name}-{args.backend}"))
    check_out(out, args.overwrite)  # before the data and the framework load, not after the whole run
    # Checked before training, not when the plots are drawn at the end of it.
    missing = [m for m in ("matplotlib", "tqdm") if importlib.util.find_spec(m) is None]
    if missing:
        raise SpecError(f"seqspec train needs {' and '.join(missing)}, which is not installed: pip install 'seqspec[train]'")
    _quiet_frameworks()
    plan = _train.make_plan(spec, args.epochs, args.batch_size, args.seed)
    prepared = _train.prepare(spec, plan.seed)  # every data problem is raised here, before anything is written
    with lock_out(out):
        check_out(out, args.overwrite)  # again: another run may have finished into it meanwhile
        get_backend(args.backend)
        sizes = ", ".join(f"{k} {len(v.x)}" for k, v in prepared.splits.items())
        print(f"{spec.name}: training on {args.backend}: {prepared.windows.origin}; {sizes}; target {prepared.targets.kind}", flush=True)
        try:
            record = _train.run_training(spec, args.backend, plan, prepared)
        except KeyboardInterrupt as e:
            print(f"{spec.name}: {e or 'interrupted'}", flush=True)
            return _train.EXIT_INTERRUPTED
        if record.run.interrupted:
            n, restored = len(record.run.history), record.run.restored
            print(f"{spec.name}: interrupted after {_train.plural(n, 'epoch')}; writing the run with the weights of epoch {restored}", flush=True)
        print(record.table())
        write_run(out, record, args.overwrite)
    print(f"{record.summary()}; wrote {out}/", flush=True)
    return _train.EXIT_INTERRUPTED if record.run.interrupted else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqspec", description="Define sequence models once; compile them to Keras and PyTorch.")
    parser.add_argument("--version", action="version", version="seqspec 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    backends = backend_names()  # the installed entry points: a third backend is a plugin

    def budget(p):
        p.add_argument("--max-params", type=int, default=_loader.DEFAULT_MAX_PARAMS, help="refuse specs with more parameters (default 1e9)")

    p = sub.add_parser("validate", help="check specs without building them")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or directories of them")
    budget(p)
    p.set_defaults(run=cmd_validate)

    p = sub.add_parser("summary", help="layers, shapes, parameters and time mapping of a spec")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true")
    budget(p)
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("schema", help="print the JSON Schema of the spec language")
    p.add_argument("-o", "--output", metavar="PATH")
    p.set_defaults(run=cmd_schema)

    p = sub.add_parser("compile", help="write a backend's saved model of a spec")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--backend", required=True, choices=backends)
    p.add_argument("-o", "--output", metavar="PATH")
    p.add_argument("--weights", metavar="FILE", help="start from canonical weights in a .safetensors file (e.g. trained on the other backend)")
    budget(p)
    p.set_defaults(run=cmd_compile)

    p = sub.add_parser("check", help="prove the Keras and PyTorch models of specs compute the same function")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or directories of them")
    p.add_argument("--json", action="store_true")
    p.add_argument("--dtype", choices=["float32", "float64"])
    budget(p)
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("train", help="train a spec on either backend (its `train:` section, overridden by flags)")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--backend", required=True, choices=backends)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/NAME-BACKEND); must be new or empty unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (only a folder holding a seqspec run)")
    p.add_argument("--seed", type=int)
    budget(p)
    p.set_defaults(run=cmd_train)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except SpecError as e:
        print(e, file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as e:  # the environment, not the spec: a full disk, a read-only folder
        where = f"{e.filename}: " if e.filename else ""
        print(f"seqspec: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as e:  # an internal fault, not the user's mistake
        if os.environ.get("SEQSPEC_DEBUG"):
            traceback.print_exc()
        print(f"seqspec: internal error: {type(e).__name__}: {e} (set SEQSPEC_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
