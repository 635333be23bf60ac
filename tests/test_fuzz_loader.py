"""Property: any bytes or mutated spec either load or raise SpecError with located problems; nothing else escapes."""

from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import seqspec
from helpers import examples

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [p.read_text() for p in sorted((ROOT / "specs").glob("*.yaml"))]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 100), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["lstm", "gru", "dense", "conv1d", "same", "causal", "relu", "leaky_relu", "null", "~"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "units", "layer", "cell", "filters", "kernel_size", "shape", "layers", "x"]), inner, max_size=4
    ),
    max_leaves=12,
)


def _assert_loads_or_located(text):
    try:
        seqspec.load(text if "\n" in text else text + "\n")
    except seqspec.SpecError as e:
        assert e.problems, "a SpecError without a located problem"
        for p in e.problems:
            assert p.line >= 1 and p.column >= 1 and p.message
            assert "\n" not in p.message


@settings(max_examples=examples(300))
@given(st.binary(max_size=300))
def test_random_bytes(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    _assert_loads_or_located(text)


@settings(max_examples=examples(300))
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_specs(seed, data):
    doc = yaml.safe_load(seed)
    mutation = data.draw(st.sampled_from(["set_layer_key", "replace_layer", "top_key", "cut_text", "insert_char"]))
    if mutation == "set_layer_key":
        i = data.draw(st.integers(0, len(doc["layers"]) - 1))
        doc["layers"][i][data.draw(st.sampled_from(["units", "type", "activation", "return_sequences", "layer", "cell", "strides", "padding"]))] = data.draw(values)
        text = yaml.safe_dump(doc)
    elif mutation == "replace_layer":
        doc["layers"][data.draw(st.integers(0, len(doc["layers"]) - 1))] = data.draw(values)
        text = yaml.safe_dump(doc)
    elif mutation == "top_key":
        doc[data.draw(st.sampled_from(["seqspec", "name", "input", "layers", "seed", "dtype", "train", "extra"]))] = data.draw(values)
        text = yaml.safe_dump(doc)
    elif mutation == "cut_text":
        text = seed[: data.draw(st.integers(0, len(seed)))]
    else:
        pos = data.draw(st.integers(0, len(seed)))
        text = seed[:pos] + data.draw(st.sampled_from(["\t", ":", "-", "{", "]", "&a ", "*a", "!!python/object ", "\x00", "'"])) + seed[pos:]
    _assert_loads_or_located(text)
