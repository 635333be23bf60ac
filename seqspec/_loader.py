"""Reading a spec: safe YAML with line numbers, validation, shape checks, and one located problem per mistake."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import ValidationError

from . import _safeio
from . import _spec as s
from ._errors import Problem, SpecError, describe as _describe, field_path
from ._rules import chain_length, format_shape
from ._shapes import ModelInfo, ShapeError, infer

DEFAULT_MAX_PARAMS = 1_000_000_000
# Values one sample creates (the input and every layer's output). `seqspec check` holds every
# layer's output for a few samples in float64 on two frameworks at once: 1e8 values is 0.8 GB
# per copy, about what a laptop can spare, while the largest example spec makes a few million.
DEFAULT_MAX_VALUES = 100_000_000
# The longest input `seqspec check` feeds a model of free length (seqspec._check.input_lengths):
# the budget counts the sample it will really make. Defined here, where validation needs them
# without NumPy; seqspec._check feeds them.
LONGEST_CHECK_LENGTH = 500
LONGEST_CHECK_LENGTH_WAVENET = 2000
MAX_BYTES = 1_000_000
MAX_NODES = 20_000  # values after alias expansion: a spec has a few hundred
MAX_ALIASED = 10_000  # of those, values made again by an alias: a spec has a few dozen
MAX_DEPTH = 64

_STANDARD_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")
}

# libyaml's parser is ten times faster than the pure-Python one; both are safe loaders.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Path_ = tuple  # a path of keys and indices into the document


class Source:
    """Where every value of one loaded document sits: path -> (line, column), 1-based."""

    def __init__(self, name: str):
        self.name = name
        self.values: dict[Path_, tuple[int, int]] = {}
        self.keys: dict[Path_, tuple[int, int]] = {}

    def mark(self, path: Path_, key: bool = False) -> tuple[int, int]:
        """The position of the value at `path` (its key with key=True), else of the nearest ancestor."""
        table = self.keys if key else self.values
        if path in table:
            return table[path]
        while path:
            path = path[:-1]
            if path in self.values:
                return self.values[path]
        return (1, 1)

    def where(self, path: Path_) -> str:
        line, col = self.mark(path)
        return f"{self.name}:{line}:{col}"


# YAML 1.1 (PyYAML) reads `1e-5` as a string because it wants a dot; YAML 1.2 and every user
# read it as a number. Plain (unquoted) scalars of this form are floats here.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Limit(Exception):
    def __init__(self, node: yaml.Node, message: str):
        self.node, self.message = node, message


class _Builder:
    """Turns a composed YAML node tree into plain data, recording marks and structural problems."""

    def __init__(self, source: Source):
        self.source = source
        self.problems: list[tuple[Path_, yaml.Node, str, str]] = []  # (path, node, field, message)
        self.count = 0
        # A file of many plain values is bounded by MAX_BYTES; only aliases can multiply it, so
        # the count that refuses a document is of values built again from a node already built.
        self.built: set[int] = set()
        self.aliased = 0
        self.constructor = yaml.SafeLoader("")  # only for its scalar constructors and merge-key support

    def build(self, node: yaml.Node, path: Path_, depth: int = 0) -> Any:
        self.count += 1
        if id(node) in self.built:
            self.aliased += 1
        else:
            self.built.add(id(node))
        if self.count > MAX_NODES and self.aliased > MAX_ALIASED:
            raise _Limit(node, f"more than {MAX_NODES:,} values once aliases are expanded (an alias bomb?); refused")
        if depth > MAX_DEPTH:
            raise _Limit(node, f"nested deeper than {MAX_DEPTH} levels (a recursive alias?); refused")
        self.source.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if node.tag not in _STANDARD_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.problems.append((path, node, field_path(path), f"tag {tag!r} is not allowed: a spec is plain data"))
            return None
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)
            out: dict = {}
            first: dict = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                    self.problems.append((path, key_node, field_path(path), "keys must be plain strings"))
                    continue
                key = key_node.value
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                if key in first:
                    where = field_path(path + (key,))
                    self.problems.append(
                        (path + (key,), key_node, where, f"duplicate key {key!r} (first at line {first[key]})")
                    )
                    continue
                first[key] = line
                self.source.keys[path + (key,)] = (line, col)
                out[key] = self.build(value_node, path + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        if node.tag == "tag:yaml.org,2002:str" and not node.style and _EXPONENT_FLOAT.match(node.value):
            return float(node.value)
        return self.constructor.construct_object(node, deep=True)


def _yaml_problem(name: str, err: yaml.YAMLError, text: str = "") -> Problem:
    mark = getattr(err, "problem_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    message = f"{context}, {problem}" if context else problem
    if mark is not None and "cannot start any token" in problem and text[mark.index : mark.index + 1] == "\t":
        message = "a tab character; YAML indents with spaces only"
    if isinstance(err, yaml.reader.ReaderError):
        message = f"not a text file: byte {err.character!r} at position {err.position} is not allowed in YAML"
        line, col = 1, 1
    return Problem(name, line, col, "", f"YAML syntax: {message}")


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _closest(word: Any, options: list[str]) -> Optional[str]:
    """The option `word` most likely meant. Case is ignored: difflib scores 'GRU' 0 against 'gru'."""
    if not isinstance(word, str):
        return None
    lowered = {o.lower(): o for o in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def _hint(word: Any, options: list[str]) -> str:
    close = _closest(word, options)
    return f"; did you mean {close!r}?" if close else ""


def _clean_loc(loc: tuple, data: Any) -> Path_:
    """Drop what Pydantic adds to a location that is not in the document: the union tags."""
    out: list = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and part in (node.get("type"), node.get("source")):
            continue  # a discriminated union's tag
        elif i == len(loc) - 1 and isinstance(node, dict):
            out.append(part)  # a missing or unknown key
            node = None
        else:
            continue
    return tuple(out)


_TRAIN_CLASSES = {"train": s.Train, "target": s.Target, "optimizer": s.Optimizer, "early_stopping": s.EarlyStopping}
_DATA_CLASSES = {"synthetic": s.SyntheticData, "csv": s.CSVData, "npy": s.NpyData, "synthetic_tokens": s.SyntheticTokens}


def _class_at(path: Path_, node: Any) -> Optional[type]:
    """The spec class of the mapping at `path` whose content is `node`."""
    if not path:
        return s.Spec
    last = path[-1]
    if last == "input":
        return s.Input
    if last in _TRAIN_CLASSES and path[0] == "train":
        return _TRAIN_CLASSES[last]
    if not isinstance(node, dict):
        return None
    if last == "data":
        return _DATA_CLASSES.get(node.get("source"))
    classes = s.CELL_CLASSES if last == "cell" else s.LAYER_CLASSES
    for cls in classes:
        if cls.model_fields["type"].annotation.__args__[0] == node.get("type"):
            return cls
    return None


_CELL_KEYS = {k for cls in s.CELL_CLASSES for k in cls.model_fields} - {"type"}
_BELONGS_ELSEWHERE = {
    **{(s.RNN, k): f"; {k} belongs to the cell: write it inside `cell:`" for k in _CELL_KEYS},
    (s.Bidirectional, "return_sequences"): "; return_sequences belongs to the wrapped layer: write it inside `layer:`",
}


def _get(data: Any, path: Path_) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _message(err: dict, path: Path_, data: Any) -> tuple[Path_, str, bool]:
    """(path to point at, message, point at the key rather than the value)."""
    t, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if t == "missing":
        return path, f"missing required key {path[-1]!r}" if path else "missing", False
    if t == "extra_forbidden":
        cls = _class_at(path[:-1], _get(data, path[:-1]))
        known = [k for k in cls.model_fields] if cls else []
        hint = _BELONGS_ELSEWHERE.get((cls, path[-1]), "") or _hint(path[-1], known)
        return path, f"unknown key {path[-1]!r}{hint}", True
    if t in ("union_tag_invalid", "union_tag_not_found"):
        key = ctx.get("discriminator", "'type'").strip("'")
        options = _quoted(ctx.get("expected_tags", ""))
        what = {"source": "data source"}.get(key, "cell type" if path and path[-1] == "cell" else "layer type")
        if t == "union_tag_not_found":
            return path, f"missing required key {key!r} (one of: {', '.join(options)})", False
        tag = ctx.get("tag")
        hint = _hint(tag, options) or f" (known: {', '.join(options)})"
        return path + (key,), f"unknown {what} {tag!r}{hint}", False
    if t == "literal_error":
        options = _quoted(ctx.get("expected", "")) or [ctx.get("expected", "")]
        if path == ("seqspec",):
            return path, f"must be 1 (the format version this seqspec reads), got {_describe(value)}", False
        return path, f"must be one of {', '.join(repr(o) for o in options)}, got {_describe(value)}{_hint(value, options)}", False
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}
    if t in bounds:
        op, key = bounds[t]
        return path, f"must be {op} {ctx[key]}, got {_describe(value)}", False
    kinds = {
        "int_type": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "bool_type": "true or false",
        "string_type": "a string",
        "list_type": "a list",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
        "int_parsing": "an integer",
    }
    if t in kinds:
        return path, f"must be {kinds[t]}, got {_describe(value)}", False
    if t == "too_short":
        return path, f"must have at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}", False
    if t == "too_long":
        return path, f"must have at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}", False
    if t == "string_pattern_mismatch" and path == ("name",):
        return path, f"must be lower case letters, digits and underscores, starting with a letter; got {value!r}", False
    msg = err["msg"]
    return path, msg[0].lower() + msg[1:], False


def _validation_problems(name: str, source: Source, data: Any, error: ValidationError) -> list[Problem]:
    problems = []
    seen = set()
    errors = error.errors()
    suggested = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            path = _clean_loc(err["loc"], data)
            cls = _class_at(path[:-1], _get(data, path[:-1]))
            close = _closest(str(path[-1]), list(cls.model_fields) if cls else [])
            if close:
                suggested.add(path[:-1] + (close,))
    for err in errors:
        if err["type"] == "missing" and _clean_loc(err["loc"], data) in suggested:
            continue  # the misspelled key's "did you mean" says it already
        path = _clean_loc(err["loc"], data)
        path, message, at_key = _message(err, path, data)
        if err["type"] == "missing":
            line, col = source.mark(path[:-1])
        else:
            line, col = source.mark(path, key=at_key)
        field = field_path(path) or "(top level)"
        if (line, col, field, message) in seen:
            continue
        seen.add((line, col, field, message))
        problems.append(Problem(name, line, col, field, message))
    return problems


def _is_inline(source: str) -> bool:
    """Whether a string is YAML text rather than a path: a file that exists is always read."""
    if os.path.lexists(source):
        return False
    if "\n" in source:
        return True
    text = source.strip()
    return text.startswith("{") and text.endswith("}")


def _read(source: Union[str, os.PathLike]) -> tuple[str, bytes]:
    """(display name, raw bytes) of a path, or of inline YAML text."""
    if isinstance(source, str) and _is_inline(source):
        raw = source.encode("utf-8")
        if len(raw) > MAX_BYTES:
            raise SpecError(problems=[Problem("<string>", 1, 1, "", f"text is {len(raw):,} bytes; a spec is at most {MAX_BYTES:,}")])
        return "<string>", raw
    name = str(Path(source))
    try:
        return name, _safeio.read_bounded(source, MAX_BYTES)
    except _safeio.TooLarge as e:
        raise SpecError(problems=[Problem(name, 1, 1, "", f"{e}; a spec is at most {MAX_BYTES:,}")]) from None
    except _safeio.Refused as e:
        raise SpecError(problems=[Problem(name, 1, 1, "", str(e))]) from None


def _decode(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        before = raw[: e.start]
        line = before.count(b"\n") + 1
        col = e.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError(
            problems=[Problem(name, line, col, "", f"not UTF-8 text (byte 0x{raw[e.start]:02x}): is this a binary file?")]
        ) from None


def parse(text: str, name: str = "<string>") -> tuple[Any, Source]:
    """Plain data and the marks of every value, from YAML text; SpecError for anything unsafe or malformed."""
    source = Source(name)
    try:
        node = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as e:
        raise SpecError(problems=[_yaml_problem(name, e, text)]) from None
    if node is None:
        raise SpecError(problems=[Problem(name, 1, 1, "", "the file is empty; a spec needs seqspec, name, input and layers")])
    builder = _Builder(source)
    try:
        data = builder.build(node, ())
    except _Limit as e:
        mark = e.node.start_mark
        raise SpecError(problems=[Problem(name, mark.line + 1, mark.column + 1, "", e.message)]) from None
    except yaml.YAMLError as e:
        raise SpecError(problems=[_yaml_problem(name, e, text)]) from None
    if builder.problems:
        problems = [
            Problem(name, n.start_mark.line + 1, n.start_mark.column + 1, field or "(top level)", msg)
            for _, n, field, msg in builder.problems
        ]
        raise SpecError(problems=sorted(problems, key=lambda p: (p.line, p.column)))
    return data, source


def _product(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def over_value_budget(spec: s.Spec, info: ModelInfo, max_values: int) -> Optional[tuple[Path_, str, str]]:
    """(path, field, message) of the input or first layer whose output for one sample has more
    than `max_values` values, else None. Integer arithmetic on the shapes only: nothing is allocated."""
    longest = LONGEST_CHECK_LENGTH_WAVENET if any(layer.type == "wavenet" for layer in spec.layers) else LONGEST_CHECK_LENGTH
    free = (len(info.input_shape) == 3 or spec.input.tokens) and info.input_shape[1] is None

    def count(shape, length: int) -> int:
        return _product(length if d is None else d for d in shape[1:])

    def message(n: int, what: str, shape) -> str:
        return (
            f"one sample makes {n:,} values here ({what} {format_shape(shape)}), "
            f"over the budget of {max_values:,} (raise it with --max-values)"
        )

    n = count(info.input_shape, longest)
    if n > max_values:
        return ("input", "shape"), "input.shape", message(n, "input", info.input_shape)
    ops: list = []
    length = longest
    for layer in info.layers:
        if free and layer.time_map is not None and length is not None:
            ops.extend(layer.time_ops)
            # A length the model cannot take is never fed; the lengths fed are then shorter.
            length = max(chain_length(ops, longest), 1)
        elif layer.time_map is None:
            length = None  # no free length from here on: repeat_vector's is fixed
        n = count(layer.output_shape, length or 1)
        if n > max_values:
            return ("layers", layer.index), f"layers[{layer.index}]", message(n, "output", layer.output_shape)
    return None


def load(
    source: Union[str, os.PathLike], *, max_params: int = DEFAULT_MAX_PARAMS, max_values: int = DEFAULT_MAX_VALUES
) -> s.Spec:
    """Read, validate and shape-check a spec from a path or from YAML text.

    Raises SpecError carrying every located problem found. A spec with more than `max_params`
    parameters, or whose input or any layer's output for one sample has more than `max_values`
    values (a free length counted as the longest `seqspec check` feeds), is refused before
    anything is built.
    """
    if max_params < 0:
        raise SpecError(f"max_params must be >= 0, got {max_params:,}")
    if max_values < 0:
        raise SpecError(f"max_values must be >= 0, got {max_values:,}")
    name, raw = _read(source)
    text = _decode(name, raw)
    data, marks = parse(text, name)
    if not isinstance(data, dict):
        line, col = marks.mark(())
        raise SpecError(
            problems=[Problem(name, line, col, "(top level)", f"must be a mapping with seqspec, name, input and layers; got {_describe(data)}")]
        )
    try:
        spec = s.Spec.model_validate(data)
    except ValidationError as e:
        problems = _validation_problems(name, marks, data, e)
        raise SpecError(problems=sorted(problems, key=lambda p: (p.line, p.column))) from None
    spec._source = marks
    try:
        info = infer(spec)
    except ShapeError as e:
        path = ("input", "shape") if e.index is None else ("layers", e.index)
        line, col = marks.mark(path)
        field = "input.shape" if e.index is None else f"layers[{e.index}]"
        raise SpecError(problems=[Problem(name, line, col, field, e.message)]) from None
    if info.params > max_params:
        line, col = marks.mark(("layers",))
        raise SpecError(
            problems=[
                Problem(
                    name, line, col, "layers",
                    f"the model has {info.params:,} parameters, over the budget of {max_params:,} (raise it with --max-params)",
                )
            ]
        )
    over = over_value_budget(spec, info, max_values)
    if over is not None:
        path, field, message = over
        line, col = marks.mark(path)
        raise SpecError(problems=[Problem(name, line, col, field, message)])
    return spec
