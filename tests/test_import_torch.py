"""`seqspec import` of PyTorch modules written as a user writes them: the textbook's models, forecasters
and classifiers import to the expected spec and agree on both backends; what has no spec equivalent is refused by name."""

from __future__ import annotations

import os
import sys
import textwrap

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import seqspec  # noqa: E402
from seqspec import cli  # noqa: E402
from seqspec._import import proof_shapes, read, to_spec  # noqa: E402

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


def _layers(spec):
    return [layer.model_dump(exclude_defaults=True) for layer in spec.layers]


# --- modules as a user writes them --------------------------------------------------------------


class Linear(nn.Module):
    """The textbook's linear model: 50 steps flattened into one Dense unit."""

    def __init__(self):
        super().__init__()
        self.flatten, self.out = nn.Flatten(), nn.Linear(50, 1)

    def forward(self, x):
        return self.out(self.flatten(x))


class SimpleRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(1, 1, batch_first=True)

    def forward(self, x):
        out, _ = self.rnn(x)
        return out[:, -1]


class DeepRNN(nn.Module):
    def __init__(self, seq2seq=False):
        super().__init__()
        self.rnn = nn.RNN(1, 20, num_layers=2, batch_first=True, nonlinearity="relu")
        self.head = nn.Linear(20, 10)
        self.seq2seq = seq2seq

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out) if self.seq2seq else self.head(out[:, -1])


class StackedLSTM(nn.Module):
    """A forecaster: two stacked LSTM layers (dropout between), the last step, a linear head."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(2, 16, num_layers=2, batch_first=True, dropout=0.2)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return self.head(out[:, -1, :])


class BiGRUClassifier(nn.Module):
    """A classifier: a bidirectional GRU read time-first, its last step, sigmoid of a linear layer."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 8, bidirectional=True)
        self.fc = nn.Linear(16, 1)

    def forward(self, x):
        out, _ = self.gru(x.transpose(0, 1))
        return torch.sigmoid(self.fc(out[-1]))


class ConvGRU(nn.Module):
    """The textbook's Conv1D + GRU: a strided convolution, two GRU layers, a per-step head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 20, kernel_size=4, stride=2)
        self.gru = nn.GRU(20, 20, num_layers=2, batch_first=True)
        self.head = nn.Linear(20, 10)

    def forward(self, x):
        h = self.conv(x.permute(0, 2, 1))
        out, _ = self.gru(h.transpose(1, 2))
        return self.head(out)


class WaveNet(nn.Module):
    """The textbook's simplified WaveNet: causal (left-padded) dilated convolutions, then a 1x1 one."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(1 if i == 0 else 20, 20, kernel_size=2, dilation=rate) for i, rate in enumerate((1, 2, 4, 8) * 2))
        self.out = nn.Conv1d(20, 10, kernel_size=1)

    def forward(self, x):
        h = x.transpose(1, 2)
        for conv in self.convs:
            h = F.relu(conv(F.pad(h, (conv.dilation[0], 0))))
        return self.out(h).transpose(1, 2)


class ConvClassifier(nn.Module):
    """Conv1d, batch norm, pools, a same-padded convolution, a global average pool, softmax."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(2, 8, 5, padding=2),
            nn.BatchNorm1d(8),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.ConstantPad1d((1, 2), 0.0),
            nn.Conv1d(8, 8, 3, groups=2, bias=False),
            nn.GELU(),
            nn.AvgPool1d(3, stride=1),
            nn.Upsample(scale_factor=2),
            nn.Conv1d(8, 6, 3, padding=3),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.LayerNorm(6),
            nn.Linear(6, 4),
            nn.Softmax(dim=-1),
        )

    def forward(self, x):
        return self.net(x.transpose(1, 2))


class Seq2Vec2Seq(nn.Module):
    """An encoder-decoder: an LSTM without biases read time-first, its last step repeated, a GRU decoder."""

    def __init__(self):
        super().__init__()
        self.enc = nn.LSTM(2, 6, bias=False)
        self.dec = nn.GRU(6, 5, batch_first=True, bias=False)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        h, _ = self.enc(x.transpose(0, 1))
        z = h[-1].unsqueeze(1).repeat(1, 4, 1)
        y, _ = self.dec(z)
        return F.leaky_relu(self.out(y), 0.1)


class TokenLSTM(nn.Module):
    """A sentiment classifier on token ids: an embedding (id 0 padding), an LSTM, its last step."""

    def __init__(self, **options):
        super().__init__()
        self.emb = nn.Embedding(50, 8, padding_idx=0, **options)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        out, _ = self.lstm(self.emb(x))
        return self.fc(out[:, -1])


def mlp():
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Dropout(0.1), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 2))


MODULES = {
    "linear": (Linear, [50, 1], None, [{"type": "flatten"}, {"type": "dense", "units": 1}]),
    "simple_rnn": (SimpleRNN, [None, 1], [1, 9], [{"type": "simple_rnn", "units": 1}]),
    "deep_rnn": (DeepRNN, [None, 1], [1, 9], [{"type": "simple_rnn", "units": 20, "activation": "relu", "return_sequences": True}, {"type": "simple_rnn", "units": 20, "activation": "relu"}, {"type": "dense", "units": 10}]),
    "seq2seq_rnn": (lambda: DeepRNN(seq2seq=True), [None, 1], [1, 9], [{"type": "simple_rnn", "units": 20, "activation": "relu", "return_sequences": True}] * 2 + [{"type": "dense", "units": 10}]),
    "stacked_lstm": (StackedLSTM, [None, 2], [1, 9], [{"type": "lstm", "units": 16, "return_sequences": True}, {"type": "dropout", "rate": 0.2}, {"type": "lstm", "units": 16}, {"type": "dense", "units": 3}]),
    "bigru_classifier": (
        BiGRUClassifier,
        [12, 3],
        None,
        [{"type": "bidirectional", "layer": {"type": "gru", "units": 8, "return_sequences": True}}, {"type": "cropping1d", "cropping": [11, 0]}, {"type": "flatten"}, {"type": "dense", "units": 1, "activation": "sigmoid"}],
    ),
    "conv_gru": (ConvGRU, [None, 1], [9], [{"type": "conv1d", "filters": 20, "kernel_size": 4, "strides": 2}, {"type": "gru", "units": 20, "return_sequences": True}, {"type": "gru", "units": 20, "return_sequences": True}, {"type": "dense", "units": 10}]),
    "wavenet": (WaveNet, [None, 1], [1, 40], [{"type": "conv1d", "filters": 20, "kernel_size": 2, "padding": "causal", **({"dilation_rate": r} if r > 1 else {}), "activation": "relu"} for r in (1, 2, 4, 8) * 2] + [{"type": "conv1d", "filters": 10, "kernel_size": 1}]),
    "conv_classifier": (ConvClassifier, [None, 2], [12, 31], None),
    "encoder_decoder": (Seq2Vec2Seq, [None, 2], [1, 9], None),
    "mlp": (mlp, [5], None, [{"type": "dense", "units": 8, "activation": "tanh"}, {"type": "dropout", "rate": 0.1}, {"type": "dense", "units": 8, "activation": "silu"}, {"type": "dense", "units": 2}]),
    "token_lstm": (TokenLSTM, [None], [1, 9], [{"type": "embedding", "input_dim": 50, "output_dim": 8}, {"type": "lstm", "units": 16}, {"type": "dense", "units": 2}]),
}


def _trained(make):
    """The module with trained-looking parameters and batch-norm statistics (not torch's zero biases)."""
    torch.manual_seed(0)
    module = make()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.4)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return module


@pytest.mark.parametrize("name", list(MODULES))
def test_hand_written_torch_modules_import_to_the_expected_spec_and_agree(name):
    make, shape, lengths, expected = MODULES[name]
    module = _trained(make)
    imported = read(module, shape)
    spec, _ = to_spec(imported)
    if expected is not None:
        assert _layers(spec) == expected
    result = seqspec.prove_import(spec, imported.weights, imported.run, lengths, exact=imported.exact)
    assert result.ok, result.failures
    assert set(result.max_abs_diff) == {"float32", "float64"}
    n_params = sum(p.numel() for p in module.parameters()) + sum(b.numel() for n, b in module.named_buffers() if "running" in n)
    biases = sum(getattr(m, f"bias_hh_l{k}{d}").numel() for m in module.modules() if isinstance(m, (nn.RNN, nn.LSTM)) and m.bias for k in range(m.num_layers) for d in ("", "_reverse")[: 1 + m.bidirectional])
    assert seqspec.infer(spec).params == n_params - biases  # torch's second bias of RNN and LSTM is folded into the first


def test_the_weights_are_torchs_own_tensors_transposed_and_the_lstm_biases_summed():
    module = _trained(StackedLSTM)
    spec, weights = seqspec.import_model(module, [None, 2])
    lstm, u = module.lstm, 16
    np.testing.assert_array_equal(weights["layers.0.kernel_f"], lstm.weight_ih_l0[u : 2 * u].detach().numpy().T)
    np.testing.assert_array_equal(weights["layers.2.recurrent_kernel_o"], lstm.weight_hh_l1[3 * u :].detach().numpy().T)
    np.testing.assert_array_equal(weights["layers.0.bias_g"], (lstm.bias_ih_l0 + lstm.bias_hh_l0)[2 * u : 3 * u].detach().numpy())
    np.testing.assert_array_equal(weights["layers.3.kernel"], module.head.weight.detach().numpy().T)
    gru = _trained(BiGRUClassifier).gru
    _, w = seqspec.import_model(_trained(BiGRUClassifier), [12, 3])
    # torch's rows r, z, n; the canonical z, r, g; reset_after's two biases kept apart.
    np.testing.assert_array_equal(w["layers.0.backward.kernel_z"], gru.weight_ih_l0_reverse[8:16].detach().numpy().T)
    np.testing.assert_array_equal(w["layers.0.forward.recurrent_bias_g"], gru.bias_hh_l0[16:].detach().numpy())


class Projected(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(2, 8, proj_size=3, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


class LoopCell(nn.Module):
    """A custom recurrence written as a Python loop over the steps."""

    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(2, 4)

    def forward(self, x):
        h = torch.zeros(x.shape[0], 4)
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return h


class UsesState(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(2, 4, batch_first=True)

    def forward(self, x):
        _, h = self.gru(x)
        return h[-1]


class PReLUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act = nn.Linear(2, 2), nn.PReLU()

    def forward(self, x):
        return self.act(self.fc(x))


class ChannelsFirstLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(x.transpose(1, 2))


REFUSED = {
    "proj_size": (Projected, [None, 2], "module 'lstm' (LSTM): proj_size=3 (a projected LSTM) has no spec equivalent"),
    "python loop": (LoopCell, [None, 2], "LoopCell: torch.fx cannot trace its forward"),
    "final state": (UsesState, [None, 2], "torch node 'getitem_1' (function _operator.getitem): takes item 1 of a recurrent module's (output, state) tuple"),
    "no equivalent": (PReLUNet, [2], "module 'act' (PReLU): has no spec equivalent"),
    "wrong axis": (ChannelsFirstLinear, [5, 4], "module 'fc' (Linear): receives a sequence [batch, features, time]; nn.Linear acts on the last axis"),
    "bidirectional last step, free length": (BiGRUClassifier, [None, 3], "takes the last step, which the spec expresses here only for a fixed length"),
    "no input shape": (mlp, None, "a PyTorch module needs its input shape: --input-shape"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_a_spec_cannot_express_is_refused_naming_the_torch_node(case):
    make, shape, message = REFUSED[case]
    with pytest.raises(seqspec.ImportRefused) as e:
        seqspec.import_model(make(), shape)
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_import_command_reads_a_package_module_callable(tmp_path, monkeypatch, capsys):
    (tmp_path / "forecasters.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Forecaster(nn.Module):
                def __init__(self):
                    super().__init__()
                    torch.manual_seed(1)
                    self.lstm = nn.LSTM(1, 6, batch_first=True)
                    self.head = nn.Linear(6, 2)

                def forward(self, x):
                    out, _ = self.lstm(x)
                    return self.head(out[:, -1])

            def make():
                return Forecaster()
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    code = cli.main(["import", "forecasters:make", "-o", "fc.yaml", "--input-shape", "null,1", "--lengths", "1,9"])
    said = capsys.readouterr()
    assert code == 0, said.err
    assert "wrote fc.yaml and fc.safetensors: forecaster, 2 layers; proven equal" in said.out
    assert (tmp_path / "fc.yaml").read_text().splitlines()[-2:] == ["  - {type: lstm, units: 6}", "  - {type: dense, units: 2}"]
    assert cli.main(["import", "forecasters:missing", "-o", "x.yaml", "--input-shape", "null,1"]) == 2
    assert "forecasters:missing: 'forecasters' has no 'missing'" in capsys.readouterr().err
    assert cli.main(["import", "forecasters:make", "-o", "x.yaml", "--input-shape", "null,0"]) == 2
    assert not (tmp_path / "x.yaml").exists()


# --- torch.export programs (.pt2) ---------------------------------------------------------------


def _program(path, module, example, dynamic_shapes=None) -> str:
    """`module` exported as a user exports it (after eval()) and saved: the path of the .pt2 file."""
    import warnings

    with warnings.catch_warnings():  # nn.LSTM's "_flat_weights were assigned during export": torch's own
        warnings.simplefilter("ignore", UserWarning)
        program = torch.export.export(module.eval(), (example,), dynamic_shapes=dynamic_shapes)
    torch.export.save(program, str(path))
    return str(path)


def _dynamic(*axes):
    """dynamic_shapes for one input: axis -> torch.export.Dim (time from 2 to 400 steps)."""
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("time", min=2, max=400)}
    return ({a: dims[a] for a in axes},)


# name -> (module, example input, dynamic axes). nn.LSTM/GRU/RNN export only at a fixed length
# (pytorch issue 126339), so the recurrent ones fix it (some with a dynamic batch, some with all fixed).
PROGRAMS = {
    "stacked_lstm": (StackedLSTM, torch.randn(3, 9, 2), (0,)),
    "bigru_classifier": (BiGRUClassifier, torch.randn(3, 12, 3), (0,)),
    "conv_gru": (ConvGRU, torch.randn(3, 9, 1), ()),
    "deep_rnn": (DeepRNN, torch.randn(3, 9, 1), ()),
    "encoder_decoder": (Seq2Vec2Seq, torch.randn(3, 9, 2), ()),
    "conv_classifier": (ConvClassifier, torch.randn(3, 31, 2), ()),
    "linear": (Linear, torch.randn(3, 50, 1), (0,)),
    "mlp": (mlp, torch.randn(3, 5), (0,)),
    "wavenet": (WaveNet, torch.randn(3, 20, 1), (0, 1)),
    "token_lstm": (TokenLSTM, torch.randint(0, 50, (3, 12)), ()),
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_torch_export_programs_import_to_the_modules_spec_and_weights_and_agree(name, tmp_path):
    make, example, dynamic = PROGRAMS[name]
    module = _trained(make)
    path = _program(tmp_path / f"{name}.pt2", module, example, _dynamic(*dynamic) if dynamic else None)
    imported = read(path)
    spec, _ = to_spec(imported)
    # The program's input: a fixed length where it has one, null where it is dynamic; its dtype for token ids.
    t = None if 1 in dynamic else example.shape[1]
    assert spec.input.shape == ([t] if example.dim() == 2 and not example.is_floating_point() else [t, example.shape[-1]] if example.dim() == 3 else [example.shape[-1]])
    assert spec.input.dtype == (None if example.is_floating_point() else "int64")
    # The same spec and bit-equal weights as the module read through torch.fx at that shape.
    from_fx = read(module, list(spec.input.shape))
    assert _layers(spec) == _layers(to_spec(from_fx)[0])
    assert imported.weights.keys() == from_fx.weights.keys()
    for key, value in from_fx.weights.items():
        np.testing.assert_array_equal(imported.weights[key], value, err_msg=key)
        np.testing.assert_array_equal(imported.exact["float64"][key], from_fx.exact["float64"][key], err_msg=key)
    # The proof feeds only what the program takes: its own batch where that is fixed, lengths in its range.
    batches, lengths = proof_shapes(spec, imported)
    assert batches == ([1, 3] if 0 in dynamic else [3])
    assert lengths == ([2, 7, 400] if 1 in dynamic else None)
    result = seqspec.prove_import(spec, imported.weights, imported.run, lengths, exact=imported.exact, batches=batches)
    assert result.ok, result.failures
    assert set(result.max_abs_diff) == {"float32", "float64"}


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 3), nn.Tanh())

    def forward(self, x):
        return self.body(x) * 2


class LearnedState(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(2, 4, batch_first=True)
        self.h0 = nn.Parameter(torch.zeros(1, 3, 4))

    def forward(self, x):
        return self.gru(x, self.h0)[0]


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return torch.relu(x + y)


PROGRAM_REFUSALS = {
    "an op without a spec equivalent": (Scaled, torch.randn(3, 2), None, "torch node 'mul' (aten.mul.Tensor) in the top module (Scaled): has no spec equivalent"),
    "an initial state": (LearnedState, torch.randn(3, 5, 2), None, "torch node 'gru' (aten.gru.input) in module 'gru' (GRU): is given an initial state"),
    "proj_size": (Projected, torch.randn(3, 5, 2), None, "torch node 'lstm' (aten.lstm.input) in module 'lstm' (LSTM): has 5 parameters where lstm with these flags has 4: proj_size"),
    "max_norm": (lambda: TokenLSTM(max_norm=1.0), torch.randint(0, 50, (3, 6)), None, "in module 'emb' (Embedding): max_norm=1.0 renormalises the rows"),
    "a fixed length given another": (StackedLSTM, torch.randn(3, 9, 2), [12, 2], "--input-shape [12, 2]: the program "),
    "a fixed length given a free one": (StackedLSTM, torch.randn(3, 9, 2), [None, 2], "takes [batch, 9, 2]"),
}


@pytest.mark.parametrize("case", list(PROGRAM_REFUSALS))
def test_what_a_program_holds_without_a_spec_equivalent_is_refused_naming_the_aten_op_and_module(case, tmp_path):
    make, example, shape, message = PROGRAM_REFUSALS[case]
    path = _program(tmp_path / "model.pt2", _trained(make), example)
    with pytest.raises(seqspec.ImportRefused) as e:
        seqspec.import_model(path, shape)
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_a_program_exported_in_training_mode_or_with_two_inputs_is_refused(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        training = torch.export.export(mlp().train(), (torch.randn(3, 5),))
        two = torch.export.export(TwoInputs(), (torch.randn(3, 2), torch.randn(3, 2)))
    torch.export.save(training, str(tmp_path / "training.pt2"))
    torch.export.save(two, str(tmp_path / "two.pt2"))
    with pytest.raises(seqspec.ImportRefused, match=r"torch node 'dropout' \(aten.dropout.default\) in module '2' \(Dropout\): runs with train=True"):
        seqspec.import_model(str(tmp_path / "training.pt2"))
    with pytest.raises(seqspec.ImportRefused, match=r"two.pt2: the program takes 2 inputs \(x, y\); a spec model takes one tensor"):
        seqspec.import_model(str(tmp_path / "two.pt2"))
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(seqspec.ImportRefused, match=r"junk.pt2: torch.export.load cannot read it"):
        seqspec.import_model(str(tmp_path / "junk.pt2"))


def test_seqspecs_own_torch_export_artifacts_import_without_recurrent_layers_and_refuse_the_scan_loop(tmp_path, capsys):
    """`seqspec export --to torch-export` writes recurrent layers as torch scan loops: refused by
    name; a spec without them (flatten, dense) imports back to itself."""
    (tmp_path / "rnn.yaml").write_text("seqspec: 1\nname: rnn\nseed: 1\ninput: {shape: [null, 2]}\nlayers:\n  - {type: gru, units: 3}\n  - {type: dense, units: 1}\n")
    (tmp_path / "lin.yaml").write_text("seqspec: 1\nname: lin\nseed: 1\ninput: {shape: [6, 2]}\nlayers:\n  - {type: flatten}\n  - {type: dense, units: 2, activation: relu}\n")
    for stem in ("rnn", "lin"):
        assert cli.main(["export", "--to", "torch-export", str(tmp_path / f"{stem}.yaml"), "-o", str(tmp_path / f"{stem}.pt2")]) == 0
    capsys.readouterr()
    assert cli.main(["import", str(tmp_path / "rnn.pt2"), "-o", str(tmp_path / "back.yaml")]) == 2
    err = capsys.readouterr().err
    assert "torch node 'scan' (scan) in module 'layers.0' (ScanRecurrent): a scan loop" in err and err.count("\n") == 1, err
    assert not (tmp_path / "back.yaml").exists()
    assert cli.main(["import", str(tmp_path / "lin.pt2"), "-o", str(tmp_path / "lin_back.yaml")]) == 0
    said = capsys.readouterr().out
    assert "wrote" in said and "proven equal" in said
    back = seqspec.load(str(tmp_path / "lin_back.yaml"))
    assert _layers(back) == [{"type": "flatten"}, {"type": "dense", "units": 2, "activation": "relu"}]
    assert back.input.shape == [6, 2]
    original = seqspec.load(str(tmp_path / "lin.yaml"))
    back_weights, seeded = seqspec.load_weights(str(tmp_path / "lin_back.safetensors")), seqspec.initial_weights(original)
    assert back_weights.keys() == seeded.keys()
    for key in seeded:
        np.testing.assert_array_equal(back_weights[key], seeded[key])


def test_import_command_reads_a_pt2_file_at_the_lengths_it_takes(tmp_path, capsys):
    path = _program(tmp_path / "wavenet.pt2", _trained(WaveNet), torch.randn(3, 20, 1), _dynamic(0, 1))
    assert cli.main(["import", path, "-o", str(tmp_path / "w.yaml"), "--lengths", "1,9"]) == 2
    assert "--lengths: the original takes 2 to 400 steps, not 1" in capsys.readouterr().err
    assert not (tmp_path / "w.yaml").exists()
    assert cli.main(["import", path, "-o", str(tmp_path / "w.yaml"), "--input-shape", "50,1", "--name", "wave"]) == 0
    assert "wrote" in capsys.readouterr().out
    spec = seqspec.load(str(tmp_path / "w.yaml"))
    assert spec.name == "wave" and spec.input.shape == [50, 1] and len(spec.layers) == 9


def test_an_embedding_reads_token_ids_and_refuses_options_without_an_equivalent():
    module = _trained(TokenLSTM)
    imported = read(module, [None])
    assert imported.input_dtype == "int64"
    assert imported.notes == ["module 'emb' (Embedding): padding_idx=0 dropped: it acts only in training (that row's gradient is kept at zero); mask_zero is false, as torch masks nothing"]
    np.testing.assert_array_equal(imported.weights["layers.0.embeddings"], module.emb.weight.detach().numpy())
    spec, text = to_spec(imported)
    assert "  shape: [null]\n  dtype: int64\n" in text and "mask_zero" not in text
    for options, message in (
        ({"max_norm": 2.0}, "module 'emb' (Embedding): max_norm=2.0 renormalises the rows it looks up in the forward pass"),
        ({"sparse": True}, "module 'emb' (Embedding): sparse=True (sparse gradients) has no spec equivalent"),
        ({"scale_grad_by_freq": True}, "module 'emb' (Embedding): scale_grad_by_freq=True has no spec equivalent"),
    ):
        with pytest.raises(seqspec.ImportRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
            seqspec.import_model(TokenLSTM(**options), [None])
    with pytest.raises(seqspec.ImportRefused, match="module '1' \\(Embedding\\): maps as the model's first layer only"):
        seqspec.import_model(nn.Sequential(nn.Linear(3, 3), nn.Embedding(5, 2)), [3])
    assert seqspec._import.parse_input_shape("null") == [None]
