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
from seqspec._import import read, to_spec  # noqa: E402

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
