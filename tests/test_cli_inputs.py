"""The command line against what users actually type and do: odd numbers, empty paths, their
environment, Ctrl-C, full disks, ASCII terminals."""

import argparse
import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import seqspec.cli as cli
from seqspec import get_backend
from seqspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEEP_RNN = str(ROOT / "specs" / "deep_rnn.yaml")
NEXT_LINEAR = str(ROOT / "specs" / "next_linear.yaml")


def _cli(*args, env=None, timeout=300, **kw):
    return subprocess.run(
        [sys.executable, "-m", "seqspec.cli", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, **kw
    )


def _one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


# --- numbers: budgets and seeds --------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--max-params", "--max-values"])
@pytest.mark.parametrize("text, value", [("1e9", 10**9), ("1_000_000", 10**6), ("1000000", 10**6), ("2.5e3", 2500), ("0", 0)])
def test_budgets_take_the_notations_of_their_help(flag, text, value):
    args = cli.build_parser().parse_args(["validate", DEEP_RNN, flag, text])
    assert getattr(args, flag[2:].replace("-", "_")) == value


@pytest.mark.parametrize("flag", ["--max-params", "--max-values"])
@pytest.mark.parametrize("text", ["-5", "1.5", "ten", "1e999", ""])
def test_budgets_refuse_negatives_and_non_integers_in_one_line(flag, text, capsys):
    with pytest.raises(SystemExit) as e:
        main(["validate", DEEP_RNN, flag, text])
    assert e.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    line = _one_line(out.err)
    assert line.startswith(f"seqspec validate: argument {flag}: ") and "budget" in line


def test_a_budget_of_1e3_refuses_a_bigger_spec(capsys):
    assert main(["validate", str(ROOT / "specs" / "wavenet.yaml"), "--max-params", "1e3"]) == 2
    assert "over the budget of 1,000" in capsys.readouterr().err


@pytest.mark.parametrize("text, value", [("0", 0), ("42", 42), ("4_294_967_295", 2**32 - 1), ("1e3", 1000)])
def test_seed_type_takes_every_seed_both_backends_take(text, value):
    assert cli.seed_type(text) == value


@pytest.mark.parametrize("text", ["-1", "4294967296", "1e10", "0.5", "x"])
def test_seed_type_refuses_the_rest_in_one_line(text):
    with pytest.raises(argparse.ArgumentTypeError) as e:
        cli.seed_type(text)
    assert "\n" not in str(e.value) and "0 to 4,294,967,295" in str(e.value)


# --- paths that name no spec ---------------------------------------------------------------


def test_a_folder_without_specs_is_an_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["validate", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == f"{tmp_path}: no .yaml files in the folder\n"


def test_check_of_a_folder_without_specs_is_an_error(tmp_path, capsys):
    assert main(["check", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"{tmp_path}: no .yaml files in the folder\n"


@pytest.mark.parametrize("command", ["validate", "summary", "check"])
def test_an_empty_path_is_an_error(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT / "specs")  # '' must not stand for the current folder's specs
    assert main([command, ""]) == 2
    out = capsys.readouterr()
    assert out.out == "" and _one_line(out.err).startswith("'': empty path")


def test_a_name_too_long_for_the_os_is_one_line_exit_2():
    out = _cli("validate", "a" * 5000 + ".yaml", timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    assert _one_line(out.stderr).endswith(":1:1: cannot read the file: File name too long")


# --- compile's output and weights ----------------------------------------------------------


def test_compile_to_a_folder_names_the_folder(tmp_path, capsys):
    assert main(["compile", DEEP_RNN, "--backend", "torch", "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"{tmp_path}: is a folder; name the output file *.pt\n"
    assert list(tmp_path.iterdir()) == []


def test_compile_with_a_folder_as_weights_is_one_line(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["compile", DEEP_RNN, "--backend", "torch", "--weights", str(tmp_path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in _one_line(err)
    assert not out.exists()


def test_write_failure_maps_a_full_disk():
    full = OSError(errno.ENOSPC, "No space left on device")
    assert cli.write_failure(full, "m.pt") == "seqspec: m.pt: no space left on device"
    assert cli.write_failure(RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0: file write failed"), "m.pt") == "seqspec: m.pt: no space left on device"
    assert cli.write_failure(RuntimeError("something else"), "m.pt") is None
    assert cli.write_failure(OSError(errno.EACCES, "Permission denied"), "m.pt") is None


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_compile_onto_a_full_disk_says_so(tmp_path, monkeypatch, capsys):
    # torch's own zip writer writing into /dev/full: its real RuntimeError, mapped.
    monkeypatch.setattr(cli, "atomic_write", lambda path, write, suffix="": write("/dev/full"))
    out = str(tmp_path / "m.pt")
    assert main(["compile", DEEP_RNN, "--backend", "torch", "-o", out]) == 1
    assert capsys.readouterr().err == f"seqspec: {out}: no space left on device\n"


# --- the user's environment ------------------------------------------------------------------


def test_a_users_keras_backend_does_not_break_the_keras_backend(tmp_path):
    # KERAS_BACKEND=torch left in a user's shell: installed here, so Keras would quietly run on it
    # (jax, not installed, would fail Keras's import instead; the CLI forces tensorflow for both).
    out = _cli("compile", NEXT_LINEAR, "--backend", "keras", "-o", str(tmp_path / "m.keras"), env={"KERAS_BACKEND": "torch"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "m.keras").stat().st_size > 0
    # and TensorFlow's import log lines stay out of the CLI's output
    assert out.stderr == "" and out.stdout.endswith("(keras)\n")


def test_a_framework_that_is_installed_but_broken_is_not_called_missing(tmp_path):
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('libtorch_cpu.so: cannot open shared object file\\nmore detail')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = _cli("compile", DEEP_RNN, "--backend", "torch", "-o", str(tmp_path / "m.pt"), env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr == "the torch backend failed to import: libtorch_cpu.so: cannot open shared object file\n"


def test_an_ascii_terminal_gets_escapes_not_an_internal_error(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("seqspec: 1\nname: x\ninput:\n  shape: [null, 1]\nlayers:\n  - {type: densé, units: 1}\n")
    out = _cli("validate", str(spec), env={"PYTHONIOENCODING": "ascii"}, timeout=60)
    assert out.returncode == 2, out.stderr
    line = _one_line(out.stderr)
    assert "dens\\xe9" in line and "internal error" not in line


# --- Ctrl-C ----------------------------------------------------------------------------------


def test_interrupt_during_argument_parsing(monkeypatch, capsys):
    def parser():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", parser)
    assert main(["validate", DEEP_RNN]) == 130
    assert capsys.readouterr().err == "seqspec: interrupted\n"


def test_interrupt_swallowed_by_a_finalizer_still_exits_130(monkeypatch, capsys):
    class Finalizer:
        def __del__(self):
            raise KeyboardInterrupt

    def run(args):
        Finalizer()  # its __del__ runs at once; Python reports "Exception ignored" and goes on
        return 0

    monkeypatch.setattr(cli, "cmd_validate", run)  # build_parser binds the command when it runs
    assert main(["validate", DEEP_RNN]) == 130
    err = capsys.readouterr().err
    assert err == "seqspec: interrupted\n"


_READY = "import sys, seqspec.cli as c; print('ready', flush=True); sys.exit(c.main())"


def _interrupt(args, after: float, tmp_path):
    """Start the program, wait until seqspec is imported and `after` seconds more, send SIGINT."""
    p = subprocess.Popen(
        [sys.executable, "-c", _READY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert p.stdout.readline() == "ready\n"
    time.sleep(after)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


@pytest.mark.skipif(os.name != "posix", reason="SIGINT")
@pytest.mark.parametrize("after", [0.0, 0.05])
def test_ctrl_c_right_after_start(after, tmp_path):
    code, out, err = _interrupt(["check", DEEP_RNN], after, tmp_path)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and err.splitlines()[-1] == "seqspec: interrupted"


@pytest.mark.skipif(os.name != "posix", reason="SIGINT")
@pytest.mark.parametrize("after", [2.0, 8.0])
def test_ctrl_c_during_check(after, tmp_path):
    # All the example specs: still running at 8 s (importing the frameworks at 2 s).
    code, out, err = _interrupt(["check", str(ROOT / "specs")], after, tmp_path)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.splitlines()[-1] == "seqspec: interrupted"


@pytest.mark.skipif(os.name != "posix", reason="SIGINT")
def test_ctrl_c_during_compile_says_so_and_writes_nothing(tmp_path):
    code, out, err = _interrupt(["compile", DEEP_RNN, "--backend", "keras", "-o", "m.keras"], 2.0, tmp_path)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and err.splitlines()[-1] == "seqspec: interrupted"
    assert list(tmp_path.iterdir()) == []


# --- check: progress and depth ---------------------------------------------------------------


def test_check_shows_progress_on_a_terminal_only(monkeypatch, capsys):
    assert main(["check", NEXT_LINEAR]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["check", NEXT_LINEAR]) == 0
    err = capsys.readouterr().err
    assert "checking next_linear: building both models" in err
    assert "checking next_linear: keras->torch, float32, batch 3, 50 steps ..." in err
    assert err.endswith("\r\x1b[K")  # the status line is cleared before the result


def _depth() -> int:
    frame, n = sys._getframe(), 0
    while frame is not None:
        frame, n = frame.f_back, n + 1
    return n


def test_a_keras_graph_deeper_than_the_recursion_limit_compiles(tmp_path, capsys, monkeypatch):
    # Keras's graph walk recurses once per layer: TensorFlow's limit of 3,000 stops it near 2,500
    # layers. The same walk at a tenth of the size, under a limit lowered to match: it fails
    # without the CLI's room for it, and compiles with it (34.5 s in the suite for 3,000 layers, 3 s for 300).
    n = 300
    spec = tmp_path / "deep.yaml"
    spec.write_text("seqspec: 1\nname: deep\ninput:\n  shape: [null, 1]\nlayers:\n" + "  - {type: dense, units: 1}\n" * n)
    out = tmp_path / "deep.keras"
    get_backend("keras")  # TensorFlow sets its own limit at import
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(_depth() + n // 2)
        with monkeypatch.context() as m:
            m.setattr(cli, "_deep_recursion", lambda spec: contextlib.nullcontext())
            assert main(["compile", str(spec), "--backend", "keras", "-o", str(out)]) != 0
        assert "recursion" in capsys.readouterr().err.lower()
        assert not out.exists()
        lowered = sys.getrecursionlimit()
        assert main(["compile", str(spec), "--backend", "keras", "-o", str(out)]) == 0, capsys.readouterr().err
        assert out.stat().st_size > 0
        assert sys.getrecursionlimit() == lowered
    finally:
        sys.setrecursionlimit(limit)


# --- --max-values reaches the loader -----------------------------------------------------------


def _recording_load(seen):
    real = cli._loader.load

    def load(path, **budgets):
        seen.append(budgets)
        return real(path, max_params=budgets["max_params"])

    return load


def test_max_values_is_passed_to_a_loader_that_takes_it(monkeypatch):
    seen = []
    monkeypatch.setattr(cli._loader, "DEFAULT_MAX_VALUES", 123_456, raising=False)
    monkeypatch.setattr(cli._loader, "load", _recording_load(seen))
    assert main(["validate", DEEP_RNN]) == 0
    assert main(["validate", DEEP_RNN, "--max-values", "1e6"]) == 0
    assert [b.get("max_values") for b in seen] == [123_456, 10**6]


# --- Ctrl-C while cli.py imports its own modules ---------------------------------------------

_INTERRUPTED_IMPORT = """
import sys
import seqspec
assert "seqspec._files" not in sys.modules  # cli.py's own import of it is the one interrupted
class Stop:
    def find_spec(self, name, path=None, target=None):
        if name == "seqspec._files":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Stop())
import seqspec.cli
"""


def test_ctrl_c_while_cli_imports_is_one_line_and_130():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "backends")]))
    p = subprocess.run([sys.executable, "-c", _INTERRUPTED_IMPORT], capture_output=True, text=True, env=env, timeout=120)
    assert (p.returncode, p.stdout, p.stderr) == (130, "", "seqspec: interrupted\n")
