"""Equivalence in CI: the pytest plugin (`pytest --seqspec`), check's --junit-xml and --baseline, the pre-commit hooks."""

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

import seqspec
from seqspec.cli import EXIT_DRIFT, main

ROOT = Path(__file__).resolve().parent.parent

# Small and fixed-length, so that a check is a fraction of a second; layers[1] is the LSTM a test corrupts.
TINY = """\
seqspec: 1
name: tiny
seed: 1
input: {shape: [6, 2]}
layers:
  - {type: dense, units: 3}
  - {type: lstm, units: 3, return_sequences: true}
  - {type: flatten}
  - {type: dense, units: 1}
"""
BROKEN = "seqspec: 1\nname: broken\ninput: {shape: [6, 2]}\nlayers:\n  - {type: dense, units: '3'}\n"


def _plugin_args() -> list[str]:
    """-p for the plugin unless pytest already loads it from the installed pytest11 entry point."""
    installed = any(ep.name == "seqspec" for ep in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "seqspec._pytest_entry"]


@pytest.fixture(autouse=True)
def _keep_imported_modules(monkeypatch):
    # pytester drops from sys.modules what a test (and each in-process run) imported; TensorFlow
    # and NumPy abort when imported twice in one process, and Keras imports parts of itself on
    # first use: keep every module.
    from _pytest.pytester import SysModulesSnapshot

    init = SysModulesSnapshot.__init__
    monkeypatch.setattr(SysModulesSnapshot, "__init__", lambda self, preserve=None: init(self, preserve=lambda name: True))


@pytest.fixture
def frameworks():
    return seqspec.get_backend("keras"), seqspec.get_backend("torch")


@pytest.fixture
def corrupt_torch(monkeypatch, frameworks):
    """Torch's set_weights scales one LSTM recurrent kernel by 1.01: the models then differ at layers[1]."""
    torch_backend = frameworks[1]
    original = torch_backend.set_weights

    def corrupt(model, spec, weights):
        weights = dict(weights)
        weights["layers.1.recurrent_kernel_f"] = weights["layers.1.recurrent_kernel_f"] * 1.01
        original(model, spec, weights)

    monkeypatch.setattr(torch_backend, "set_weights", corrupt)


@pytest.fixture
def project(pytester):
    (pytester.path / "specs").mkdir()
    (pytester.path / "specs" / "tiny.yaml").write_text(TINY)
    (pytester.path / "specs" / "broken.yaml").write_text(BROKEN)
    (pytester.path / "specs" / "invalid").mkdir()  # as `seqspec check specs/`: subfolders are not collected
    (pytester.path / "specs" / "invalid" / "also_broken.yaml").write_text(BROKEN)
    return pytester


def _run(pytester, *args):
    return pytester.runpytest_inprocess(*_plugin_args(), "-p", "no:randomly", *args)


def test_plugin_collects_validate_then_each_direction_and_dtype(project, frameworks):
    result = _run(project, "--seqspec", "specs", "--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line]
    assert ids == [
        "specs/broken.yaml::validate",
        "specs/tiny.yaml::validate",
        "specs/tiny.yaml::keras->torch[float32]",
        "specs/tiny.yaml::torch->keras[float32]",
        "specs/tiny.yaml::keras->torch[float64]",
        "specs/tiny.yaml::torch->keras[float64]",
    ]


def test_plugin_runs_the_checks_and_reports_a_spec_error_located_without_a_traceback(project, frameworks):
    result = _run(project, "--seqspec", "specs", "-v")
    result.assert_outcomes(passed=5, failed=1)
    out = result.stdout.str()
    assert "specs/broken.yaml:5:26: layers[0].units: must be an integer, got the string '3'" in out
    assert "Traceback" not in out and "_pytest_plugin.py" not in out and "_loader.py" not in out


def test_plugin_reports_the_first_divergent_layer_the_difference_and_the_tolerance(project, corrupt_torch):
    result = _run(project, "--seqspec", "specs/tiny.yaml", "--seqspec-dtypes", "float32", "-k", "keras-")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert re.search(r"specs/tiny\.yaml: keras->torch\[float32\]: the Keras and PyTorch models differ", out)
    assert re.search(r"keras_to_torch: outputs differ by [0-9.e-]+ at batch [13], length 6 \(tolerance 1e-05\)", out)
    assert re.search(r"first divergent layer: specs/tiny\.yaml:7:5: layers\[1\] \(lstm\) differs by", out)
    assert re.search(r"largest difference [0-9.e-]+, [0-9.e+]+ times its tolerance \(1e-05 for float32", out)
    assert "Traceback" not in out and "_check.py" not in out


def test_plugin_with_k_x_and_last_failed(project, corrupt_torch):
    # -x: the first failure (broken.yaml's validate) ends the run.
    result = _run(project, "--seqspec", "specs", "-x", "--seqspec-dtypes", "float32")
    result.assert_outcomes(failed=1)
    # -k picks items by direction and dtype.
    result = _run(project, "--seqspec", "specs", "-k", "torch- and float32")
    result.assert_outcomes(failed=1)
    assert "tiny.yaml::torch->keras[float32]" in result.stdout.str()
    # --lf re-runs only what failed before: the two failures above, not the 4 other items.
    result = _run(project, "--seqspec", "specs", "--lf", "-v")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "broken.yaml::validate FAILED" in out and "tiny.yaml::torch->keras[float32] FAILED" in out
    assert "tiny.yaml::keras->torch[float32]" not in out


def test_plugin_ini_options(project, frameworks):
    project.makeini("[pytest]\nseqspec_paths = specs/tiny.yaml\nseqspec_dtypes = float64\n")
    result = _run(project, "--seqspec", "--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line]
    assert ids == ["specs/tiny.yaml::validate", "specs/tiny.yaml::keras->torch[float64]", "specs/tiny.yaml::torch->keras[float64]"]


def test_plugin_usage_errors_are_one_line(project):
    result = _run(project, "--seqspec", "specs", "--seqspec-dtypes", "float16")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--seqspec-dtypes: 'float16' given; the dtypes are float32, float64" in result.stderr.str()
    result = _run(project, "--seqspec")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "no spec files" in result.stderr.str()


def test_plugin_without_the_option_collects_no_spec(project):
    result = _run(project, "specs", "--collect-only", "-q")
    assert "yaml" not in result.stdout.str()


def test_plugin_under_xdist(project):
    # Workers must collect the same items and carry a spec error's report back; validation items
    # import no framework, which keeps the two worker processes cheap.
    result = project.runpytest_subprocess(*_plugin_args(), "--seqspec", "specs", "-n", "2", "-k", "validate")
    result.assert_outcomes(passed=1, failed=1)
    assert "specs/broken.yaml:5:26: layers[0].units: must be an integer" in result.stdout.str()


def test_plugin_entry_point_imports_nothing_of_seqspec_or_a_framework():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"seqspec": "seqspec_pytest"}
    assert pyproject["tool"]["setuptools"]["package-dir"]["seqspec_pytest"] == "seqspec/_pytest_entry"
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('seqspec_pytest', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "heavy = sorted(n for n in sys.modules if n.split('.')[0] in ('seqspec', 'pydantic', 'numpy', 'torch', 'tensorflow', 'keras'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "seqspec" / "_pytest_entry" / "__init__.py")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- seqspec check --junit-xml / --baseline ---


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("specs") / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_junit_xml_has_one_testcase_per_spec_and_direction(tiny_path, tmp_path, capsys):
    report = tmp_path / "check.xml"
    assert main(["check", str(tiny_path), str(ROOT / "specs" / "next_linear.yaml"), "--junit-xml", str(report)]) == 0
    suites = ET.parse(report).getroot()
    assert suites.tag == "testsuites" and suites.get("tests") == "4" and suites.get("failures") == "0"
    (suite,) = suites
    assert suite.tag == "testsuite" and suite.get("tests") == "4" and suite.get("errors") == "0"
    cases = [(c.get("classname"), c.get("name")) for c in suite]
    stem = str(tiny_path)[:-5].strip("/").replace("/", ".")
    assert cases[:2] == [(stem, "keras->torch[float32]"), (stem, "torch->keras[float32]")]
    assert all(float(c.get("time")) > 0 and c.find("failure") is None for c in suite)
    assert [p.name for p in tmp_path.iterdir()] == ["check.xml"]  # no temporary left beside it


def test_junit_xml_carries_the_failure_and_a_spec_error(tiny_path, tmp_path, capsys, corrupt_torch):
    report = tmp_path / "check.xml"
    assert main(["check", str(tiny_path), "--junit-xml", str(report)]) == 1
    suite = ET.parse(report).getroot()[0]
    assert suite.get("failures") == "2"
    k2t, t2k = suite
    assert k2t.find("failure").get("message").startswith("keras_to_torch: outputs differ by")
    assert "first divergent layer" in k2t.find("failure").text and "layers[1] (lstm)" in k2t.find("failure").text
    # Each direction carries its own failures: torch->keras reads back what torch was given.
    assert t2k.find("failure").get("message") == "torch: weight layers.1.recurrent_kernel_f does not survive set_weights/get_weights"
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    assert main(["check", str(broken), "--junit-xml", str(report)]) == 2
    (case,) = ET.parse(report).getroot()[0]
    assert case.get("name") == "validate" and "layers[0].units: must be an integer" in case.find("failure").get("message")


def test_junit_xml_path_problems_are_one_line_before_checking(tmp_path, capsys):
    assert main(["check", str(ROOT / "specs" / "next_linear.yaml"), "--junit-xml", str(tmp_path / "no" / "r.xml")]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'no' / 'r.xml'}: the folder {tmp_path / 'no'} does not exist"
    assert main(["check", str(ROOT / "specs" / "next_linear.yaml"), "--junit-xml", str(tmp_path)]) == 2


def test_baseline_reports_drift_with_exit_3(tiny_path, tmp_path, capsys, monkeypatch, frameworks):
    assert main(["check", str(tiny_path), "--json"]) == 0
    (tmp_path / "before.json").write_text(capsys.readouterr().out)
    assert main(["check", str(tiny_path), "--baseline", str(tmp_path / "before.json")]) == 0
    assert "drift" not in capsys.readouterr().err
    # As a framework upgrade might: torch's outputs move by 2e-6, within the tolerance (1e-5) but
    # more than ten times the baseline's rounding (some 1e-7 or less, counted as 1e-7).
    torch_backend = frameworks[1]
    predict = torch_backend.predict
    monkeypatch.setattr(torch_backend, "predict", lambda model, x: predict(model, x) + np.float32(2e-6))
    assert main(["check", str(tiny_path), "--baseline", str(tmp_path / "before.json")]) == EXIT_DRIFT == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"{tiny_path}: drift: keras->torch [float32] max abs diff 2") and err[1].startswith(f"{tiny_path}: drift: torch->keras")
    # Near the tolerance is drift whatever the baseline: 6e-6 is 0.6 of it.
    monkeypatch.setattr(torch_backend, "predict", lambda model, x: predict(model, x) + np.float32(6e-6))
    before = json.loads((tmp_path / "before.json").read_text())
    before[0]["max_abs_diff"] = {"keras_to_torch": 5e-6, "torch_to_keras": 5e-6}
    (tmp_path / "near.json").write_text(json.dumps(before))
    assert main(["check", str(tiny_path), "--baseline", str(tmp_path / "near.json")]) == 3
    assert "(0.6 of the tolerance)" in capsys.readouterr().err


def test_baseline_problems_are_one_line(tiny_path, tmp_path, capsys):
    spec = str(tiny_path)
    assert main(["check", spec, "--baseline", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'none.json'}: no such baseline file (write one with seqspec check --json > {tmp_path / 'none.json'})"
    (tmp_path / "bad.json").write_text('[{"spec": 1,')
    assert main(["check", spec, "--baseline", str(tmp_path / "bad.json")]) == 2
    assert capsys.readouterr().err.strip().startswith(f"{tmp_path / 'bad.json'}:1:")
    (tmp_path / "other.json").write_text('{"a": 1}')
    assert main(["check", spec, "--baseline", str(tmp_path / "other.json")]) == 2
    assert "not a seqspec check --json baseline" in capsys.readouterr().err


def test_a_direction_checked_alone_gives_the_numbers_of_a_full_check(frameworks):
    from seqspec._check import check

    spec = seqspec.load(TINY)
    full = check(spec)
    alone = check(spec, directions=["torch_to_keras"])
    assert alone.directions == ("torch_to_keras",) and list(alone.max_abs_diff) == ["torch_to_keras"]
    assert alone.max_abs_diff["torch_to_keras"] == full.max_abs_diff["torch_to_keras"]
    with pytest.raises(ValueError, match="directions must be some of"):
        check(spec, directions=["keras_to_jax"])


# --- pre-commit hooks ---


def test_pre_commit_hooks_file():
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"seqspec-validate", "seqspec-check"}
    v, c = hooks["seqspec-validate"], hooks["seqspec-check"]
    assert v["entry"] == "seqspec validate" and v["language"] == "python"
    assert c["entry"] == "seqspec check" and c["language"] == "system" and set(c["stages"]) == {"pre-push", "manual"}
    files = re.compile(v["files"])
    assert files.search("specs/x.yaml") and files.search("models/specs/y.yml")
    assert not files.search("specs/invalid/x.yaml") and not files.search(".github/workflows/ci.yml")
