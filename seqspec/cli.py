"""The `seqspec` command: validate, summary, schema, compile, export, check, train and import."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import sys
import threading
import traceback
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable, Optional, Sequence

try:
    from . import _checkpoint, _loader, _parallel
    from ._backend import backend_names
    from ._errors import SpecError
    from ._export import TARGETS as EXPORT_TARGETS
    from ._files import atomic_write
    from ._shapes import format_shape, infer
except KeyboardInterrupt:
    # Ctrl-C before main() exists to catch it (the installed script imports this module first).
    sys.stderr.write("seqspec: interrupted\n")
    raise SystemExit(130) from None

EXIT_OK, EXIT_FAIL, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_DRIFT = 3  # check: every spec passed, but a difference drifted from the --baseline
SCHEMA_URL = "https://raw.githubusercontent.com/seqspec/seqspec/main/schema/seqspec-1.schema.json"
SEED_MAX = 2**32 - 1  # NumPy's legacy seeding and torch.manual_seed agree only on 0..2**32-1
_INTEGER = re.compile(r"[+-]?\d(?:_?\d)*")
_SCIENTIFIC = re.compile(r"[+-]?\d(?:_?\d)*(?:\.\d+)?[eE]\+?\d{1,2}")  # 1e9, 2.5e6; an exponent of 100 is a typo


def _integer(text: str, low: int, high: Optional[int], what: str) -> int:
    """An integer written as 1000000, 1_000_000 or 1e9, within [low, high]; else argparse's one-line error."""
    t = text.strip()
    value = None
    if _INTEGER.fullmatch(t):
        value = int(t)
    elif _SCIENTIFIC.fullmatch(t):
        try:
            d = Decimal(t.replace("_", ""))
        except InvalidOperation:
            d = None
        if d is not None and d == d.to_integral_value():
            value = int(d)
    span = f"from {low:,} to {high:,}" if high is not None else f">= {low:,}"
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (write 1000000, 1_000_000 or 1e6); {what} must be {span}")
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{text} is out of range; {what} must be {span}")
    return value


def budget_type(text: str) -> int:
    """argparse type of the --max-params and --max-values budgets: a whole number >= 0."""
    return _integer(text, 0, None, "a budget")


def seed_type(text: str) -> int:
    """argparse type of every --seed: a whole number from 0 to 2**32 - 1, the range both backends seed."""
    return _integer(text, 0, SEED_MAX, "a seed")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(EXIT_INVALID, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _expand(arg: str) -> list[str]:
    """The spec files one SPEC argument stands for: itself, or the .yaml/.yml files directly inside a
    folder (not subfolders such as invalid/)."""
    if arg == "":
        raise SpecError("'': empty path; name a spec file or a folder of them")
    p = Path(arg)
    try:
        is_dir = p.is_dir()
    except (OSError, ValueError):  # a name too long for the OS, a NUL: the loader reports it, located
        return [arg]
    if not is_dir:
        return [arg]
    try:
        files = [str(f) for f in sorted(p.iterdir()) if f.suffix in (".yaml", ".yml") and f.is_file()]
    except OSError as e:
        raise SpecError(f"{arg}: cannot read the folder: {e.strerror or e}") from None
    if not files:
        raise SpecError(f"{arg}: no .yaml files in the folder")
    return files


def spec_files(args: Sequence[str]) -> list[str]:
    """Every spec file the SPEC arguments stand for; SpecError for the first that stands for none."""
    return [path for arg in args for path in _expand(arg)]


def _each_spec(args: Sequence[str]):
    """(path, None) for each spec file, or (None, SpecError) for an argument that names none, in order."""
    for arg in args:
        try:
            paths = _expand(arg)
        except SpecError as e:
            yield None, e
            continue
        for path in paths:
            yield path, None


def _load(path: str, max_params: int, max_values: int):
    if path == "":
        # The loader reads '' as the folder '.', and says "./: cannot read the file".
        raise SpecError("'': empty path; name a spec file")
    return _loader.load(path, max_params=max_params, max_values=max_values)


def _budgets(args) -> dict:
    return {"max_params": args.max_params, "max_values": args.max_values}


def cmd_validate(args) -> int:
    code = EXIT_OK
    for path, problem in _each_spec(args.specs):
        try:
            if problem:
                raise problem
            spec = _load(path, **_budgets(args))
        except SpecError as e:
            print(e, file=sys.stderr)
            code = EXIT_INVALID
            continue
        info = infer(spec)
        n = len(spec.layers)
        print(f"{path}: ok: {spec.name}, {n} layer{'' if n == 1 else 's'}, {info.params:,} params")
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
    if tmap.whole_sequence:
        rf = "the whole sequence (bidirectional)"
    else:
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
    spec = _load(args.spec, **_budgets(args))
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
    # Forced, not defaulted: seqspec's Keras backend runs on TensorFlow only, and a KERAS_BACKEND=jax
    # or torch left in a user's shell (or keras.json) would otherwise break every keras command.
    os.environ["KERAS_BACKEND"] = "tensorflow"


class _deep_recursion:
    """Room for Keras's graph walk, which recurses once per layer (and TensorFlow's limit of 3,000
    stops it near 2,500 layers); the loader's value budget keeps specs to some 7,000 layers."""

    def __init__(self, spec):
        self.limit = min(100_000, 3_000 + 10 * len(spec.layers))

    def __enter__(self):
        self.previous = sys.getrecursionlimit()
        sys.setrecursionlimit(max(self.previous, self.limit))

    def __exit__(self, *exc):
        sys.setrecursionlimit(self.previous)


_WRITE_FAILURE = re.compile(r"file write failed|failed writing|no space left|disk quota|unexpected pos", re.IGNORECASE)


def write_failure(e: BaseException, path: str) -> Optional[str]:
    """The one line for a save that the disk refused (torch's zip writer says so in a RuntimeError), else None."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"seqspec: {path}: {'no space left on device' if e.errno == errno.ENOSPC else 'disk quota exceeded'}"
    if isinstance(e, RuntimeError) and _WRITE_FAILURE.search(str(e)):
        return f"seqspec: {path}: no space left on device"
    return None


class _Failed(Exception):
    """An environment failure already worded for the user; exit 1."""


def cmd_compile(args) -> int:
    from ._backend import get_backend
    from ._weights import load_weights

    spec = _load(args.spec, **_budgets(args))
    _quiet_frameworks()
    backend = get_backend(args.backend)
    out = args.output or f"{spec.name}{backend.suffix}"
    # Checked before the build: atomic_write would name its hidden temporary file inside the folder.
    if os.path.isdir(out):
        raise SpecError(f"{out}: is a folder; name the output file *{backend.suffix}")
    if not out.endswith(backend.suffix):
        raise SpecError(f"{out}: the {backend.name} backend writes {backend.suffix} files; name the output *{backend.suffix}")
    weights = load_weights(args.weights, spec) if args.weights else None
    with _deep_recursion(spec):
        model = backend.build(spec, weights)
        try:
            atomic_write(out, lambda tmp: backend.save(model, spec, tmp), suffix=backend.suffix)
        except (OSError, RuntimeError) as e:
            line = write_failure(e, out)
            if line is None:
                raise
            raise _Failed(line) from None
    print(f"{args.spec}: wrote {out} ({backend.name})")
    return EXIT_OK


def cmd_export(args) -> int:
    from ._export import TARGETS, export, load_target

    spec = _load(args.spec, **_budgets(args))
    _quiet_frameworks()
    load_target(args.to)  # a target that is not installed is named before anything is built
    out = args.output or f"{spec.name}{TARGETS[args.to][1]}"
    with _deep_recursion(spec):
        try:
            notes = export(spec, args.to, out, weights=args.weights, dtype=args.dtype)
        except (OSError, RuntimeError) as e:
            line = write_failure(e, out)
            if line is None:
                raise
            raise _Failed(line) from None
    for note in notes:
        print(note)
    print(f"{args.spec}: wrote {out} ({args.to})")
    return EXIT_OK


def _target_type(text: str) -> str:
    """argparse type of export --to: one known export target."""
    names = _targets_type(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: name one target")
    return names[0]


def _targets_type(text: str) -> list[str]:
    """argparse type of --targets: comma-separated export targets, each known."""
    from ._export import target_names

    try:
        return target_names(text)
    except SpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _progress() -> Optional[Callable[[str], None]]:
    """A status line on stderr that each step of `check` overwrites, on a terminal only; None elsewhere."""
    try:
        if not sys.stderr.isatty():
            return None
    except (AttributeError, ValueError):
        return None

    def show(message: str) -> None:
        sys.stderr.write(f"\r\x1b[K{message}" if message else "\r\x1b[K")
        sys.stderr.flush()

    return show


def cmd_check(args) -> int:
    from ._backend import get_backend
    from ._check import check

    from . import _reports

    baseline = _reports.read_baseline(args.baseline) if args.baseline is not None else None
    if args.junit_xml is not None:
        _reports.check_report_path(args.junit_xml)
    specs, invalid = [], []
    code = EXIT_OK
    for path, problem in _each_spec(args.specs):
        try:
            if problem:
                raise problem
            specs.append((path, _load(path, **_budgets(args))))
        except SpecError as e:
            print(e, file=sys.stderr)
            invalid.append((path or "", str(e)))
            code = EXIT_INVALID
    if code == EXIT_INVALID:
        if args.junit_xml is not None:
            _reports.write_junit(args.junit_xml, [], invalid)
        return code
    _quiet_frameworks()
    backends = get_backend("keras"), get_backend("torch")  # imported before _deep_recursion: TensorFlow resets the limit at import
    if "OMP_NUM_THREADS" not in os.environ:
        # torch on one thread (check's batches of 1 and 3 are too small to share: under load a
        # second thread's wait at every step cost 4.2 times the CPU time over specs/), but not
        # through OMP_NUM_THREADS, which slows TensorFlow's kernels too (docs/ci.md).
        for backend in backends:
            backend.check_threads()
    if args.targets:
        from ._export import load_target

        for name in args.targets:  # one that is not installed is named before any spec is checked
            load_target(name)
    show = _progress()
    results = []
    for path, spec in specs:
        with _deep_recursion(spec):
            try:
                r = check(spec, dtype=args.dtype, path=path, progress=show, targets=args.targets or ())
            finally:
                if show:
                    show("")
        results.append(r)
        if args.json:
            continue
        status = "ok" if r.ok else "FAILED"
        p = r.params
        diffs = f"max abs diff keras->torch {r.max_abs_diff['keras_to_torch']:.2e}, torch->keras {r.max_abs_diff['torch_to_keras']:.2e}"
        grads = "" if r.grad_max_abs_diff is None else f", gradients {r.grad_max_abs_diff:.2e}"
        print(f"{path}: {status}: {r.name} [{r.dtype}] params {p['core']:,} (keras {p['keras']:,}, torch {p['torch']:,}); {diffs}{grads}; tolerance {r.tolerance:g}", flush=True)
        for failure in r.failures:
            print(f"  {failure}")
        if r.first_divergent_layer:
            f = r.first_divergent_layer
            print(f"  first divergent layer: {f['where']}: layers[{f['index']}] ({f['type']}) differs by {f['max_abs_diff']:.3g}")
        for target in r.targets.values():
            print(f"  {target.line()}")
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=2))
    if args.junit_xml is not None:
        _reports.write_junit(args.junit_xml, results)
    drifted = _reports.drift(results, baseline) if baseline is not None else []
    for d in drifted:
        print(d, file=sys.stderr)
    if not all(r.ok for r in results):
        return EXIT_FAIL
    return EXIT_DRIFT if drifted else EXIT_OK


def cmd_train(args) -> int:
    import importlib.util

    from . import _train
    from ._backend import get_backend
    from ._files import check_out, lock_out, write_run

    spec = _load(args.spec, **_budgets(args))
    world, resume = _parallel.world_for(args.backend, args.nproc), _resume(args)
    out = Path(args.resume or args.out or os.path.join("runs", f"{spec.name}-{args.backend}"))
    if world.writes:
        check_out(out, args.overwrite or resume is not None)  # before the data and the framework load, not after the whole run
    # Checked before training, not when the plots are drawn at the end of it.
    missing = [m for m in ("matplotlib", "tqdm") if importlib.util.find_spec(m) is None]
    if missing:
        raise SpecError(f"seqspec train needs {' and '.join(missing)}, which is not installed: pip install 'seqspec[train]'")
    _quiet_frameworks()
    plan = _train.make_plan(spec, args.epochs or (resume or {}).get("epochs"), *_resumed(args, resume))  # a resume runs to the run's --epochs
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise SpecError(f"--checkpoint-every: must be at least 1, got {args.checkpoint_every}")
    every = args.checkpoint_every or (resume or {}).get("every")  # a resumed run keeps its schedule
    checkpoint = _checkpoint.Checkpointing(out, every, resume) if every or resume else None
    plan = dataclasses.replace(plan, nproc=world.size, checkpoint=checkpoint)
    if checkpoint is not None:
        checkpoint.check(spec, plan, args.backend)
    prepared = _train.prepare(spec, plan.seed)  # every data problem is raised here, before anything is written
    if not world.writes:
        return _train_worker(args, spec, plan, prepared)
    with lock_out(out), _workers(args, world):
        if checkpoint is not None and resume is None:
            shutil.rmtree(out / _checkpoint.CHECKPOINT_DIR, ignore_errors=True)  # an --overwrite'n run's, not this one's
        check_out(out, args.overwrite or resume is not None)  # again: another run may have finished into it meanwhile
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


def cmd_import(args) -> int:
    from ._import import run_command

    _quiet_frameworks()
    return run_command(args)


def _resume(args) -> Optional[dict]:
    """The checkpoint record --resume DIR continues from (None without --resume)."""
    if args.resume is None:
        return None
    if args.out is not None and Path(args.out) != Path(args.resume):
        raise SpecError(f"--out {args.out}: a resumed run is written where it was (--resume {args.resume}); leave --out out")
    return _checkpoint.resume_from(args.resume)


def _resumed(args, resume: Optional[dict]) -> tuple[Optional[int], Optional[int]]:
    """(batch size, seed): the flags', else the resumed checkpoint's (which check() then holds them to)."""
    if resume is None:
        return args.batch_size, args.seed
    ident = resume.get("identity", {})
    return args.batch_size or ident.get("batch_size"), args.seed if args.seed is not None else ident.get("seed")


@contextlib.contextmanager
def _workers(args, world):
    """`--nproc N` on torch: the N-1 other processes, started beside this one (rank 0) and waited for."""
    if world.launcher != "nproc" or world.rank != 0:
        yield
        return
    argv = ["train", args.spec, "--backend", args.backend, "--max-params", str(args.max_params), "--max-values", str(args.max_values)]
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--seed", args.seed), ("--resume", args.resume)):
        if value is not None:
            argv += [flag, str(value)]
    workers = _parallel.Workers(argv, world.size)
    try:
        yield
    finally:
        code = workers.finish()
    if code not in (0, EXIT_INTERRUPTED):
        raise _Failed(f"seqspec: a worker process exited with code {code}")


def _train_worker(args, spec, plan, prepared) -> int:
    """A data-parallel worker other than rank 0: trains its shards and writes nothing (rank 0 reports)."""
    from . import _train

    with contextlib.redirect_stdout(open(os.devnull, "w")):
        run, _ = _train.train(spec, args.backend, plan, prepared)
    return _train.EXIT_INTERRUPTED if run.interrupted else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="seqspec", description="Define sequence models once; compile them to Keras and PyTorch.")
    parser.add_argument("--version", action="version", version="seqspec 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    backends = backend_names()  # the installed entry points: a third backend is a plugin

    def budget(p):
        p.add_argument("--max-params", type=budget_type, default=_loader.DEFAULT_MAX_PARAMS, metavar="N", help="refuse specs with more parameters (default 1e9)")
        p.add_argument(
            "--max-values", type=budget_type, default=_loader.DEFAULT_MAX_VALUES, metavar="N",
            help="refuse specs of which one sample makes more values, input and every layer's output (default 1e8)",
        )

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
    p.add_argument(
        "--targets", type=_targets_type, metavar="T[,T...]",
        help="also export each artifact (onnx, torch-export, saved-model, litert), run it without seqspec and compare it with both backends",
    )
    p.add_argument("--junit-xml", metavar="PATH", help="also write a JUnit XML report: one testcase per spec and direction")
    p.add_argument(
        "--baseline", metavar="JSON",
        help="a previous run's --json: report differences that grew tenfold or passed half the tolerance (exit 3 if nothing else failed)",
    )
    budget(p)
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("export", help="write an artifact of a spec for serving, one that runs without seqspec")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--to", required=True, type=_target_type, metavar="{" + ",".join(EXPORT_TARGETS) + "}", help="the artifact's format")
    p.add_argument("-o", "--output", metavar="PATH", help="where to write it (default NAME + the format's suffix: .onnx, .pt2, a folder, .tflite)")
    p.add_argument("--weights", metavar="FILE", help="canonical weights in a .safetensors file (default: the spec's seeded initial weights)")
    p.add_argument("--dtype", choices=["float32", "float64"], help="the artifact's dtype (default the spec's)")
    budget(p)
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("train", help="train a spec on either backend (its `train:` section, overridden by flags)")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--backend", required=True, choices=backends)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/NAME-BACKEND); must be new or empty unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (only a folder holding a seqspec run)")
    p.add_argument("--seed", type=seed_type)
    p.add_argument("--nproc", type=int, metavar="N", help="data-parallel: N processes (torch, DDP over gloo) or N replicas (keras, MirroredStrategy); the same training as one")
    p.add_argument("--checkpoint-every", type=int, metavar="K", help="write a checkpoint (model, optimizer, random state, epoch) into DIR/checkpoint every K epochs, and on Ctrl-C")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint (written where it was)")
    budget(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("import", help="turn a Keras model or PyTorch module into a spec and weights, proven equal to it")
    p.add_argument("source", metavar="SOURCE", help="a .keras or .h5 file, a torch.export .pt2 file, or a PyTorch package.module:callable")
    p.add_argument("-o", "--output", required=True, metavar="SPEC.yaml", help="the spec to write; its weights go beside it as SPEC.safetensors")
    p.add_argument("--input-shape", metavar="T,F", help="the input [time, features] (time may be null), or [time] of token ids; required for a PyTorch module")
    p.add_argument("--name", help="the spec's name (default: the model's, made lower case)")
    p.add_argument("--lengths", metavar="L,...", help="sequence lengths of the proof (default: those of seqspec check)")
    p.set_defaults(run=cmd_import)
    return parser


class _Interrupts:
    """Ctrl-C seen anywhere, even where Python swallows it: a finalizer (TensorFlow's) that it
    interrupts prints "Exception ignored" and the program carries on, to exit 0."""

    def __init__(self):
        self.seen = False
        self.installed = False

    def on_sigint(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def unraisable(self, hook):
        if hook.exc_type is not None and issubclass(hook.exc_type, KeyboardInterrupt):
            self.seen = True
            return
        self.previous_hook(hook)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.previous_handler = signal.signal(signal.SIGINT, self.on_sigint)
        self.previous_hook = sys.unraisablehook
        sys.unraisablehook = self.unraisable
        self.installed = True

    def restore(self) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous_handler)
            sys.unraisablehook = self.previous_hook
            self.installed = False

    def at_exit(self) -> None:
        """For the rest of the process (its teardown runs finalizers too), Ctrl-C ends it with 130."""
        if not self.installed:
            return

        def late(signum, frame):
            _say_interrupted()
            os._exit(EXIT_INTERRUPTED)

        signal.signal(signal.SIGINT, late)


def _say_interrupted() -> None:
    try:
        sys.stdout.flush()
    except Exception:
        pass
    try:
        print("seqspec: interrupted", file=sys.stderr, flush=True)
    except Exception:
        pass


def _readable_streams() -> None:
    # An error quoting 'é' must not become a UnicodeEncodeError on an ASCII terminal or pipe.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `seqspec` program. With argv None (the installed script, `python -m seqspec.cli`) it
    keeps its Ctrl-C handling until the process ends; with argv (tests, callers) it restores it."""
    interrupts = _Interrupts()
    try:
        interrupts.install()
        _readable_streams()
        code = _run(argv)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    finally:
        if argv is None:
            interrupts.at_exit()
        else:
            interrupts.restore()
    if interrupts.seen or code == EXIT_INTERRUPTED:
        _say_interrupted()
        return EXIT_INTERRUPTED
    return code


def _run(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except SpecError as e:
        print(e, file=sys.stderr)
        return EXIT_INVALID
    except _Failed as e:
        print(e, file=sys.stderr)
        return EXIT_FAIL
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
