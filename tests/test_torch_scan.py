"""The torch backend's scans (hand-written backward passes) against autograd and the plain loop."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import spec_of

import seqspec

torch = pytest.importorskip("torch")
from seqspec_torch import _cells, _scan  # noqa: E402

backend = seqspec.get_backend("torch")


def _leaves(seed: int, *shapes):
    g = torch.Generator().manual_seed(seed)
    return [(0.6 * torch.randn(s, generator=g, dtype=torch.float64)).requires_grad_() for s in shapes]


# --- each Function against finite differences ---------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 6])
def test_peephole_scan_gradients(steps):
    u = 4
    args = _leaves(steps, (3, steps, 4 * u), (4 * u, u), (u,), (u,), (u,))
    assert torch.autograd.gradcheck(_scan.peephole_lstm, args)


@pytest.mark.parametrize("steps", [1, 2, 6])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_reset_after_scan_gradients(steps, bias):
    u = 3
    xp, weight, b = _leaves(steps, (2, steps, 3 * u), (3 * u, u), (3 * u,))
    args = (xp, weight, b if bias else None)
    assert torch.autograd.gradcheck(_scan.gru_reset_after, args)


@pytest.mark.parametrize("steps", [1, 2, 6])
def test_gru_reset_before_scan_gradients(steps):
    u = 3
    args = _leaves(steps, (2, steps, 3 * u), (3 * u, u))
    assert torch.autograd.gradcheck(_scan.gru_reset_before, args)


def test_scan_forward_is_the_same_with_and_without_gradients():
    # Inference runs the steps without keeping the gates; the values must not differ at all.
    u = 5
    xp, weight, p_i, p_f, p_o = _leaves(0, (4, 7, 4 * u), (4 * u, u), (u,), (u,), (u,))
    with torch.no_grad():
        inference = _scan.peephole_lstm(xp, weight, p_i, p_f, p_o)
    assert torch.equal(inference, _scan.peephole_lstm(xp, weight, p_i, p_f, p_o).detach())


# --- whole layers: scan against the plain loop, outputs and every gradient --------------------

SCAN_CASES = [
    {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 4}},
    {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 4, "use_bias": False}},
    {"type": "gru", "units": 4, "reset_after": False},
    {"type": "gru", "units": 4, "reset_after": False, "use_bias": False},
    {"type": "gru", "units": 4},
    {"type": "gru", "units": 4, "use_bias": False},
    {"type": "bidirectional", "layer": {"type": "gru", "units": 3, "reset_after": False, "return_sequences": True}},
]


def _case_id(layer: dict) -> str:
    inner = layer.get("cell") or layer.get("layer") or layer
    return f"{layer['type']}-{inner['type']}-after{inner.get('reset_after', True)}-bias{inner.get('use_bias', True)}"


def _count_scans(monkeypatch) -> dict:
    calls = {"n": 0}
    for name in ("peephole_lstm", "gru_reset_after", "gru_reset_before"):
        original = getattr(_scan, name)

        def counted(*args, _original=original):
            calls["n"] += 1
            return _original(*args)

        monkeypatch.setattr(_scan, name, counted)
    return calls


def _plain(model) -> None:
    for layer in model.modules():
        if isinstance(layer, _cells.Recurrent):
            layer.use_fused = layer.use_scan = False


@pytest.mark.parametrize("steps", [1, 9])
@pytest.mark.parametrize("layer", SCAN_CASES, ids=_case_id)
def test_scan_equals_loop(layer, steps, monkeypatch):
    sequences = layer if layer["type"] == "bidirectional" else {**layer, "return_sequences": True}
    spec = spec_of([sequences, {"type": "dense", "units": 2}], [None, 3], dtype="float64")
    model = backend.build(spec)
    rng = np.random.default_rng(steps)
    x, r = rng.standard_normal((3, steps, 3)), rng.standard_normal((3, steps, 2))
    calls = _count_scans(monkeypatch)
    y1, dx1, dw1 = backend.gradients(model, spec, x, r)
    assert calls["n"] > 0  # the scan did run
    _plain(model)
    y2, dx2, dw2 = backend.gradients(model, spec, x, r)
    assert np.max(np.abs(y1 - y2)) <= 1e-12
    assert np.max(np.abs(dx1 - dx2)) <= 1e-12
    assert sorted(dw1) == sorted(dw2)
    for name in dw1:
        assert np.max(np.abs(dw1[name] - dw2[name])) <= 1e-12, name


@pytest.mark.parametrize("layer", SCAN_CASES[:4], ids=_case_id)
def test_scan_equals_loop_with_input_dropout_in_training(layer):
    inner = layer.get("cell", layer)
    spec = spec_of([{**layer, "cell": {**inner, "dropout": 0.3}} if "cell" in layer else {**layer, "dropout": 0.3}], [None, 3], dtype="float64")
    model = backend.build(spec)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((4, 8, 3)))

    def step():
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(11)
        y = model(x)
        y.square().sum().backward()
        return y.detach(), [p.grad.clone() for p in model.parameters()]

    y1, g1 = step()
    _plain(model)
    y2, g2 = step()
    assert torch.max(torch.abs(y1 - y2)) <= 1e-12
    for a, b in zip(g1, g2):
        assert torch.max(torch.abs(a - b)) <= 1e-12
    model.eval()
    with torch.no_grad():
        assert torch.max(torch.abs(y1 - model(x))) > 1e-3  # the dropout did act


@pytest.mark.parametrize(
    "layer",
    [
        {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 4, "recurrent_dropout": 0.2}},
        {"type": "gru", "units": 4, "reset_after": False, "recurrent_dropout": 0.2},
        {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 4, "activation": "relu"}},
        {"type": "gru", "units": 4, "reset_after": False, "recurrent_activation": "hard_sigmoid"},
    ],
    ids=["peephole-recurrent-dropout", "gru-recurrent-dropout", "peephole-relu", "gru-hard-sigmoid"],
)
def test_scan_is_not_taken_where_it_does_not_apply(layer, monkeypatch):
    calls = _count_scans(monkeypatch)
    spec = spec_of([layer], [None, 3], dtype="float64")
    model = backend.build(spec)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 5, 3)))
    model.train()
    model(x).sum().backward()
    assert calls["n"] == 0


@pytest.mark.parametrize(
    "layer",
    [{"type": "gru", "units": 4}, {"type": "rnn", "cell": {"type": "peephole_lstm", "units": 4}}],
    ids=["gru-nn.GRU", "peephole_lstm-loop"],
)
def test_scan_trains_small_layers_on_the_cpu_and_nothing_else(layer, monkeypatch):
    # The scan for gradients through small layers; nn.GRU or the loop for inference and big layers.
    calls = _count_scans(monkeypatch)
    inner = layer.get("cell", layer)
    wide = {**inner, "units": _cells.SCAN_MAX_SIZE // 2 + 1}
    small = backend.build(spec_of([layer], [None, 3], dtype="float64"))
    big = backend.build(spec_of([{**layer, "cell": wide} if "cell" in layer else wide], [None, 3], dtype="float64"))
    x = torch.zeros(2, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        small(x)
    big(x).sum().backward()
    assert calls["n"] == 0
    small(x).sum().backward()
    assert calls["n"] == 1


def test_ln_simple_rnn_inference_carries_its_state_whole():
    # Without gradients the float64 state is not split into float32 hi + lo parts; the outputs
    # must still round to the same float32 values, to an ulp, over a long sequence.
    spec = spec_of([{"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": 6}, "return_sequences": True}], [None, 2])
    model = backend.build(spec)
    x = torch.from_numpy(np.random.default_rng(4).standard_normal((3, 500, 2)).astype("float32"))
    with torch.no_grad():
        whole = model(x)
    split = model(x).detach()  # parameters require gradients: the hi + lo loop
    assert whole.dtype == split.dtype == torch.float32
    assert torch.max(torch.abs(whole - split)) <= 1.2e-7


def test_reset_before_gru_always_scans(monkeypatch):
    calls = _count_scans(monkeypatch)
    model = backend.build(spec_of([{"type": "gru", "units": 4, "reset_after": False}], [None, 3], dtype="float64"))
    with torch.no_grad():
        model(torch.zeros(2, 5, 3, dtype=torch.float64))
    assert calls["n"] == 1
