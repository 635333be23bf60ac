"""The Python API's promises: value budgets in seqspec.load and in a saved model's stored spec,
seqspec.load_model for either format, and one-line refusals of files that are not models."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path

import pytest

import seqspec

ROOT = Path(__file__).resolve().parent.parent


def _doc(layers, shape, **extra) -> dict:
    return {"seqspec": 1, "name": "t", "input": {"shape": shape}, "layers": layers, **extra}


def _refusal(source, **kw) -> str:
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load(source, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


# --- the value budget --------------------------------------------------------------------------


def test_a_huge_input_is_refused_at_input_shape_without_allocating():
    text = "seqspec: 1\nname: big\ninput:\n  shape: [1000000000, 2]\nlayers:\n  - {type: dense, units: 2}\n"
    tracemalloc.start()
    try:
        message = _refusal(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == (
        "<string>:4:10: input.shape: one sample makes 2,000,000,000 values here "
        "(input [batch, 1000000000, 2]), over the budget of 100,000,000 (raise it with --max-values)"
    )
    assert peak < 20_000_000


def test_a_free_length_counts_as_the_longest_input_check_feeds():
    # 300,000 features a step: 500 steps make 1.5e8 values, over; 7 steps would not be.
    doc = _doc([{"type": "time_distributed", "layer": {"type": "dense", "units": 300_000}}], [None, 1])
    message = _refusal(json.dumps(doc))
    assert "layers[0]: one sample makes 150,000,000 values here (output [batch, null, 300000])" in message
    assert seqspec.load(json.dumps(doc), max_values=150_000_000).layers[0].type == "time_distributed"


def test_a_wavenet_counts_two_thousand_steps():
    wavenet = {"type": "wavenet", "filters": 2, "kernel_size": 2, "dilation_rates": [1, 2]}
    wide = {"type": "conv1d", "filters": 60_000, "kernel_size": 1}
    message = _refusal(json.dumps(_doc([wavenet, wide], [None, 1])))
    assert "layers[1]: one sample makes 120,000,000 values here" in message
    # Without the wavenet the same layer feeds 500 steps: 3e7 values, within the budget.
    seqspec.load(json.dumps(_doc([wide], [None, 1])))


def test_a_strided_layer_is_counted_at_the_length_it_makes():
    # Stride 10 leaves 50 of 500 steps: 5e7 values, within the budget; 500 steps would be 5e8.
    strided = {"type": "conv1d", "filters": 1_000_000, "kernel_size": 10, "strides": 10}
    seqspec.load(json.dumps(_doc([strided], [None, 1])))
    message = _refusal(json.dumps(_doc([strided], [None, 1])), max_values=40_000_000)
    assert "layers[0]: one sample makes 50,000,000 values here (output [batch, null, 1000000])" in message


def test_the_golden_case_is_what_validate_prints():
    expected = (ROOT / "specs/invalid/over_value_budget.expected").read_text()
    assert "layers[1]: one sample makes 500,000,000 values" in expected


def test_every_example_spec_is_within_the_default_budget():
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        seqspec.load(path)


def test_a_negative_value_budget_is_refused():
    assert "max_values must be >= 0" in _refusal(str(ROOT / "specs/wavenet.yaml"), max_values=-1)


def test_the_default_is_public():
    assert seqspec.DEFAULT_MAX_VALUES == 100_000_000


# --- load_model and the backends' load: files that are not models ------------------------------


def test_a_missing_model_file_is_one_line(tmp_path):
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load_model(tmp_path / "nope.pt")
    assert str(e.value).startswith(str(tmp_path / "nope.pt") + ": cannot read the file")
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_is_refused_by_load_model(tmp_path):
    fifo = tmp_path / "m.pt"
    os.mkfifo(fifo)
    with pytest.raises(seqspec.SpecError, match="not a regular file"):
        seqspec.load_model(fifo)


def test_an_unknown_suffix_lists_the_installed_backends(tmp_path):
    path = tmp_path / "m.h5"
    path.write_bytes(b"x")
    with pytest.raises(seqspec.BackendError) as e:
        seqspec.load_model(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    installed = []
    for name in seqspec.backend_names():
        try:
            installed.append(seqspec.get_backend(name).suffix)
        except seqspec.BackendUnavailable:
            pass
    assert installed and all(s in message for s in installed)


# --- torch: the stored spec is checked before anything is built ---------------------------------


def _stored_pt(tmp_path, layers, shape, weights=None) -> Path:
    torch = pytest.importorskip("torch")
    from seqspec_torch._backend import SAVE_FORMAT

    doc = seqspec.load(json.dumps(_doc(layers, shape))).model_dump(mode="json")
    path = tmp_path / "m.pt"
    torch.save({"format": SAVE_FORMAT, "spec": doc, "weights": weights or {}}, path)
    return path


def test_a_small_pt_claiming_a_huge_layer_is_refused_before_building(tmp_path):
    path = _stored_pt(tmp_path, [{"type": "dense", "units": 4}], [8])
    torch = pytest.importorskip("torch")
    d = torch.load(path, weights_only=True)
    d["spec"]["layers"][0]["units"] = 300_000_000  # 2.7e9 parameters, 1.2 kB on disk
    torch.save(d, path)
    assert path.stat().st_size < 4000
    backend = seqspec.get_backend("torch")
    tracemalloc.start()
    try:
        with pytest.raises(seqspec.BackendError) as e:
            backend.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(e.value)
    assert message.startswith(f"{path}: the stored spec: layers: the model has 2,700,000,000 parameters")
    assert "\n" not in message and peak < 50_000_000
    with pytest.raises(seqspec.BackendError, match="over the budget of 1,000"):
        backend.load(path, max_params=1000)


def test_a_pt_over_the_value_budget_is_refused(tmp_path):
    path = _stored_pt(tmp_path, [{"type": "time_distributed", "layer": {"type": "dense", "units": 1000}}], [None, 1])
    backend = seqspec.get_backend("torch")
    with pytest.raises(seqspec.BackendError, match=r"the stored spec: layers\[0\]: one sample makes 500,000 values"):
        backend.load(path, max_values=100_000)
    with pytest.raises(seqspec.WeightsError):  # within the budget it is built, and the empty weights refused
        backend.load(path)


def test_a_pt_with_an_invalid_stored_spec_is_one_line(tmp_path):
    path = _stored_pt(tmp_path, [{"type": "dense", "units": 4}], [8])
    torch = pytest.importorskip("torch")
    d = torch.load(path, weights_only=True)
    d["spec"]["layers"][0]["units"] = "four"
    torch.save(d, path)
    with pytest.raises(seqspec.BackendError) as e:
        seqspec.get_backend("torch").load(path)
    assert str(e.value) == f"{path}: the stored spec: layers[0].units: must be an integer, got the string 'four'"


def test_a_pt_that_is_not_a_torch_file_is_one_line(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "m.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(seqspec.BackendError) as e:
        seqspec.get_backend("torch").load(path)
    assert str(e.value).startswith(f"{path}: not a seqspec torch model") and "\n" not in str(e.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
@pytest.mark.parametrize("name,suffix", [("torch", ".pt"), ("keras", ".keras")])
def test_a_fifo_is_refused_by_the_backends(tmp_path, name, suffix):
    pytest.importorskip(name)
    fifo = tmp_path / ("m" + suffix)
    os.mkfifo(fifo)
    backend = seqspec.get_backend(name)
    done = threading.Event()

    def unblock():
        # Without the check the reader blocks in open(): end that wait with an empty write, so
        # the test fails rather than hangs.
        while not done.wait(0.2):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                continue  # no reader (yet)

    threading.Thread(target=unblock, daemon=True).start()
    try:
        with pytest.raises(seqspec.BackendError) as e:
            backend.load(fifo)
    finally:
        done.set()
    assert str(e.value) == f"{fifo}: not a regular file (a FIFO)"


# --- load_model in a fresh process gives the outputs the model gave before saving ----------------

_FRESH = textwrap.dedent(
    """
    import sys, numpy as np, seqspec
    saved, compiled, backend, x_path, out_path = sys.argv[1:]
    model = seqspec.load_model(saved)
    x = np.load(x_path)
    y = model(x, training=False).numpy() if saved.endswith(".keras") else model(__import__("torch").from_numpy(x)).detach().numpy()
    be = seqspec.get_backend(backend)
    m = be.load(compiled)
    longer = np.random.default_rng(1).standard_normal((5, 31, x.shape[-1])).astype(x.dtype)
    np.savez(out_path, saved=y, compiled=be.predict(m, x), longer=be.predict(m, longer))
    print(type(model).__module__, getattr(model, "training", None))
    """
)


def _fresh(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("name,suffix", [("torch", ".pt")])
def test_saved_and_compiled_models_load_in_a_fresh_process_with_the_same_outputs(tmp_path, name, suffix):
    """seqspec.load_model on a backend's save, and the backend's load on `seqspec compile`'s
    output, in one fresh process (one start of the framework). Keras's: in tests/test_keras_backend.py's
    fresh process, beside the custom layers'."""
    pytest.importorskip(name)
    import numpy as np

    from seqspec.cli import main

    spec_path = ROOT / "specs/peephole_lstm.yaml"
    spec = seqspec.load(spec_path)
    backend = seqspec.get_backend(name)
    model = backend.build(spec)
    x = np.random.default_rng(3).standard_normal((2, 9, spec.input.shape[1])).astype(spec.dtype)
    before = backend.predict(model, x)
    path = tmp_path / ("m" + suffix)
    backend.save(model, spec, path)
    compiled = tmp_path / "out" / f"model{suffix}"
    compiled.parent.mkdir()
    assert main(["compile", str(spec_path), "--backend", name, "-o", str(compiled)]) == 0
    assert [p.name for p in compiled.parent.iterdir()] == [compiled.name]  # nothing beside it
    np.save(tmp_path / "x.npy", x)
    run = _fresh(_FRESH, str(path), str(compiled), name, str(tmp_path / "x.npy"), str(tmp_path / "y.npz"))
    assert run.returncode == 0, run.stderr[-2000:]
    with np.load(tmp_path / "y.npz") as y:
        np.testing.assert_allclose(y["saved"], before, rtol=0, atol=1e-6)
        np.testing.assert_allclose(y["compiled"], backend.predict(backend.build(spec), x), rtol=0, atol=1e-6)
        assert y["longer"].shape == (5, 31, 10)
    if name == "torch":
        assert run.stdout.split()[-1] == "False"  # eval mode, as seqspec.build makes it


def test_keras_load_without_the_registered_layers_is_one_line(tmp_path):
    pytest.importorskip("keras")
    spec = seqspec.load(ROOT / "specs/peephole_lstm.yaml")
    backend = seqspec.get_backend("keras")
    path = tmp_path / "m.keras"
    backend.save(backend.build(spec), spec, path)
    # What a process sees that never registered seqspec's layers (plain keras.saving.load_model).
    script = textwrap.dedent(
        """
        import sys, keras, seqspec
        backend = seqspec.get_backend("keras")
        objects = keras.saving.get_custom_objects()
        for key in [k for k in objects if k.startswith("seqspec>")]:
            del objects[key]
        try:
            backend.load(sys.argv[1])
        except seqspec.BackendError as e:
            print(e)
        """
    )
    run = _fresh(script, str(path))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == (
        f"{path}: needs seqspec's Keras layers: import seqspec_keras, or use seqspec.load_model"
    )


# --- the README's Python API runs as written ----------------------------------------------------


def test_the_readme_python_api_runs(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "load_model" in code and ".train()" in code
    code = code.replace('"specs/', f'"{ROOT.as_posix()}/specs/')
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert run.returncode == 0, run.stderr[-2000:]


def test_a_pt_larger_than_its_model_needs_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = _stored_pt(tmp_path, [{"type": "dense", "units": 4}], [8])
    d = torch.load(path, weights_only=True)
    d["padding"] = torch.zeros(2_000_000)  # 8 MB no layer of the spec reads
    torch.save(d, path)
    backend = seqspec.get_backend("torch")
    with pytest.raises(seqspec.BackendError, match=r"bytes, more than its model 't' needs"):
        backend.load(path)
    with pytest.raises(seqspec.BackendError, match=r"more than any model within the budget of 10 parameters needs"):
        backend.load(path, max_params=10)
