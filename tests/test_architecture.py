"""The seams between the core and the backends: public names only, no import cycle, one table per
concern that says what is missing where, and a backend found as a plugin."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import seqspec
from helpers import spec_of

ROOT = Path(__file__).resolve().parent.parent


def test_backends_use_only_public_core_names():
    private = re.compile(r"(from|import)\s+seqspec\._|seqspec\._[a-z]")
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "backends").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert hits == []


def _imports(path: Path) -> set[str]:
    """The seqspec modules a core module imports, at module level or inside a function (not the
    names imported only for type checkers, under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module)
            else:
                out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seqspec."):
            out.add(node.module.split(".", 1)[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("seqspec."))
    return out


def test_the_core_has_no_import_cycle():
    modules = {p.stem: p for p in (ROOT / "seqspec").glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path) & set(modules) for name, path in modules.items()}
    cycles = []

    def visit(name, trail):
        if name in trail:
            cycles.append(" -> ".join(trail[trail.index(name):] + [name]))
            return
        for dep in sorted(graph[name]):
            visit(dep, trail + [name])

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


@pytest.mark.parametrize("name", seqspec.backend_names())
def test_a_missing_builder_is_a_located_error_naming_the_table_and_its_file(name, monkeypatch):
    backend = seqspec.get_backend(name)
    monkeypatch.delitem(backend.builders, seqspec.ZeroPadding1D)
    assert seqspec.missing_nodes(backend) == [
        f"the {name} backend has no builder for ZeroPadding1D: add one to BUILDERS in {backend.builders.file}"
    ]
    assert backend.builders.file.endswith(f"seqspec_{name}/_builders.py")
    spec = spec_of([{"type": "zero_padding1d"}], [None, 2])
    with pytest.raises(seqspec.BackendError) as e:
        backend.build(spec)
    assert str(e.value) == (
        f"{spec.locate('layers', 0)}: the {name} backend has no builder for 'zero_padding1d' (ZeroPadding1D): "
        f"add one to BUILDERS in {backend.builders.file}"
    )


@pytest.mark.parametrize("name", seqspec.backend_names())
def test_a_missing_nested_builder_and_weight_mapping_say_which_node(name, monkeypatch):
    backend = seqspec.get_backend(name)
    monkeypatch.delitem(backend.builders, seqspec.PeepholeLSTMCell)
    spec = spec_of([{"type": "rnn", "cell": {"type": "peephole_lstm", "units": 2}}], [None, 2])
    with pytest.raises(seqspec.BackendError, match=rf"<string>:1:\d+: layers\[0\]\.cell: the {name} backend has no builder for 'peephole_lstm'"):
        backend.build(spec)
    monkeypatch.undo()
    monkeypatch.delitem(backend.weight_maps, seqspec.Dense)
    spec = spec_of([{"type": "dense", "units": 2}], [3])
    with pytest.raises(seqspec.BackendError, match=rf"the {name} backend has no weight mapping for 'dense' \(Dense\): add one to WEIGHT_MAPS in .*_weights.py"):
        backend.build(spec)


@pytest.mark.parametrize("name", seqspec.backend_names())
def test_weightless_nodes_need_no_weight_mapping_and_every_activation_has_an_entry(name):
    backend = seqspec.get_backend(name)
    for cls in (seqspec.Dropout, seqspec.Flatten, seqspec.ZeroPadding1D, seqspec.Cropping1D, seqspec.UpSampling1D):
        assert cls not in backend.weight_maps
    assert set(backend.activations) == set(seqspec.ACTIVATIONS)


def test_a_layer_type_without_a_shape_rule_is_a_shape_error_naming_it():
    from seqspec._spec import _Layer

    class Unruled(_Layer):
        type: str = "unruled"

    spec = seqspec.Spec.model_construct(seqspec=1, name="t", dtype="float32", input=seqspec.load(
        "seqspec: 1\nname: t\ninput: {shape: [null, 1]}\nlayers: [{type: dense, units: 1}]\n").input, layers=[Unruled()], seed=None, train=None)
    with pytest.raises(seqspec.ShapeError, match=r"layer type 'unruled' has no shape rule: define Unruled.output_shape in seqspec/_spec.py"):
        seqspec.infer(spec)


def test_parameter_counts_are_the_arrays_sizes():
    spec = spec_of([{"type": "conv1d", "filters": 6, "kernel_size": 3, "groups": 3}, {"type": "gru", "units": 4}], [None, 3])
    info = seqspec.summary(spec)
    assert info.params == sum(v.size for v in seqspec.initial_weights(spec).values()) == 3 * 1 * 6 + 6 + 3 * 4 * (6 + 4) + 24


class _Fake(seqspec.Backend):
    """A third backend, as a plugin would define it: every abstract method, nothing in seqspec edited."""

    name = "fake"
    extra = "fake"
    suffix = ".fake"
    builders = seqspec.Table("fake", "builder", "BUILDERS", __name__, {})
    weight_maps = seqspec.Table("fake", "weight mapping", "WEIGHT_MAPS", __name__, {})
    activations = seqspec.Table("fake", "activation", "ACTIVATIONS", __name__, {})

    def compile(self, spec):
        return {"spec": spec}

    def assign_weights(self, model, spec, weights):
        model["weights"] = dict(weights)

    def get_weights(self, model, spec):
        return model["weights"]

    count_params = predict = layer_outputs = gradients = training_output = fit = save = load = lambda self, *a: None

    def versions(self):
        return {"fake": "1"}


def test_a_third_backend_installs_as_an_entry_point(monkeypatch):
    from importlib import metadata

    from seqspec import _backend
    from seqspec.cli import build_parser

    real = metadata.entry_points

    def entry_points(group=None, **kw):
        eps = list(real(group=group, **kw))
        if group == _backend.ENTRY_POINT_GROUP:
            eps.append(metadata.EntryPoint("fake", f"{__name__}:_Fake", group))
        return eps

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    monkeypatch.setattr(_backend, "_loaded", {})
    backend = seqspec.get_backend("fake")
    assert isinstance(backend, _Fake)
    spec = spec_of([{"type": "dense", "units": 2}], [3])
    model = backend.build(spec)  # the base class seeds it from the spec's canonical weights
    assert sorted(model["weights"]) == ["layers.0.bias", "layers.0.kernel"]
    with pytest.raises(seqspec.WeightsError, match="missing"):
        backend.set_weights(model, spec, {})
    assert "fake" in seqspec.backend_names()
    args = build_parser().parse_args(["compile", "x.yaml", "--backend", "fake"])
    assert args.backend == "fake"
    assert any("builder for" in line and "fake" in line for line in seqspec.missing_nodes(backend))
