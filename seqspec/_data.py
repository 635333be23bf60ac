"""Training data for `seqspec train`: synthetic, CSV and .npy series, split and turned into inputs and targets.

Every source yields windows of `steps + horizon` values, [n, steps + horizon, features], per split
(train, validation, test); `make_targets` cuts them into the model's input and the target its
`target.kind` asks for, aligned to the model's output steps through the core's time map. NumPy
only: no framework is imported here.
"""

from __future__ import annotations

import csv
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from . import _spec as s
from ._errors import DataError, SpecError
from ._shapes import ModelInfo, ShapeError, TimeMap, format_shape, infer

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Windows:
    """Windows of one series source, each [n, steps + horizon, features], per split; `origin` says where they came from."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    steps: int
    origin: str
    # The training values a scaler is fitted on, [rows, features]: a CSV's training rows, each once
    # (overlapping windows would count the middle of the series more often than its ends).
    # None: every value of the training windows.
    train_values: Optional[np.ndarray] = None

    def split(self, name: str) -> np.ndarray:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def fit_values(self) -> np.ndarray:
        return self.train_values if self.train_values is not None else self.train.reshape(-1, self.train.shape[2])


@dataclass(frozen=True)
class Split:
    """One split as the model sees it: inputs x [n, steps, features] and targets y (see make_targets)."""

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Targets:
    """How targets line up with the model: `aligned[j]` is the input step that output step j forecasts from
    (seq2seq only; None otherwise), `horizon` values ahead of it, of `features` each."""

    kind: str
    horizon: int
    features: int
    aligned: Optional[tuple[int, ...]]

    def future(self, y: np.ndarray) -> np.ndarray:
        """The values forecast from the last aligned step (the window's end for next/horizon), [n, horizon, features]."""
        last = y[:, -1] if self.kind == "seq2seq" else y
        return last.reshape(len(y), self.horizon, self.features)

    @property
    def origin(self) -> Optional[int]:
        """The input step of the last forecast (None: the window's last step)."""
        return None if self.aligned is None else self.aligned[-1]


def _horizon(train: s.Train) -> int:
    return 1 if train.target.kind == "next" else train.target.horizon


def _where(spec: s.Spec, *path) -> str:
    return spec.where("train", *path)


def data_path(spec: s.Spec, path: str) -> Path:
    """A data file's path: absolute as written, else relative to the spec file's folder (the working folder for a spec from text)."""
    p = Path(path).expanduser()
    if p.is_absolute() or spec._source is None:
        return p
    base = Path(spec._source.name).parent
    return base / p if base.is_dir() else p


# --- sources ---------------------------------------------------------------------------------


def synthetic_series(series: int, length: int, seed: int, dtype: str = "float32") -> np.ndarray:
    """The textbook's series, [series, length, 1]: for t in linspace(0, 1, length),
    0.5 sin((t - a1)(10 f1 + 10)) + 0.2 sin((t - a2)(20 f2 + 20)) + 0.1 e.

    Drawn from numpy.random.default_rng(seed) in this order: f1, f2, a1, a2 (each [series, 1],
    uniform in [0, 1)), then the noise e (uniform in [-0.5, 0.5)), [series, length]. The values
    are computed in float64 and rounded once to `dtype`.
    """
    rng = np.random.default_rng(seed)
    f1, f2, a1, a2 = rng.random((4, series, 1))
    t = np.linspace(0.0, 1.0, length)
    out = np.empty((series, length, 1), dtype)
    # In blocks of rows, so that only one block is ever held in float64: the generator fills
    # arrays in order, so drawing the noise block by block gives the same values as one draw.
    block = max(1, (1 << 20) // max(length, 1))
    for lo in range(0, series, block):
        hi = min(series, lo + block)
        values = 0.5 * np.sin((t - a1[lo:hi]) * (f1[lo:hi] * 10 + 10))
        values += 0.2 * np.sin((t - a2[lo:hi]) * (f2[lo:hi] * 20 + 20))
        values += 0.1 * (rng.random((hi - lo, length)) - 0.5)
        out[lo:hi, :, 0] = values
    return out


def _synthetic(spec: s.Spec, data: s.SyntheticData, horizon: int) -> Windows:
    n_train, n_val, n_test = data.split
    if n_train < 1 or n_val < 1:
        raise SpecError(f"{_where(spec, 'data', 'split')}: train.data.split: train and validation need at least one series each, got {data.split}")
    used = n_train + n_val + n_test
    if used > data.series:
        raise SpecError(
            f"{_where(spec, 'data', 'split')}: train.data.split: {data.split} adds up to {used} series, more than the {data.series} of data.series"
        )
    # Only the series the split uses are drawn: the values depend on (seed, sum of split), and
    # are the full set's whenever the split uses every series (the book's 7000 + 2000 + 1000).
    series = synthetic_series(used, data.steps + horizon, data.seed, spec.dtype)
    a, b = n_train, n_train + n_val
    return Windows(series[:a], series[a:b], series[b:used], data.steps, f"synthetic series (seed {data.seed})")


def _fractions(spec: s.Spec, split: list[float], n: int, what: str, path: Path) -> tuple[int, int, int]:
    """Ends of the train, validation and test parts of n items split in order by fractions."""
    if sum(split) > 1.0 + 1e-9:
        raise SpecError(f"{_where(spec, 'data', 'split')}: train.data.split: fractions {split} add up to more than 1")
    a = int(round(n * split[0]))
    b = int(round(n * (split[0] + split[1])))
    end = int(round(n * sum(split)))
    if not 0 < a < b < end:
        raise DataError(f"{path}: {n} {what} are too few to split {split} into non-empty train, validation and test parts")
    return a, b, end


# What one data file may make seqspec allocate: far beyond any series it trains on in memory, and
# a header that asks for more is a typo or a hostile file, not data.
MAX_ARRAY_BYTES = 8 << 30

_DELIMITERS = (",", ";", "\t", "|")


def _show(text: str, limit: int = 20) -> str:
    """A name or cell from a data file, fit for a one-line message: cut to `limit` characters, quoted
    when it holds anything unprintable (a newline inside a quoted cell)."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return cut if cut.isprintable() else repr(cut)


def _size(n: int) -> str:
    for unit, big in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= big:
            return f"{n / big:.3g} {unit}"
    return f"{n} bytes"


def _open_regular(path: Path, text: bool):
    """`path` opened for reading, or a DataError unless it is a regular file.

    The type is checked on the opened descriptor, not the name, and the open does not wait for a
    writer, so a FIFO or a device (/dev/zero) is refused instead of blocking or reading forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DataError(f"{path}: no such data file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else "a device or other special file"
            raise DataError(f"{path}: not a regular file ({kind}), expected a data file")
        return os.fdopen(fd, "r", newline="", encoding="utf-8-sig") if text else os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _columns_shown(names: list[str]) -> str:
    """At most three header names: the path may point at a file that is not data at all (keys, a
    password list), and the message must not echo it."""
    shown = ", ".join(_show(n) for n in names[:3])
    return f"columns: {shown}" if len(names) <= 3 else f"{len(names)} columns: {shown}, ..."


def _delimiter_hint(names: list[str], delimiter: str) -> str:
    if len(names) != 1:
        return ""
    for d in _DELIMITERS:
        if d != delimiter and d in names[0]:
            written = '"\\t"' if d == "\t" else repr(d)
            return f"; the file seems to be separated by {written}, not {delimiter!r}: set train.data.delimiter: {written}"
    return ""


def _read_csv(path: Path, columns: list[str], dtype: str, delimiter: str = ",") -> np.ndarray:
    """The named columns of a CSV file with a header row, [rows, len(columns)]; one-line DataError on any problem."""
    rows, lines = [], []
    try:
        with _open_regular(path, text=True) as f:  # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark
            reader = csv.reader(f, delimiter=delimiter)
            header = None
            for row in reader:
                if any(cell.strip() for cell in row):  # blank lines above the header, as exports leave
                    header = row
                    break
            if header is None:
                raise DataError(f"{path}: empty CSV file, expected a header row naming the columns")
            names = [h.strip() for h in header]
            missing = [c for c in columns if c not in names]
            if missing:
                raise DataError(f"{path}: no column {missing[0]!r} in the header ({_columns_shown(names)}){_delimiter_hint(names, delimiter)}")
            twice = next((c for c in columns if names.count(c) > 1), None)
            if twice is not None:
                raise DataError(f"{path}: the header names column {twice!r} {names.count(twice)} times; rename all but one so that the data is unambiguous")
            index = [names.index(c) for c in columns]
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    continue  # blank lines, as spreadsheets leave at the end
                values = []
                for c, i in zip(columns, index):
                    cell = row[i].strip() if i < len(row) else ""
                    try:
                        value = float(cell)
                    except ValueError:
                        raise DataError(f"{path}: line {reader.line_num}, column {c!r}: {_show(cell)!r} is not a number") from None
                    if not math.isfinite(value):
                        raise DataError(f"{path}: line {reader.line_num}, column {c!r}: {_show(cell)!r} is not a finite number")
                    values.append(value)
                rows.append(values)
                lines.append(reader.line_num)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV: {e}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file: {e.strerror or e}") from None
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    with np.errstate(over="ignore"):  # overflow is reported below, once, naming the line
        array = np.asarray(rows, dtype=dtype)
    # Checked after the cast: 1e39 is a finite Python float but infinite in float32.
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        r, c = bad[0]
        raise DataError(
            f"{path}: line {lines[r]}, column {columns[c]!r}: {rows[r][c]:g} is too large for {dtype} (at most {np.finfo(dtype).max:.4g})"
        )
    return array


def _cut(series: np.ndarray, length: int, stride: int) -> np.ndarray:
    """Windows of `length` rows every `stride` rows of a [rows, features] series, [n, length, features]."""
    starts = np.arange(0, len(series) - length + 1, stride)
    return np.stack([series[i : i + length] for i in starts]) if len(starts) else np.empty((0, length, series.shape[1]), series.dtype)


def _csv(spec: s.Spec, data: s.CSVData, horizon: int) -> Windows:
    path = data_path(spec, data.path)
    series = _read_csv(path, data.columns, spec.dtype, data.delimiter)
    length = data.steps + horizon
    # Split the series itself in time order, then cut each part: no window crosses a boundary,
    # so no validation target was ever seen in training.
    a, b, end = _fractions(spec, data.split, len(series), "rows", path)
    parts = [series[:a], series[a:b], series[b:end]]
    windows = [_cut(part, length, data.stride) for part in parts]
    for name, part, w in zip(SPLITS, parts, windows):
        if len(w) == 0:
            raise DataError(
                f"{path}: the {name} part has {len(part)} rows, fewer than the {length} one window needs (steps {data.steps} + horizon {horizon})"
            )
    return Windows(*windows, data.steps, f"{path} ({len(series)} rows, columns {', '.join(data.columns)})", train_values=parts[0])


def _npy_header(path: Path, f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The shape, Fortran order and dtype an .npy header declares, read before any data."""
    start = f.read(6)
    f.seek(0)
    if start[:4] == b"PK\x03\x04":
        raise DataError(f"{path}: holds an archive of several arrays, expected one .npy array [series, time, features]")
    try:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        # Version 3.0 differs from 2.0 only in allowing UTF-8 field names, which no numeric array has.
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a readable .npy array: {_show(first, 100)}") from None
    return tuple(int(n) for n in shape), bool(fortran), dtype


def _npy(spec: s.Spec, data: s.NpyData, horizon: int) -> Windows:
    path = data_path(spec, data.path)
    try:
        with _open_regular(path, text=False) as f:
            shape, fortran, dtype = _npy_header(path, f)
            offset = f.tell()
            available = os.fstat(f.fileno()).st_size - offset
            if dtype.kind not in "iuf":
                raise DataError(f"{path}: array of dtype {dtype}, expected numbers")
            if len(shape) not in (2, 3):
                raise DataError(f"{path}: array of shape {list(shape)}, expected [series, time, features]")
            need = math.prod(shape) * dtype.itemsize
            if need > available:
                raise DataError(f"{path}: the header declares an array of shape {list(shape)} ({_size(need)}), but the file holds {_size(available)} of data")
            if need == 0:
                raise DataError(f"{path}: array of shape {list(shape)} holds no values")
            n, time = shape[0], shape[1]
            features = shape[2] if len(shape) == 3 else 1
            steps = data.steps if data.steps is not None else time - horizon
            if steps < 1 or time < steps + horizon:
                raise DataError(f"{path}: series of {time} time steps are shorter than steps + horizon = {max(steps, 1) + horizon}")
            length = steps + horizon
            used = n * length * features * np.dtype(spec.dtype).itemsize
            if used > MAX_ARRAY_BYTES:
                raise DataError(f"{path}: {n} series of {length} steps and {features} feature(s) take {_size(used)} as {spec.dtype}, more than seqspec loads ({_size(MAX_ARRAY_BYTES)})")
            # Mapped, not read: only the `length` steps each series uses are copied out.
            mapped = np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
            if len(shape) == 2:
                mapped = mapped[..., np.newaxis]  # [series, time]: one feature
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, once
                array = np.array(mapped[:, :length], dtype=spec.dtype)
            del mapped
    except OSError as e:
        raise DataError(f"{path}: cannot read the file: {e.strerror or e}") from None
    except MemoryError:
        raise DataError(f"{path}: the array does not fit in memory ({_size(used)} as {spec.dtype})") from None
    # Checked after the cast: 1e39 is finite in a float64 file but infinite in float32.
    if not np.all(np.isfinite(array)):
        raise DataError(f"{path}: the array holds NaN or infinite values, or values too large for {spec.dtype} (at most {np.finfo(spec.dtype).max:.4g})")
    a, b, end = _fractions(spec, data.split, len(array), "series", path)
    return Windows(array[:a], array[a:b], array[b:end], steps, f"{path} ({len(array)} series of {time} steps)")


def load_windows(spec: s.Spec) -> Windows:
    """The windows of the spec's `train.data`, each steps + horizon long, split in order.

    Raises DataError (one line, naming the file and the problem) for a missing or malformed data
    file, SpecError for a `train:` section that cannot describe valid data.
    """
    train = spec.train
    if train is None:
        raise SpecError(f"{spec.where()}: the spec has no train: section, so seqspec train does not know its data or target")
    if len(spec.input.shape) != 2:
        raise SpecError(f"{spec.where('input', 'shape')}: input.shape: training on series needs a sequence input [time_steps, features]")
    horizon = _horizon(train)
    data = train.data
    if data.source == "synthetic":
        windows = _synthetic(spec, data, horizon)
    elif data.source == "csv":
        windows = _csv(spec, data, horizon)
    else:
        windows = _npy(spec, data, horizon)
    features = windows.train.shape[2]
    want_steps, want_features = spec.input.shape
    if want_features != features:
        raise DataError(f"{windows.origin}: the data has {features} feature(s) per step, the spec's input.shape asks for {want_features}")
    if want_steps is not None and want_steps != windows.steps:
        raise SpecError(
            f"{spec.where('input', 'shape')}: input.shape: {want_steps} time steps, but train.data cuts windows of {windows.steps} steps"
        )
    return windows


# --- scaling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scaler:
    """The per-feature map the model trains in, scaled = (value - shift) / factor, fitted on the training split.

    `standard`: shift the training mean, factor the training standard deviation; `minmax`: shift the
    training minimum, factor max - min (the training values land in [0, 1]); `none`: the identity.
    A feature that is constant in training gets factor 1: it is only shifted (to 0), never divided
    by zero. Arrays whose last axis holds features, or `horizon` steps of them step-major (the
    targets), are mapped alike.
    """

    kind: str = "none"
    shift: tuple[float, ...] = ()
    factor: tuple[float, ...] = ()

    @property
    def identity(self) -> bool:
        return self.kind == "none"

    def _per_feature(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float64)
        return a.reshape(*a.shape[:-1], -1, len(self.shift))

    def scale(self, a: np.ndarray, dtype: str) -> np.ndarray:
        """`a` in the units the model trains in, as `dtype` (unchanged for `none`)."""
        if self.identity:
            return a
        shape = np.shape(a)
        return ((self._per_feature(a) - self.shift) / self.factor).reshape(shape).astype(dtype)

    def unscale(self, a: np.ndarray) -> np.ndarray:
        """`a` back in the data's own units, in float64 (unchanged for `none`)."""
        if self.identity:
            return a
        shape = np.shape(a)
        return (self._per_feature(a) * self.factor + self.shift).reshape(shape)

    @property
    def units(self) -> str:
        """What units scores are reported in, for a report to print next to them."""
        if self.identity:
            return "scores in the data's own units (the data is not scaled)"
        return f"scores in the data's own units; the model trains on {self.kind}-scaled data, so the per-epoch losses are in scaled units"

    def as_json(self) -> dict:
        """The fitted parameters, for metrics.json: enough to scale new data as the model was trained."""
        if self.identity:
            return {"scale": "none"}
        names = ("mean", "std") if self.kind == "standard" else ("min", "range")
        return {
            "scale": self.kind,
            "fitted_on": "train",
            names[0]: list(self.shift),
            names[1]: list(self.factor),
            "scaled": f"(value - {names[0]}) / {names[1]}",
        }


def fit_scaler(kind: str, values: np.ndarray, origin: str) -> Scaler:
    """The `kind` scaler (none, standard, minmax) of training values [rows, features], fitted per feature in float64."""
    if kind == "none":
        return Scaler()
    v = np.asarray(values, np.float64)
    if kind == "standard":
        shift, factor = v.mean(axis=0), v.std(axis=0)
    else:
        shift = v.min(axis=0)
        factor = v.max(axis=0) - shift
    # Exactly constant, not merely a small std: the mean of constant values can round, and
    # dividing by that rounding error's std would blow the feature up.
    constant = np.ptp(v, axis=0) == 0
    factor = np.where(constant, 1.0, factor)
    if not (np.all(np.isfinite(shift)) and np.all(np.isfinite(factor))):
        raise DataError(f"{origin}: the training values are too large to {kind}-scale in float64")
    return Scaler(kind, tuple(float(x) for x in shift), tuple(float(x) for x in factor))


# --- targets ---------------------------------------------------------------------------------


def model_info(spec: s.Spec, steps: int) -> ModelInfo:
    """The core's view of the model on inputs of exactly `steps` steps (fixes 'same'-padding alignment)."""
    fixed = spec.model_copy(update={"input": s.Input(shape=[steps, spec.input.shape[-1]])})
    try:
        return infer(fixed)
    except ShapeError as e:
        raise SpecError(f"{spec.where('layers', e.index or 0)}: on windows of {steps} steps: {e.message}") from None


def plan_targets(spec: s.Spec, steps: int, features: int) -> Targets:
    """How the targets of `spec.train.target` line up with the model's output, checked against its shape.

    next: y [n, features], the values after the window. horizon: y [n, horizon * features], the
    `horizon` values after the window, step-major (y[:, k * features + f] = series[steps + k, f]).
    seq2seq: y [n, T_out, horizon * features] with y[:, j, k * features + f] = series[a_j + 1 + k, f],
    a_j = the core's time_map.last_input_step(j), at most steps - 1: output step j forecasts from
    the last real input step it sees, so convolutions that shorten or stride the sequence need no
    hand cropping. A step aligned to no input step (left zero padding) is an error: its target
    would come from the future.
    """
    target = spec.train.target
    horizon = _horizon(spec.train)
    if target.kind == "next" and target.horizon != 1:
        raise SpecError(f"{_where(spec, 'target', 'horizon')}: train.target.horizon: kind next forecasts 1 value; use kind horizon for {target.horizon}")
    info = model_info(spec, steps)
    out = info.output_shape
    width = horizon * features
    if target.kind == "seq2seq":
        tmap = info.time_map
        if len(out) != 3 or tmap is None:
            raise SpecError(
                f"{_where(spec, 'target', 'kind')}: train.target.kind: seq2seq needs an output sequence aligned to the input, "
                f"but the model's output is {format_shape(out)}"
            )
        aligned = tuple(tmap.last_input_step(j) for j in range(info.output_length(steps)))
        if aligned and aligned[0] < 0:
            raise SpecError(_leak(spec, info, sum(1 for a in aligned if a < 0)))
        # An output step that also sees padding after the window's end forecasts from the last
        # real step it sees ('same' padding, right zero padding).
        aligned = tuple(min(a, steps - 1) for a in aligned)
        expected = (None, len(aligned), width)
    else:
        aligned = None
        expected = (None, width)
    if tuple(out) != expected:
        what = {"next": "the next value", "horizon": f"the next {horizon} values", "seq2seq": f"the next {horizon} values at every output step"}
        raise SpecError(
            f"{_where(spec, 'target', 'kind')}: train.target: {what[target.kind]} of {features} feature(s) is a target "
            f"{format_shape(expected)}, but the model's output is {format_shape(out)}"
        )
    return Targets(target.kind, horizon, features, aligned)


def _leak(spec: s.Spec, info: ModelInfo, n: int) -> str:
    """The error for output steps aligned to no past or present input step, at the layer that causes it."""
    tmap = TimeMap()
    index = len(info.layers) - 1
    for li in info.layers:
        tmap = tmap.then(li.time_map) if li.time_map is not None else tmap
        if (tmap.unaligned_steps() or 0) > 0:
            index = li.index
            break
    steps = "output step 0 is" if n == 1 else f"output steps 0 to {n - 1} are"
    return (
        f"{spec.where('layers', index)}: layers[{index}] ({info.layers[index].type}): {steps} aligned to no past or present "
        f"input step (left zero padding), so their seq2seq targets would come from the future; pad on the right, or crop those steps"
    )


def make_split(windows: np.ndarray, steps: int, targets: Targets) -> Split:
    """Inputs [n, steps, features] and targets (see plan_targets) of windows [n, steps + horizon, features]."""
    n, _, f = windows.shape
    x = windows[:, :steps]
    h = targets.horizon
    if targets.kind == "seq2seq":
        ahead = np.asarray(targets.aligned)[:, None] + 1 + np.arange(h)[None, :]  # [T_out, horizon]
        y = windows[:, ahead].reshape(n, len(targets.aligned), h * f)
    else:
        y = windows[:, steps : steps + h].reshape(n, h * f)
    return Split(np.ascontiguousarray(x), np.ascontiguousarray(y))


def naive_forecast(x: np.ndarray, targets: Targets) -> np.ndarray:
    """The naive baseline, shaped like the targets: every forecast repeats the last input value it sees."""
    if targets.kind == "seq2seq":
        last = x[:, list(targets.aligned)]  # [n, T_out, features]
    else:
        last = x[:, -1]  # [n, features]
    return np.tile(last, targets.horizon)


# --- losses and metrics, for the final report (each backend computes its own during training) ---


def score(name: str, y: np.ndarray, pred: np.ndarray) -> float:
    """mse, mae, or last_time_step_mse (the mse of the last output step; plain mse without a time axis)."""
    y64, p64 = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    if name == "last_time_step_mse":
        if y64.ndim == 3:
            y64, p64 = y64[:, -1], p64[:, -1]
        name = "mse"
    err = p64 - y64
    return float(np.mean(np.square(err)) if name == "mse" else np.mean(np.abs(err)))


@dataclass(frozen=True)
class Prepared:
    """Everything a run needs besides the framework: the splits, the target plan and the spec to build.

    `windows` holds the data as read; `splits` are what the model trains on, scaled by `scaler`
    (fitted on the training split; `scaler.as_json()` is its record for metrics.json).
    """

    spec: s.Spec
    windows: Windows
    targets: Targets
    splits: dict[str, Split]
    scaler: Scaler = Scaler()

    @property
    def units(self) -> str:
        """What `evaluate`'s scores are in, one line for the report."""
        return self.scaler.units
