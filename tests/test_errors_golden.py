"""Golden tests: each specs/invalid/NAME.yaml gives exactly the lines of NAME.expected from `seqspec validate`, on stderr."""

import tracemalloc
from pathlib import Path

import pytest

from seqspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
INVALID = sorted((ROOT / "specs" / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("spec", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_spec_gives_exactly_the_expected_errors(spec, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    rel = spec.relative_to(ROOT).as_posix()
    code = main(["validate", rel])
    out = capsys.readouterr()
    assert code == 2
    assert out.err == spec.with_suffix(".expected").read_text()
    assert out.out == ""
    assert "Traceback" not in out.out + out.err


def test_every_error_case_the_issue_lists_is_covered():
    names = {p.stem for p in INVALID}
    required = {
        "empty", "not_mapping", "syntax_error", "tab_indent", "duplicate_key", "unknown_layer_type",
        "misspelled_key", "wrong_type", "out_of_range", "missing_key", "unknown_activation",
        "flatten_unknown_length", "repeat_vector_on_sequence", "recurrent_after_vector", "kernel_too_long",
        "object_tag", "alias_bomb", "over_budget", "binary_garbage",
    }
    assert required <= names, required - names


def test_alias_bomb_is_refused_before_it_expands(capsys):
    # 9**9 values once expanded: refused while composing, so memory stays at the loader's own
    # few MB (measured 3.9 MB peak) instead of gigabytes. Memory, not seconds: a timed bound
    # fails on a loaded machine and proves nothing on a fast one.
    tracemalloc.start()
    try:
        assert main(["validate", str(ROOT / "specs" / "invalid" / "alias_bomb.yaml")]) == 2
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20
    assert "alias" in capsys.readouterr().err


def test_every_line_has_path_line_column_and_field():
    for spec in INVALID:
        for line in spec.with_suffix(".expected").read_text().splitlines():
            path, lineno, col, rest = line.split(":", 3)
            assert path.endswith(spec.name) and lineno.isdigit() and col.isdigit() and rest.strip(), line
