"""Test helpers shared by the backend tests: build one node in a backend and check it against the core."""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np

import seqspec


def spec_of(layers: list[dict], shape: list, *, seed: Optional[int] = 0, dtype: str = "float32", name: str = "t") -> seqspec.Spec:
    """A spec of `layers` on inputs of `shape` ([time, features] or [features], or a whole `input:`
    mapping such as {"shape": [None], "dtype": "int32"}), loaded as a user's would be."""
    given = shape if isinstance(shape, dict) else {"shape": shape}
    doc: dict[str, Any] = {"seqspec": 1, "name": name, "dtype": dtype, "input": given, "layers": layers}
    if seed is not None:
        doc["seed"] = seed
    return seqspec.load(json.dumps(doc))


def check_node(backend_name: str, layers: list[dict], shape: list, *, time: int = 7, batch: int = 3, dtype: str = "float32"):
    """Build `layers` in a backend and check what the core promised about it.

    Checks: the output shape equals the core's (with `time` steps where the length is free), the
    framework's (trainable, non-trainable) parameter counts equal the core's, the canonical
    weights the model reports are exactly the seeded ones it was built from, in the layout's
    names and shapes, and the output is finite. Returns (spec, model, output).
    """
    backend = seqspec.get_backend(backend_name)
    spec = spec_of(layers, shape, dtype=dtype)
    info = seqspec.infer(spec)
    model = backend.build(spec)
    x_shape = (batch, *[(time if d is None else d) for d in spec.input.shape])
    if spec.input.tokens:
        x = np.random.default_rng(1).integers(0, spec.layers[0].input_dim, x_shape).astype(spec.input.dtype)
    else:
        x = np.random.default_rng(1).standard_normal(x_shape).astype(dtype)
    y = backend.predict(model, x)
    sequence = len(x_shape) == 3 or spec.input.tokens
    out_len = info.output_length(time if spec.input.shape[0] is None else spec.input.shape[0]) if sequence else None
    expected = tuple(batch if i == 0 else (out_len if d is None else d) for i, d in enumerate(info.output_shape))
    assert y.shape == expected, f"{backend_name}: output shape {y.shape}, core says {expected}"
    assert y.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(y))
    assert backend.count_params(model) == (info.trainable_params, info.non_trainable_params)
    want = seqspec.initial_weights(spec)
    got = backend.get_weights(model, spec)
    assert list(got) == list(want) or sorted(got) == sorted(want), f"names differ: {sorted(set(got) ^ set(want))}"
    for name, value in want.items():
        assert got[name].shape == value.shape, f"{name}: {got[name].shape} != {value.shape}"
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    return spec, model, y


def examples(full: int) -> int:
    """A property's Hypothesis example count: `full` under `--hypothesis-profile=full`, a quarter
    of it (at least 2) under the suite's default "fast" profile (see conftest.py)."""
    from hypothesis import settings

    return max(2, round(full * settings.default.max_examples / 100))
