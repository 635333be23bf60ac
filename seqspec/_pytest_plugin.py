"""`pytest --seqspec`: spec files collected as test items (validate, then each direction and dtype).

Loaded only by `--seqspec` (see seqspec/_pytest_entry). A spec file is one pytest File whose
items come from `items_of`: 'validate' (load and shape-check, no framework), then, if the spec
is valid, one `seqspec check` item per direction and dtype ('keras->torch[float32]'). More kinds
of item (one per export target, say) are more (name, run) pairs there. Both models of a spec are
built once per dtype and shared by its two direction items (each sets every weight first).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from ._check import DIRECTIONS, TOLERANCE, CheckResult, check, direction_label
from ._errors import SpecError
from ._reports import testcase_name

SUFFIXES = (".yaml", ".yml")


class CheckFailed(Exception):
    """A direction's check failed: its report is the message, pytest's own (no traceback)."""

    def __init__(self, result: CheckResult, direction: str, where: str):
        self.result, self.direction = result, direction
        r = result
        lines = [f"{where}: {testcase_name(direction, r.dtype)}: the Keras and PyTorch models differ"]
        lines += [f"  {failure}" for failure in r.failed[direction]]
        f = r.first_divergent_layer
        if f and f.get("direction") == direction:
            lines.append(f"  first divergent layer: {f['where']}: layers[{f['index']}] ({f['type']}) differs by {f['max_abs_diff']:.3g}")
        lines.append(
            f"  largest difference {r.max_abs_diff[direction]:.3g}, {r.fraction_of_tolerance[direction]:.3g} times its tolerance "
            f"({r.tolerance:g} for {r.dtype}, times the output's largest magnitude where that is over 1)"
        )
        super().__init__("\n".join(lines))


def _dtypes(config) -> tuple[str, ...]:
    option = config.getoption("seqspec_dtypes")
    names = [d.strip() for d in option.split(",")] if option is not None else list(config.getini("seqspec_dtypes"))
    wrong = [d for d in names if d not in TOLERANCE]
    if wrong or not names:
        raise pytest.UsageError(f"--seqspec-dtypes: {', '.join(repr(d) for d in wrong) or 'nothing'} given; the dtypes are {', '.join(TOLERANCE)}")
    return tuple(dict.fromkeys(names))


class SpecCollector:
    """The plugin object `--seqspec` registers: decides which YAML files are specs, keeps built models."""

    def __init__(self, config):
        self.config = config
        self.dtypes = _dtypes(config)
        here = Path(config.invocation_params.dir)
        if config.args_source == pytest.Config.ArgsSource.ARGS:
            roots = [here / arg.split("::")[0] for arg in config.args]
        else:  # no path given: the ini option's, besides pytest's own testpaths
            roots = [Path(p) for p in config.getini("seqspec_paths")]
            if not roots:
                raise pytest.UsageError("--seqspec: no spec files: name spec files or folders, or list them in the seqspec_paths ini option")
            config.args.extend(str(p) for p in roots)
        self.files = {r.resolve() for r in roots if r.suffix in SUFFIXES}
        self.folders = {r.resolve() for r in roots if r.suffix not in SUFFIXES}
        self._built: Optional[tuple[Any, Any]] = None  # ((path, dtype), (keras model, torch module)): the last spec's

    def pytest_collect_file(self, file_path: Path, parent):
        # As `seqspec check FOLDER`: the files directly inside a folder named, not its subfolders (invalid/).
        if file_path.suffix in SUFFIXES:
            p = file_path.resolve()
            if p in self.files or p.parent in self.folders:
                return SpecFile.from_parent(parent, path=file_path, collector=self)
        return None

    def pytest_report_header(self, config):
        return f"seqspec: spec items in {', '.join(self.dtypes)}"

    def models(self, key: tuple[str, str], spec) -> tuple[Any, Any]:
        """Both models of `spec` (already in its dtype), built once for its direction items: only the
        last spec's are kept, as items run file by file."""
        if self._built is None or self._built[0] != key:
            from ._backend import get_backend

            self._built = None  # free the previous spec's before building the next
            self._built = (key, (get_backend("keras").build(spec), get_backend("torch").build(spec)))
        return self._built[1]


class SpecFile(pytest.File):
    def __init__(self, *, collector: SpecCollector, **kwargs):
        super().__init__(**kwargs)
        self.collector = collector

    def collect(self) -> Iterator["SpecItem"]:
        for name, run in items_of(self):
            yield SpecItem.from_parent(self, name=name, run=run)

    def spec_path(self) -> str:
        """The path to load, as the user named it where it is relative (errors then name it so)."""
        return self.where() if Path.cwd() == Path(self.config.invocation_params.dir) else str(self.path)

    def where(self) -> str:
        try:
            return str(self.path.relative_to(self.config.invocation_params.dir))
        except ValueError:
            return str(self.path)


def items_of(file: SpecFile) -> list[tuple[str, Callable[["SpecItem"], None]]]:
    """The (name, run) items of a spec file: 'validate', then if it loads, each dtype's directions."""
    from ._loader import load

    items: list[tuple[str, Callable[["SpecItem"], None]]] = [("validate", functools.partial(_validate, file))]
    try:
        load(file.path)
    except Exception:  # the validate item reports it; nothing else can run
        return items
    for dtype in file.collector.dtypes:
        for direction in DIRECTIONS:
            items.append((testcase_name(direction, dtype), functools.partial(_check_direction, file, direction, dtype)))
    return items


def _validate(file: SpecFile, item: "SpecItem") -> None:
    from ._loader import load

    load(file.spec_path())


def _check_direction(file: SpecFile, direction: str, dtype: str, item: "SpecItem") -> None:
    from ._backend import get_backend
    from ._check import _with_dtype
    from ._loader import load
    from .cli import _deep_recursion, _quiet_frameworks

    spec = load(file.spec_path())
    if spec.dtype != dtype:
        spec = _with_dtype(spec, dtype)
    _quiet_frameworks()
    get_backend("keras"), get_backend("torch")  # before _deep_recursion: TensorFlow resets the limit at import
    with _deep_recursion(spec):
        models = file.collector.models((str(file.path), dtype), spec)
        r = check(spec, path=file.where(), directions=[direction], models=models)
    item.user_properties += [("max_abs_diff", f"{r.max_abs_diff[direction]:.3g}"), ("fraction_of_tolerance", f"{r.fraction_of_tolerance[direction]:.3g}")]
    if r.failed[direction]:
        raise CheckFailed(r, direction, file.where())


class SpecItem(pytest.Item):
    def __init__(self, *, run: Callable[["SpecItem"], None], **kwargs):
        super().__init__(**kwargs)
        self.run = run

    def runtest(self) -> None:
        self.run(self)

    def repr_failure(self, excinfo, style=None):
        # A user's spec mistake or a failed check is its one report, never seqspec's traceback.
        if isinstance(excinfo.value, (SpecError, CheckFailed)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, self.name  # pytest shows the domain after the file: specs/x.yaml::keras->torch[float32]


__all__ = ["CheckFailed", "SpecCollector", "SpecFile", "SpecItem", "direction_label", "items_of"]
