"""The seqspec command line: exit codes, output formats, atomic writes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seqspec.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_validate_all_examples_ok(capsys):
    assert main(["validate", str(ROOT / "specs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(list((ROOT / "specs").glob("*.yaml")))
    assert all(": ok: " in line for line in lines)
    assert any(line.endswith("conv_gru, 4 layers, 5,350 params") for line in lines)


def test_validate_mixed_exits_2_and_reports_each_file(capsys):
    code = main(["validate", str(ROOT / "specs" / "deep_rnn.yaml"), str(ROOT / "specs" / "invalid" / "missing_key.yaml")])
    captured = capsys.readouterr()
    out, err = captured.out.splitlines(), captured.err.splitlines()
    assert code == 2
    assert out == [out[0]] and out[0].endswith("ok: deep_rnn, 3 layers, 1,282 params")
    assert len(err) == 1 and "missing required key 'units'" in err[0]


def test_validate_missing_file_is_one_line(capsys):
    assert main(["validate", "no/such/spec.yaml"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.strip() == "no/such/spec.yaml:1:1: cannot read the file: No such file or directory"


def test_summary_json(capsys):
    assert main(["summary", str(ROOT / "specs" / "conv_gru.yaml"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "conv_gru" and d["params"] == 5350
    assert d["trainable_params"] == 5350 and d["non_trainable_params"] == 0
    assert d["input_shape"] == [None, None, 1] and d["output_shape"] == [None, None, 10]
    assert [layer["type"] for layer in d["layers"]] == ["conv1d", "gru", "gru", "time_distributed"]
    assert d["layers"][0]["output_shape"] == [None, None, 20] and d["layers"][0]["params"] == 100
    assert d["time_mapping"]["stride"] == 2 and d["time_mapping"]["last_input_step_of_output_0"] == 3


def test_summary_table(capsys):
    assert main(["summary", str(ROOT / "specs" / "wavenet.yaml")]) == 0
    out = capsys.readouterr().out
    assert "wavenet" in out and "6,010" in out
    assert "receptive field 31 steps" in out and "output length T" in out


def test_schema_prints_json(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"].startswith("seqspec")


def test_schema_output_is_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "s.json"
    target.write_text("old")

    def boom(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    import seqspec.cli as cli

    try:
        cli.atomic_write(str(target), boom)
    except RuntimeError:
        pass
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_unknown_backend_suggests(capsys):
    import seqspec

    try:
        seqspec.get_backend("kears")
    except seqspec.SpecError as e:
        assert "did you mean 'keras'?" in str(e)
    else:
        raise AssertionError("no error")


def test_console_script_validate_is_quiet_and_fast_path():
    out = subprocess.run(
        [sys.executable, "-m", "seqspec.cli", "validate", str(ROOT / "specs" / "invalid" / "object_tag.yaml")],
        capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert out.stdout == "" and len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr


def test_backend_without_its_framework_names_the_extra():
    # torch made unimportable in a fresh interpreter: the CLI says which extra to install, in one line.
    code = (
        "import sys; sys.modules['torch'] = None; from seqspec.cli import main; "
        f"sys.exit(main(['compile', {str(ROOT / 'specs' / 'deep_rnn.yaml')!r}, '--backend', 'torch', '-o', 'never.pt']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "the torch backend needs torch, which is not installed: pip install 'seqspec[torch]'"
    assert not Path("never.pt").exists()


def test_train_refuses_a_seed_neither_backend_takes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", str(ROOT / "specs" / "seq2seq_lstm.yaml"), "--backend", "torch", "--seed", str(2**32)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and err.count("\n") == 1


def test_validate_says_one_layer_not_one_layers(tmp_path, capsys):
    path = tmp_path / "one.yaml"
    path.write_text("seqspec: 1\nname: one\ninput: {shape: [3]}\nlayers: [{type: dense, units: 2}]\n")
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok: one, 1 layer, 8 params\n"


def test_ctrl_c_while_the_installed_script_imports_seqspec_is_one_line():
    # The console script's target imports nothing; a Ctrl-C landing while it imports seqspec
    # (Pydantic, the spec classes: the first tenth of a second) is one line and exit 130.
    code = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'seqspec':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "import seqspec_cli\n"
        "sys.exit(seqspec_cli.main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (130, "", "seqspec: interrupted\n")


def test_the_installed_script_runs_the_cli():
    out = subprocess.run(["seqspec", "validate", str(ROOT / "specs" / "next_linear.yaml")], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr) == (0, "") and out.stdout.endswith("ok: next_linear, 2 layers, 51 params\n")
