"""Files and values that a user (or an attacker) can hand to `load` and `load_weights`: each is one
located SpecError line, read in bounded time and memory, and nothing else escapes."""

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import seqspec
from seqspec import _loader
from seqspec._weights import check_weights
from seqspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEEP_RNN = ROOT / "specs" / "deep_rnn.yaml"
needs_posix = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX")


def _child(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that cannot hang the suite or eat the machine's memory.

    Today's reader blocks on a FIFO and reads /dev/zero until memory runs out: a thread could not
    be stopped, a child is killed at `timeout` and capped at 2 GiB of address space.
    """
    def cap_memory():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=cap_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"still reading {args} after {timeout} s")


LOAD_SPEC = """
    import sys, seqspec
    try:
        seqspec.load(sys.argv[1])
    except seqspec.SpecError as e:
        print(e)
        sys.exit(2)
"""

LOAD_WEIGHTS = """
    import sys, seqspec
    spec = seqspec.load(sys.argv[2])
    try:
        seqspec.load_weights(sys.argv[1], spec)
    except seqspec.SpecError as e:
        print(e)
        sys.exit(2)
"""


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


# --- 1. non-regular spec files, and reads bounded by what arrives ---------------------------


@needs_posix
def test_a_fifo_as_spec_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    out = _child(LOAD_SPEC, str(fifo), timeout=15)
    assert out.returncode == 2, out.stderr
    assert out.stdout == f"{fifo}:1:1: not a regular file (a FIFO)\n"


@needs_posix
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_as_spec_is_refused_before_a_byte_is_read():
    out = _child(LOAD_SPEC, "/dev/zero", timeout=15)
    assert out.returncode == 2, out.stderr[-500:]
    assert out.stdout == "/dev/zero:1:1: not a regular file (a character device)\n"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_a_file_that_misreports_its_size_is_read_no_further_than_the_limit(monkeypatch):
    # /proc files stat as 0 bytes and hold more: the size limit must count bytes read, not trust stat.
    assert os.stat("/proc/self/status").st_size == 0
    requested = []
    real_read = os.read

    def counting_read(fd, n):
        requested.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(_loader, "MAX_BYTES", 64)
    monkeypatch.setattr(os, "read", counting_read)
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load("/proc/self/status")
    assert _one_line(e.value) == "/proc/self/status:1:1: file is more than 64 bytes; a spec is at most 64"
    assert 0 < sum(requested) <= 65


def test_an_oversized_regular_file_is_refused_by_its_size(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (_loader.MAX_BYTES + 1))
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load(big)
    assert _one_line(e.value) == f"{big}:1:1: file is 1,000,001 bytes; a spec is at most 1,000,000"


def test_inline_text_is_held_to_the_same_size_limit():
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load("#" * _loader.MAX_BYTES + "\n")
    assert _one_line(e.value) == "<string>:1:1: text is 1,000,001 bytes; a spec is at most 1,000,000"


# --- 2. weights files ------------------------------------------------------------------------


def _safetensors(path: Path, tensors: dict) -> Path:
    """Write a .safetensors file by hand (8-byte little-endian header length, JSON header, data),
    so that dtypes NumPy cannot hold (bfloat16, float8) can be written at all."""
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


@pytest.fixture(scope="module")
def deep_rnn():
    return seqspec.load(DEEP_RNN)


def test_a_folder_as_weights_names_the_path_and_the_problem(tmp_path, deep_rnn):
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load_weights(str(tmp_path), deep_rnn)
    assert _one_line(e.value) == f"{tmp_path}: cannot read the file: it is a folder"


@needs_posix
def test_a_fifo_as_weights_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)
    out = _child(LOAD_WEIGHTS, str(fifo), str(DEEP_RNN), timeout=20)
    assert out.returncode == 2, out.stderr[-500:]
    assert out.stdout == f"{fifo}: not a regular file (a FIFO)\n"


@needs_posix
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_as_weights_is_refused():
    out = _child(LOAD_WEIGHTS, "/dev/zero", str(DEEP_RNN), timeout=20)
    assert out.returncode == 2, out.stderr[-500:]
    assert out.stdout == "/dev/zero: not a regular file (a character device)\n"


@pytest.mark.parametrize(
    "dtype, word, itemsize",
    [("BF16", "bfloat16", 2), ("F8_E4M3", "float8_e4m3", 1), ("F16", "float16", 2), ("I32", "int32", 4), ("C64", "complex64", 8)],
)
def test_weights_of_a_dtype_other_than_float32_or_float64_name_the_tensor(tmp_path, deep_rnn, dtype, word, itemsize):
    path = _safetensors(tmp_path / "w.safetensors", {"layers.0.bias": (dtype, [20], b"\0" * (20 * itemsize))})
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load_weights(str(path), deep_rnn)
    assert _one_line(e.value) == f"{path}: weights are float32 or float64; got layers.0.bias ({word})"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_weights_holding_nan_or_infinity_name_the_tensor(tmp_path, deep_rnn, value):
    weights = seqspec.initial_weights(deep_rnn)
    weights["layers.1.recurrent_kernel"][2, 3] = value
    path = str(tmp_path / "w.safetensors")
    seqspec.save_weights(weights, path, deep_rnn)
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load_weights(path, deep_rnn)
    assert _one_line(e.value) == f"{path}: weights hold NaN or infinity: layers.1.recurrent_kernel (1 of 400)"


def test_finite_float64_weights_still_load_cast_to_the_spec_dtype(tmp_path, deep_rnn):
    weights = seqspec.initial_weights(deep_rnn, dtype="float64")
    path = str(tmp_path / "w.safetensors")
    seqspec.save_weights(weights, path, deep_rnn)
    loaded = seqspec.load_weights(path, deep_rnn)
    assert list(loaded) == sorted(weights) and all(v.dtype == np.float32 for v in loaded.values())
    np.testing.assert_allclose(loaded["layers.0.kernel"], weights["layers.0.kernel"], rtol=1e-6)


def test_complex_weights_are_refused_by_check_weights_and_save_weights(tmp_path, deep_rnn):
    weights = seqspec.initial_weights(deep_rnn)
    weights["layers.2.kernel"] = weights["layers.2.kernel"].astype(np.complex128) + 1j
    with pytest.raises(seqspec.SpecError) as e:
        check_weights(deep_rnn, weights)
    assert _one_line(e.value) == "weights: does not fit spec 'deep_rnn': complex, not real: layers.2.kernel (complex128)"
    weights["layers.2.kernel"] = weights["layers.2.kernel"].astype(np.complex64)  # safetensors stores C64
    path = tmp_path / "w.safetensors"
    for spec in (deep_rnn, None):
        with pytest.raises(seqspec.SpecError) as e:
            seqspec.save_weights(weights, str(path), spec)
        assert "layers.2.kernel (complex64)" in _one_line(e.value)
    assert list(tmp_path.iterdir()) == []


def test_weights_for_another_spec_give_counts_and_a_few_names(tmp_path, deep_rnn):
    wavenet = seqspec.load(ROOT / "specs" / "wavenet.yaml")
    path = str(tmp_path / "w.safetensors")
    seqspec.save_weights(seqspec.initial_weights(wavenet), path)
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load_weights(path, deep_rnn)
    assert _one_line(e.value) == (
        f"{path}: does not fit spec 'deep_rnn': "
        "missing layers.0.kernel, layers.0.recurrent_kernel, layers.0.bias and 4 more; "
        "unexpected layers.0.stack0_d1.dilated.bias, layers.0.stack0_d1.dilated.kernel, layers.0.stack1_d2.dilated.bias and 13 more; "
        "layers.1.kernel is (1, 20, 10), the spec needs (20, 20); layers.1.bias is (10,), the spec needs (20,)"
    )


# --- 3. a path is a path, even when it starts with `{` --------------------------------------


def test_an_existing_file_whose_name_starts_with_a_brace_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("{x}.yaml", "{a: 1}"):
        Path(name).write_text(DEEP_RNN.read_text())
        assert seqspec.load(name).name == "deep_rnn"


def test_a_missing_file_whose_name_starts_with_a_brace_is_reported_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load("{x}.yaml")
    assert _one_line(e.value) == "{x}.yaml:1:1: cannot read the file: No such file or directory"


def test_flow_yaml_text_is_still_inline_yaml():
    doc = {"seqspec": 1, "name": "flow", "input": {"shape": [None, 1]}, "layers": [{"type": "dense", "units": 1}]}
    assert seqspec.load(json.dumps(doc)).name == "flow"


# --- 4. paths the OS refuses -----------------------------------------------------------------


def _unreadable(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text("seqspec: 1\n")
    path.chmod(0)
    return str(path), "Permission denied"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda tmp: ("a" * 5000 + ".yaml", "File name too long"), id="name_too_long"),
        pytest.param(lambda tmp: ("spec\0.yaml", "embedded null byte"), id="nul_byte"),
        pytest.param(lambda tmp: (str(tmp), "it is a folder"), id="folder"),
        pytest.param(_unreadable, id="permission_denied"),
    ],
)
def test_a_path_the_os_refuses_is_one_spec_error_line(tmp_path, make, monkeypatch):
    path, why = make(tmp_path)
    if why == "Permission denied" and os.geteuid() == 0:
        # root reads a mode-0 file: the OS's refusal is what is under test, so make the OS refuse.
        from seqspec import _safeio

        real_open = os.open

        def refuse(p, flags, *args):
            if os.fspath(p) == path:
                raise PermissionError(13, "Permission denied", path)
            return real_open(p, flags, *args)

        monkeypatch.setattr(_safeio.os, "open", refuse)
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load(path)
    assert _one_line(e.value) == f"{path}:1:1: cannot read the file: {why}"


def test_validate_of_a_nul_path_exits_2(capsys):
    assert main(["validate", "spec\0.yaml"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "spec\0.yaml:1:1: cannot read the file: embedded null byte\n")


def test_validate_of_a_name_too_long_exits_2(capsys):
    name = "a" * 5000 + ".yaml"
    assert main(["validate", name]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(name) and "File name too long" in err


# --- 5. the alias-bomb guard is about aliases, not size --------------------------------------


def test_ten_thousand_layers_without_aliases_are_not_an_alias_bomb(tmp_path):
    path = tmp_path / "deep.yaml"
    head = "seqspec: 1\nname: deep\ninput:\n  shape: [null, 1]\nlayers:\n"
    path.write_text(head + "  - {type: dense, units: 1}\n" * 10_000)
    assert path.stat().st_size < _loader.MAX_BYTES
    spec = seqspec.load(path)
    assert len(spec.layers) == 10_000


def test_a_few_aliases_in_a_large_file_are_fine(tmp_path):
    head = "seqspec: 1\nname: deep\ninput:\n  shape: [null, 1]\nlayers:\n  - &d {type: dense, units: 1}\n"
    text = head + "  - {type: dense, units: 1}\n" * 9_000 + "  - *d\n" * 1_000
    assert len(seqspec.load(text).layers) == 10_001


def test_merge_keys_still_work():
    text = (
        "seqspec: 1\nname: merged\ninput:\n  shape: [null, 1]\n"
        "layers:\n  - &rnn {type: simple_rnn, units: 4, return_sequences: true}\n  - {<<: *rnn}\n  - *rnn\n"
    )
    spec = seqspec.load(text)
    assert [layer.units for layer in spec.layers] == [4, 4, 4] and spec.layers[2].return_sequences


def test_an_alias_bomb_after_many_plain_values_is_still_refused():
    # Many written values must not buy a larger expansion: what is counted is values made by aliases.
    plain = "pad: [" + ", ".join(["1"] * 30_000) + "]\n"
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    bomb += "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load(plain + bomb)
    assert "values once aliases are expanded (an alias bomb?); refused" in _one_line(e.value)


# --- 6. did-you-mean ignores case ------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, expected",
    [
        ({"type": "GRU", "units": 2}, "layers[0].type: unknown layer type 'GRU'; did you mean 'gru'?"),
        ({"type": "LSTM", "units": 2}, "layers[0].type: unknown layer type 'LSTM'; did you mean 'lstm'?"),
        ({"type": "simple_rnn", "units": 2, "activation": "ReLU"}, "layers[0].activation: unknown activation 'ReLU'; did you mean 'relu'?"),
        ({"type": "dense", "UNITS": 2}, "layers[0].UNITS: unknown key 'UNITS'; did you mean 'units'?"),
    ],
)
def test_did_you_mean_ignores_case(layer, expected):
    doc = {"seqspec": 1, "name": "t", "input": {"shape": [None, 1]}, "layers": [layer]}
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load(json.dumps(doc))
    # The key's hint stands for the "missing 'units'" line too: one line per mistake.
    assert [p.field + ": " + p.message for p in e.value.problems] == [expected]


# --- 7. the parameter budget -----------------------------------------------------------------


def test_a_negative_max_params_is_a_clear_error():
    with pytest.raises(seqspec.SpecError) as e:
        seqspec.load(DEEP_RNN, max_params=-1)
    assert _one_line(e.value) == "max_params must be >= 0, got -1"
