"""Training a classifier (`target: {kind: label}`): the built-in token task, labelled .npy data, and the NumPy scores both backends are reported with.

One class per series. `binary_crossentropy`: labels 0/1, the model outputs one probability
[batch, 1] (a sigmoid). `sparse_categorical_crossentropy`: integer ids 0 .. C-1, the model
outputs C probabilities [batch, C] (a softmax). `accuracy` is Keras's: a probability above 0.5
for binary, the argmax for sparse. The naive baseline predicts the training split's class
frequencies for every series (the best constant forecast: its accuracy is the majority class's).
NumPy only: no framework is imported here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from . import _data
from . import _spec as s
from ._errors import DataError, SpecError
from ._shapes import format_shape, infer

# Keras's backend.epsilon(): its cross-entropies clip probabilities to [eps, 1 - eps].
EPSILON = 1e-7

# The built-in token task (SyntheticTokens): ids 1..8 are "positive", 9..16 "negative", the rest neutral.
POSITIVE = range(1, 9)
NEGATIVE = range(9, 17)


def synthetic_tokens(data: s.SyntheticTokens) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [series, steps] int32, labels [series] float 0/1) of the built-in sentiment-style task.

    Each row has a length drawn uniformly from min_steps .. steps, then 0 (padding) to the end. Its
    label is drawn first; a row holds 1 to length / 3 sentiment tokens, a strict majority of them of
    the label's polarity (1: positive), at random places among neutral tokens: a model must find
    and count them wherever they sit in rows of any length.
    """
    rng = np.random.default_rng(data.seed)
    n, steps = data.series, data.steps
    x = np.zeros((n, steps), dtype=np.int32)
    labels = rng.integers(0, 2, size=n)
    neutral = np.arange(NEGATIVE.stop, data.vocabulary)
    for row in range(n):
        length = int(rng.integers(min(data.min_steps, steps), steps + 1))
        x[row, :length] = rng.choice(neutral, size=length)
        k = int(rng.integers(1, max(1, length // 3) + 1))
        majority = k // 2 + 1
        good = rng.choice(list(POSITIVE), size=k)
        bad = rng.choice(list(NEGATIVE), size=k)
        words = np.concatenate([good[:majority], bad[: k - majority]] if labels[row] else [bad[:majority], good[: k - majority]])
        x[row, rng.choice(length, size=k, replace=False)] = words
    return x, labels.astype(np.float64)


def _read_npy(spec: s.Spec, path: Path) -> np.ndarray:
    """One numeric .npy array, checked as the series loader checks its files."""
    with _data._open_regular(path, text=False) as f:
        shape, fortran, dtype = _data._npy_header(path, f)
        if dtype.kind not in "iuf":
            raise DataError(f"{path}: array of dtype {dtype}, expected numbers")
        need = math.prod(shape) * dtype.itemsize
        if need > _data.MAX_ARRAY_BYTES:
            raise DataError(f"{path}: the array takes {_data._size(need)}, more than seqspec loads ({_data._size(_data.MAX_ARRAY_BYTES)})")
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable .npy array: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _npy_labelled(spec: s.Spec, data: s.NpyData) -> tuple[np.ndarray, np.ndarray, str, Path]:
    path, labels_path = _data.data_path(spec, data.path), _data.data_path(spec, data.labels)
    x, labels = _read_npy(spec, path), _read_npy(spec, labels_path)
    if spec.input.tokens:
        if x.ndim != 2 or x.dtype.kind not in "iu":
            raise DataError(f"{path}: the spec's input is token ids: expected an integer array [series, time] padded with 0, got {x.dtype} of shape {list(x.shape)}")
        vocabulary = spec.layers[0].input_dim
        if x.size and (x.min() < 0 or x.max() >= vocabulary):
            raise DataError(f"{path}: token ids run from {x.min()} to {x.max()}; the embedding's input_dim {vocabulary} takes 0 .. {vocabulary - 1}")
    else:
        if x.ndim == 2:
            x = x[..., np.newaxis]
        if x.ndim != 3:
            raise DataError(f"{path}: array of shape {list(x.shape)}, expected [series, time, features]")
        if not np.all(np.isfinite(x)):
            raise DataError(f"{path}: the array holds NaN or infinite values")
    if labels.ndim != 1 or len(labels) != len(x):
        raise DataError(f"{labels_path}: expected one label per series ({len(x)}), got an array of shape {list(labels.shape)}")
    return x, labels, f"{path} ({len(x)} series of {x.shape[1]} steps) with labels {labels_path}", path


def _classes(spec: s.Spec, labels: np.ndarray, origin: str) -> tuple[np.ndarray, int]:
    """The training targets for the loss: [n, 1] floats 0/1 (binary) or [n] int64 ids (sparse); and the class count."""
    loss = spec.train.loss
    if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)) or (labels.size and labels.min() < 0):
        raise DataError(f"{origin}: labels must be class ids 0, 1, 2, ... (or 0/1 floats)")
    if loss == "binary_crossentropy":
        if labels.size and labels.max() > 1:
            raise DataError(f"{origin}: binary_crossentropy takes labels 0 and 1, got up to {labels.max():g}; use sparse_categorical_crossentropy")
        return labels.astype(spec.dtype)[:, None], 2
    return labels.astype(np.int64), int(labels.max()) + 1 if labels.size else 1


def _check_output(spec: s.Spec, steps: int, classes: int) -> None:
    fixed = spec.model_copy(update={"input": spec.input.model_copy(update={"shape": [steps] + spec.input.shape[1:]})})
    out = infer(fixed).output_shape
    where = spec.where("train", "target", "kind")
    if spec.train.loss == "binary_crossentropy":
        if tuple(out) != (None, 1):
            raise SpecError(f"{where}: train.target: binary_crossentropy scores one probability per series [batch, 1], but the model's output is {format_shape(out)}")
    elif len(out) != 2 or out[1] < classes:
        raise SpecError(
            f"{where}: train.target: sparse_categorical_crossentropy over {classes} classes needs an output [batch, {classes}] "
            f"(or more classes), but the model's output is {format_shape(out)}"
        )


def refuse_output_mask(spec: s.Spec) -> None:
    """SpecError when a mask reaches the model's output: Keras would weight the training loss by it
    (each masked step left out), which seqspec train does not reproduce."""
    mask = infer(spec).masks.at_output
    if mask is not None:
        last = len(spec.layers) - 1
        raise SpecError(
            f"{spec.where('layers', last)}: layers[{last}]: the mask of layers[{mask.origin}] ({mask.origin_type}) reaches the model's "
            "output, where Keras would leave the masked steps out of the loss; seqspec train does not: end the masked part "
            "(a recurrent layer without return_sequences, or global_avg_pool1d)"
        )


def prepare_labels(spec: s.Spec, seed: Optional[int] = None):
    """The Prepared run of a classifier: its splits (in order, as the series sources split), no
    scaling of token ids, float series scaled as `data.scale` says."""
    data = spec.train.data
    if data.source == "synthetic_tokens":
        if not spec.input.tokens:
            raise SpecError(f"{spec.where('input')}: input: synthetic_tokens are token ids: set input.dtype to int32 and input.shape to [null]")
        vocabulary = spec.layers[0].input_dim
        if vocabulary < data.vocabulary:
            raise SpecError(f"{spec.where('layers', 0)}: layers[0]: the embedding's input_dim {vocabulary} is smaller than train.data.vocabulary {data.vocabulary}")
        x, labels = synthetic_tokens(data)
        origin = f"synthetic_tokens ({data.series} series of up to {data.steps} steps, seed {data.seed})"
        a, b = data.split[0], data.split[0] + data.split[1]
        end = b + data.split[2]
        if end > data.series or not 0 < a < b < end:
            raise SpecError(f"{spec.where('train', 'data', 'split')}: train.data.split: {data.split} must be three non-empty parts of at most {data.series} series")
        scale = "none"
    else:
        x, labels, origin, path = _npy_labelled(spec, data)
        a, b, end = _data._fractions(spec, data.split, len(x), "series", path)
        scale = "none" if spec.input.tokens else data.scale
    steps = x.shape[1]
    if spec.input.shape[0] is not None and spec.input.shape[0] != steps:
        raise SpecError(f"{spec.where('input', 'shape')}: input.shape: {spec.input.shape[0]} time steps, but the data's series have {steps}")
    if not spec.input.tokens and x.shape[2] != spec.input.shape[-1]:
        raise DataError(f"{origin}: the data has {x.shape[2]} feature(s) per step, the spec's input.shape asks for {spec.input.shape[-1]}")
    y, classes = _classes(spec, labels, origin)
    _check_output(spec, steps, classes)
    x = x.astype(spec.input.dtype or spec.dtype)
    parts = {"train": slice(0, a), "validation": slice(a, b), "test": slice(b, end)}
    windows = _data.Windows(x[:a], x[a:b], x[b:end], steps, origin)
    scaler = _data.Scaler() if scale == "none" else _data.fit_scaler(scale, windows.fit_values(), origin)
    splits = {name: _data.Split(np.ascontiguousarray(scaler.scale(x[part], spec.dtype)), np.ascontiguousarray(y[part])) for name, part in parts.items()}
    targets = _data.Targets("label", 1, classes, None)
    run_seed = seed if seed is not None else (spec.seed if spec.seed is not None else 0)
    return _data.Prepared(spec.model_copy(update={"seed": run_seed}), windows, targets, splits, scaler)


def score(name: str, y: np.ndarray, prob: np.ndarray) -> float:
    """binary_crossentropy, sparse_categorical_crossentropy (probabilities clipped to [EPSILON,
    1 - EPSILON], as Keras) or accuracy, the mean over series. y: [n, 1] 0/1 (binary) or [n] ids."""
    p = np.clip(np.asarray(prob, np.float64), EPSILON, 1 - EPSILON)
    binary = np.asarray(y).ndim == 2
    if name == "accuracy":
        hit = (p > 0.5) == (np.asarray(y) > 0.5) if binary else np.argmax(prob, axis=-1) == np.asarray(y)
        return float(np.mean(hit))
    if name == "binary_crossentropy":
        y64 = np.asarray(y, np.float64)
        return float(np.mean(-(y64 * np.log(p) + (1 - y64) * np.log(1 - p))))
    if name == "sparse_categorical_crossentropy":
        p = p / np.sum(p, axis=-1, keepdims=True) if p.shape[-1] > 1 else p
        return float(np.mean(-np.log(np.take_along_axis(p, np.asarray(y)[:, None], axis=-1))))
    raise ValueError(f"{name!r} does not score a classifier")


def naive_probabilities(train_y: np.ndarray, n: int, width: int) -> np.ndarray:
    """The training split's class frequencies, predicted for each of n series: [n, 1] (binary) or [n, width]."""
    if train_y.ndim == 2:
        return np.full((n, 1), float(np.mean(train_y)))
    freq = np.bincount(train_y, minlength=width)[:width] / max(len(train_y), 1)
    return np.tile(freq, (n, 1))


def evaluate_labels(backend, model, prepared, plan, predict) -> tuple[dict, dict]:
    """(model, naive) scores {split: {loss, metric...}}, the same NumPy code for every backend."""
    names = (plan.loss, *plan.metrics)
    model_scores, naive_scores = {}, {}
    train_y = prepared.splits["train"].y
    for split_name, split in prepared.splits.items():
        if len(split.x) == 0:
            continue
        prob = predict(backend, model, split.x)
        naive = naive_probabilities(train_y, len(split.x), prob.shape[-1])
        model_scores[split_name] = {n: score(n, split.y, prob) for n in names}
        naive_scores[split_name] = {n: score(n, split.y, naive) for n in names}
    return model_scores, naive_scores
