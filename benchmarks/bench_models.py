"""Speed of seqspec's compiled models against the same models written by hand, per backend.

    python benchmarks/bench_models.py                        # everything, ~6-10 min on 2 shared cores
    python benchmarks/bench_models.py --quick                # 3 repeats, no large sizes, no `check` (~2 min)
    python benchmarks/bench_models.py --only models --cases deep_rnn,large_lstm --repeats 7
    python benchmarks/bench_models.py --only cells,cli --no-write

Sections (`--only`, comma-separated; default all):
- models: each case of CASES on both backends, forward in inference mode and one training step
  (forward, MSE, backward, Adam step). Four contenders per case, timed round-robin in one process:
  seqspec's Keras model, a hand-written keras.layers model, seqspec's torch model, a hand-written
  torch.nn model, same sizes. Keras forward is `tf.function(lambda x: model(x, training=False))`
  and its training step `model.train_on_batch` after `compile(Adam(1e-3), "mse")`, identical for
  both Keras contenders; torch forward runs under torch.inference_mode, its step uses
  torch.optim.Adam(1e-3) and F.mse_loss for both torch contenders. An A/A control (a second,
  identical build of each compiled model, `--no-aa` skips it) shows how far apart two equal
  contenders come out on this machine: a compiled / hand-written ratio inside that spread is noise.
- cells: forward of seqspec's custom cells (peephole_lstm and ln_simple_rnn through `rnn`, gru
  with reset_after false) against the fused layer of the same size on the same backend (lstm,
  simple_rnn, gru reset_after true), on [64, 500, 64] with 128 units and [32, 50, 1] with 20 units;
  for torch also forward + backward (the scans' hand-written backward against the fused kernels').
- cli: wall time of `seqspec validate specs/*.yaml` and `seqspec check specs/` (subprocesses), and
  the peak RSS of `seqspec check` on the example with the most parameters (/usr/bin/time -v).

Timing: after `--warmup` untimed calls each (tracing, oneDNN primitive creation), every sample
times `n` back-to-back calls (n chosen per contender so a sample takes >= --min-sample seconds)
and the contenders of a group alternate sample by sample, the first one rotating every repeat. Reported: the median per-call time of
each contender and, for each pair, the median over repeats of the ratio of the two samples taken
side by side (robust to the load of a shared machine drifting during the run).

Both frameworks run with `--threads` intra-op threads (default 1, the torch backend's training
default; see seqspec_torch._train.default_threads). Results go to docs/performance.md between the
markers `<!-- bench_models:begin -->` and `<!-- bench_models:end -->` (the rest of the file is kept),
and with --json to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench_models:begin -->", "<!-- bench_models:end -->"
TARGET_COMPILED = 1.05  # compiled / hand-written
TARGET_CELL = 1.5  # custom cell / fused, torch forward
TARGET_TORCH_KERAS = 1.0  # torch / keras training step

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="models,cells,cli", help="sections: models, cells, cli")
    p.add_argument("--cases", default=None, help="model cases (default all): " + ", ".join(CASE_NAMES))
    p.add_argument("--modes", default="forward,train", help="forward, train")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per contender (default 5; 3 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per contender first (default 2; 1 with --quick)")
    p.add_argument("--min-sample", type=float, default=0.05, help="seconds a sample should last at least")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and TensorFlow")
    p.add_argument("--no-aa", dest="aa", action="store_false", help="skip the A/A control (a second build of each compiled model)")
    p.add_argument("--no-large", action="store_true", help="skip the [64, 500, 64] sizes")
    p.add_argument("--no-check", action="store_true", help="skip `seqspec check` (the slowest CLI item)")
    p.add_argument("--quick", action="store_true", help="--repeats 3 --warmup 1 --no-large --no-check")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    p.add_argument("--doc", default=str(DOC), help="the Markdown file to update")
    p.add_argument("--json", default=None, help="also write the raw results here")
    a = p.parse_args(argv)
    if a.quick:
        a.no_large = a.no_check = True
    a.repeats = a.repeats or (3 if a.quick else 5)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    return a


# --- timing -------------------------------------------------------------------------------------


def _calls_per_sample(fn, min_sample: float) -> int:
    s = time.perf_counter()
    fn()
    one = time.perf_counter() - s
    return max(1, min(1000, int(min_sample / max(one, 1e-6)) + 1))


def race(contenders: dict, repeats: int, warmup: int, min_sample: float) -> dict[str, list[float]]:
    """Per-call seconds of each contender, one sample per repeat, contenders interleaved (round-robin,
    the starting contender rotating every repeat)."""
    numbers = {}
    for name, fn in contenders.items():
        for _ in range(warmup):
            fn()
        numbers[name] = _calls_per_sample(fn, min_sample)
    samples = {name: [] for name in contenders}
    order = list(contenders)
    for r in range(repeats):
        # Rotate who goes first, so that no contender always runs after the same one.
        for name in order[r % len(order) :] + order[: r % len(order)]:
            fn, n = contenders[name], numbers[name]
            s = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - s) / n)
    return samples


def paired_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def ms(seconds: float) -> str:
    v = seconds * 1e3
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


# --- frameworks ---------------------------------------------------------------------------------


def setup_frameworks(threads: int):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    import torch

    torch.set_num_threads(threads)
    return tf, keras, torch


def spec_of(layers: list[dict], shape: list, name: str):
    import seqspec

    doc = {"seqspec": 1, "name": name, "seed": 0, "input": {"shape": shape}, "layers": layers}
    return seqspec.load(json.dumps(doc))


# --- hand-written models --------------------------------------------------------------------------


def keras_hand(case: str, n_in: int):
    import keras
    from keras import layers as L

    inp = keras.Input((None, n_in))
    if case == "deep_rnn":
        return keras.Sequential([inp, L.SimpleRNN(20, return_sequences=True), L.SimpleRNN(20, return_sequences=True), L.SimpleRNN(1)])
    if case in ("seq2seq_lstm", "seq2seq_gru"):
        R = L.LSTM if case == "seq2seq_lstm" else L.GRU
        return keras.Sequential([inp, R(20, return_sequences=True), R(20, return_sequences=True), L.Dense(10)])
    if case == "conv_gru":
        return keras.Sequential(
            [inp, L.Conv1D(20, 4, strides=2, padding="valid"), L.GRU(20, return_sequences=True), L.GRU(20, return_sequences=True), L.Dense(10)]
        )
    if case == "wavenet_gated":
        h = L.Conv1D(32, 2, padding="causal")(inp)
        skips = None
        for rate in (1, 2, 4):
            a = L.Conv1D(64, 2, dilation_rate=rate, padding="causal")(h)
            gate = L.Multiply()([L.Activation("tanh")(a[..., :32]), L.Activation("sigmoid")(a[..., 32:])])
            s = L.Conv1D(32, 1)(gate)
            h = L.Add()([h, s])
            skips = s if skips is None else L.Add()([skips, s])
        y = L.Conv1D(32, 1, activation="relu")(L.Activation("relu")(skips))
        return keras.Model(inp, L.Conv1D(10, 1)(y))
    if case == "large_lstm":
        return keras.Sequential([inp, L.LSTM(128), L.Dense(1)])
    raise KeyError(case)


def torch_hand(case: str, n_in: int):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class DeepRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.r1, self.r2, self.r3 = nn.RNN(n_in, 20, batch_first=True), nn.RNN(20, 20, batch_first=True), nn.RNN(20, 1, batch_first=True)

        def forward(self, x):
            return self.r3(self.r2(self.r1(x)[0])[0])[0][:, -1]

    class Seq2Seq(nn.Module):
        def __init__(self, R, conv=False):
            super().__init__()
            self.conv = nn.Conv1d(n_in, 20, 4, stride=2) if conv else None
            self.r1 = R(20 if conv else n_in, 20, batch_first=True)
            self.r2 = R(20, 20, batch_first=True)
            self.out = nn.Linear(20, 10)

        def forward(self, x):
            if self.conv is not None:
                x = self.conv(x.transpose(1, 2)).transpose(1, 2)
            return self.out(self.r2(self.r1(x)[0])[0])

    class WaveNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Conv1d(n_in, 32, 2)
            self.rates = (1, 2, 4)
            self.dilated = nn.ModuleList(nn.Conv1d(32, 64, 2, dilation=r) for r in self.rates)
            self.residual = nn.ModuleList(nn.Conv1d(32, 32, 1) for _ in self.rates)
            self.head1, self.head2 = nn.Conv1d(32, 32, 1), nn.Conv1d(32, 10, 1)

        def forward(self, x):
            h = self.inp(F.pad(x.transpose(1, 2), (1, 0)))
            skips = None
            for r, d, res in zip(self.rates, self.dilated, self.residual):
                a = d(F.pad(h, (r, 0)))
                s = res(torch.tanh(a[:, :32]) * torch.sigmoid(a[:, 32:]))
                h = h + s
                skips = s if skips is None else skips + s
            return self.head2(F.relu(self.head1(F.relu(skips)))).transpose(1, 2)

    class LargeLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.out = nn.LSTM(n_in, 128, batch_first=True), nn.Linear(128, 1)

        def forward(self, x):
            return self.out(self.lstm(x)[0][:, -1])

    return {
        "deep_rnn": DeepRNN,
        "seq2seq_lstm": lambda: Seq2Seq(nn.LSTM),
        "seq2seq_gru": lambda: Seq2Seq(nn.GRU),
        "conv_gru": lambda: Seq2Seq(nn.GRU, conv=True),
        "wavenet_gated": WaveNet,
        "large_lstm": LargeLSTM,
    }[case]()


# --- cases --------------------------------------------------------------------------------------

# name: (spec file or None for an on-the-fly spec, input shape [B, T, F], label)
CASES = {
    "deep_rnn": ("specs/deep_rnn.yaml", (32, 50, 1), "deep RNN 20-20-1"),
    "seq2seq_lstm": ("specs/seq2seq_lstm.yaml", (32, 50, 1), "LSTM seq2seq"),
    "seq2seq_gru": ("specs/seq2seq_gru.yaml", (32, 50, 1), "GRU seq2seq"),
    "conv_gru": ("specs/conv_gru.yaml", (32, 50, 1), "Conv1D + GRU"),
    "wavenet_gated": ("specs/wavenet_gated.yaml", (64, 2000, 1), "gated WaveNet"),
    "large_lstm": (None, (64, 500, 64), "LSTM(128) + Dense(1)"),
}
CASE_NAMES = list(CASES)
LARGE = {"large_lstm"}


def case_spec(name: str):
    """The spec of a case: its file, or the on-the-fly large LSTM."""
    path, shape, _ = CASES[name]
    if path is not None:
        return _load_spec(ROOT / path)
    return spec_of([{"type": "lstm", "units": 128}, {"type": "dense", "units": 1}], [None, shape[2]], "large_lstm")


def _load_spec(path: Path):
    import seqspec

    return seqspec.load(str(path))


def keras_forward(tf, model):
    f = tf.function(lambda x: model(x, training=False))
    return f


def bench_models(args, tf, keras, torch) -> list[dict]:
    import numpy as np
    import torch.nn.functional as F

    import seqspec

    kb, tb = seqspec.get_backend("keras"), seqspec.get_backend("torch")
    names = args.cases.split(",") if args.cases else CASE_NAMES
    if args.no_large:
        names = [n for n in names if n not in LARGE]
    modes = args.modes.split(",")
    rows = []
    for name in names:
        path, shape, label = CASES[name]
        spec = case_spec(name)
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype("float32")
        k_comp, k_hand = kb.build(spec), keras_hand(name, shape[2])
        t_comp, t_hand = tb.build(spec), torch_hand(name, shape[2])
        # A/A control: a second, identical build of the compiled model, timed like the others.
        k_aa, t_aa = (kb.build(spec), tb.build(spec)) if args.aa else (None, None)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            y_shape = tuple(t_comp(xt).shape)
        assert tuple(t_hand(xt).shape) == y_shape, (name, t_hand(xt).shape, y_shape)
        assert tuple(k_comp(x).shape) == y_shape == tuple(k_hand(x).shape), name
        y = rng.standard_normal(y_shape).astype("float32")
        yt, xtf, ytf = torch.from_numpy(y), tf.constant(x), tf.constant(y)
        for mode in modes:
            if mode == "forward":
                kc, kh = keras_forward(tf, k_comp), keras_forward(tf, k_hand)
                t_comp.eval(), t_hand.eval()

                def torch_fwd(m):
                    def f():
                        with torch.inference_mode():
                            m(xt)

                    return f

                contenders = {
                    "keras_compiled": lambda: kc(xtf).numpy(),
                    "keras_hand": lambda: kh(xtf).numpy(),
                    "torch_compiled": torch_fwd(t_comp),
                    "torch_hand": torch_fwd(t_hand),
                }
                if args.aa:
                    ka = keras_forward(tf, k_aa)
                    t_aa.eval()
                    contenders.update(keras_aa=lambda: ka(xtf).numpy(), torch_aa=torch_fwd(t_aa))
            else:
                for m in (k_comp, k_hand, k_aa) if args.aa else (k_comp, k_hand):
                    m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")

                def torch_step(m):
                    m.train()
                    opt = torch.optim.Adam(m.parameters(), lr=1e-3)

                    def f():
                        opt.zero_grad(set_to_none=True)
                        F.mse_loss(m(xt), yt).backward()
                        opt.step()

                    return f

                contenders = {
                    "keras_compiled": lambda: k_comp.train_on_batch(xtf, ytf),
                    "keras_hand": lambda: k_hand.train_on_batch(xtf, ytf),
                    "torch_compiled": torch_step(t_comp),
                    "torch_hand": torch_step(t_hand),
                }
                if args.aa:
                    contenders.update(keras_aa=lambda: k_aa.train_on_batch(xtf, ytf), torch_aa=torch_step(t_aa))
            started = time.perf_counter()
            samples = race(contenders, args.repeats, args.warmup, args.min_sample)
            row = {
                "case": name,
                "label": label,
                "shape": list(shape),
                "mode": mode,
                "median_s": {k: statistics.median(v) for k, v in samples.items()},
                "samples_s": samples,
                "keras_ratio": paired_ratio(samples["keras_compiled"], samples["keras_hand"]),
                "torch_ratio": paired_ratio(samples["torch_compiled"], samples["torch_hand"]),
                "torch_keras": paired_ratio(samples["torch_compiled"], samples["keras_compiled"]),
            }
            if args.aa:
                row["keras_aa"] = paired_ratio(samples["keras_compiled"], samples["keras_aa"])
                row["torch_aa"] = paired_ratio(samples["torch_compiled"], samples["torch_aa"])
            rows.append(row)
            print(
                f"{name:14s} {mode:7s} " + " ".join(f"{k}={ms(v)}ms" for k, v in row["median_s"].items())
                + (f"  A/A keras {row['keras_aa']:.3f} torch {row['torch_aa']:.3f}" if args.aa else "")
                + f"  keras c/h {row['keras_ratio']:.3f}  torch c/h {row['torch_ratio']:.3f}  torch/keras {row['torch_keras']:.3f}"
                + f"  ({time.perf_counter() - started:.0f}s)",
                flush=True,
            )
    return rows


# --- custom cells -------------------------------------------------------------------------------

CELL_PAIRS = [
    # (custom layer, fused layer of the same size, label)
    (lambda u: {"type": "rnn", "cell": {"type": "peephole_lstm", "units": u}, "return_sequences": True},
     lambda u: {"type": "lstm", "units": u, "return_sequences": True}, "peephole_lstm / lstm"),
    (lambda u: {"type": "gru", "units": u, "reset_after": False, "return_sequences": True},
     lambda u: {"type": "gru", "units": u, "return_sequences": True}, "gru reset_after=false / gru"),
    (lambda u: {"type": "rnn", "cell": {"type": "ln_simple_rnn", "units": u}, "return_sequences": True},
     lambda u: {"type": "simple_rnn", "units": u, "return_sequences": True}, "ln_simple_rnn / simple_rnn"),
]
CELL_SIZES = [((32, 50, 1), 20), ((64, 500, 64), 128)]


def bench_cells(args, tf, keras, torch) -> list[dict]:
    import numpy as np

    import seqspec

    rows = []
    sizes = [s for s in CELL_SIZES if not (args.no_large and s[1] == 128)]
    for shape, units in sizes:
        x = np.random.default_rng(0).standard_normal(shape).astype("float32")
        xt, xtf = torch.from_numpy(x), tf.constant(x)
        for custom, fused, label in CELL_PAIRS:
            for backend, mode in (("torch", "forward"), ("torch", "train"), ("keras", "forward")):
                b = seqspec.get_backend(backend)
                mc = b.build(spec_of([custom(units)], [None, shape[2]], "custom"))
                mf = b.build(spec_of([fused(units)], [None, shape[2]], "fused"))
                if backend == "torch" and mode == "forward":

                    def fwd(m):
                        def f():
                            with torch.inference_mode():
                                m(xt)

                        return f

                    contenders = {"custom": fwd(mc), "fused": fwd(mf)}
                elif backend == "torch":
                    # Forward and backward (gradients of every weight), no optimizer: the recurrence's cost.
                    def fwd_bwd(m):
                        def f():
                            m.zero_grad(set_to_none=True)
                            m(xt).square().mean().backward()

                        return f

                    contenders = {"custom": fwd_bwd(mc), "fused": fwd_bwd(mf)}
                else:
                    fc, ff = keras_forward(tf, mc), keras_forward(tf, mf)
                    contenders = {"custom": lambda: fc(xtf).numpy(), "fused": lambda: ff(xtf).numpy()}
                large = units == 128
                samples = race(contenders, max(3, args.repeats - 2) if large else args.repeats, 1 if large else args.warmup, args.min_sample)
                row = {
                    "pair": label,
                    "backend": backend,
                    "mode": mode,
                    "shape": list(shape),
                    "units": units,
                    "median_s": {k: statistics.median(v) for k, v in samples.items()},
                    "samples_s": samples,
                    "ratio": paired_ratio(samples["custom"], samples["fused"]),
                }
                rows.append(row)
                print(
                    f"{label:30s} {backend:5s} {mode:7s} {shape} u{units}: custom {ms(row['median_s']['custom'])}ms "
                    f"fused {ms(row['median_s']['fused'])}ms ratio {row['ratio']:.2f}",
                    flush=True,
                )
    return rows


# --- command line -------------------------------------------------------------------------------


def _seqspec_cmd() -> list[str]:
    return [sys.executable, "-m", "seqspec.cli"]


def bench_cli(args) -> dict:
    import seqspec

    specs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.yaml"))
    out: dict = {"n_specs": len(specs)}

    def wall(cmd, repeats):
        times, rc = [], None
        for _ in range(repeats):
            s = time.perf_counter()
            rc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
            times.append(time.perf_counter() - s)
        return statistics.median(times), rc

    out["validate_s"], out["validate_rc"] = wall([*_seqspec_cmd(), "validate", *specs], 3)
    print(f"seqspec validate specs/*.yaml: {out['validate_s']:.2f} s (rc {out['validate_rc']})", flush=True)
    params = {p: seqspec.infer(seqspec.load(str(ROOT / p))).trainable_params for p in specs}
    largest = max(params, key=params.get)
    out["largest"], out["largest_params"] = largest, params[largest]
    if not args.no_check:
        out["check_s"], out["check_rc"] = wall([*_seqspec_cmd(), "check", "specs/"], 1)
        print(f"seqspec check specs/: {out['check_s']:.1f} s (rc {out['check_rc']})", flush=True)
        if Path("/usr/bin/time").exists():
            r = subprocess.run(["/usr/bin/time", "-v", *_seqspec_cmd(), "check", largest], cwd=ROOT, capture_output=True, text=True)
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
            out["check_largest_rss_mib"] = int(m.group(1)) / 1024 if m else None
            print(f"seqspec check {largest}: peak RSS {out['check_largest_rss_mib']:.0f} MiB", flush=True)
    return out


# --- report -------------------------------------------------------------------------------------


def machine(torch, tf, keras) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def aa(row: dict, key: str) -> str:
    return f"{row[key]:.3f}" if key in row else ""


def render(res: dict) -> str:
    m = res["machine"]
    lines = [
        BEGIN,
        f"Run {res['date']}: `{res['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores (1-min load average {m['load']:.1f} at the start: shared with other jobs), "
        f"{res['threads']} intra-op thread(s) per framework; Python {m['python']}, torch {m['torch']}, "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}, NumPy {m['numpy']}. {res['repeats']} repeats, medians.",
        "",
    ]
    if res.get("models"):
        lines += [
            "### Compiled against hand-written",
            "",
            f"Per-call medians in ms; ratios are medians of side-by-side sample ratios, so a ratio can disagree with the "
            f"two medians when the load changed between repeats. A/A: the compiled model against a second, identical build "
            f"of it, the harness's own noise. Targets: compiled / hand-written "
            f"<= {TARGET_COMPILED}, torch / Keras training step <= {TARGET_TORCH_KERAS}.",
            "",
            "| model | input | mode | Keras seqspec | Keras hand | **Keras c/h** | Keras A/A | torch seqspec | torch hand | **torch c/h** | torch A/A | torch / Keras |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["models"]:
            md = r["median_s"]
            tk = f"{r['torch_keras']:.2f} ({mark(r['torch_keras'] <= TARGET_TORCH_KERAS)})" if r["mode"] == "train" else f"{r['torch_keras']:.2f}"
            lines.append(
                f"| {r['label']} | {r['shape']} | {r['mode']} | {ms(md['keras_compiled'])} | {ms(md['keras_hand'])} | "
                f"{r['keras_ratio']:.3f} ({mark(r['keras_ratio'] <= TARGET_COMPILED)}) | {aa(r, 'keras_aa')} | {ms(md['torch_compiled'])} | {ms(md['torch_hand'])} | "
                f"{r['torch_ratio']:.3f} ({mark(r['torch_ratio'] <= TARGET_COMPILED)}) | {aa(r, 'torch_aa')} | {tk} |"
            )
        lines.append("")
    if res.get("cells"):
        lines += [
            "### Custom cells against the fused layer of the same size",
            "",
            f"Target: torch custom / fused <= {TARGET_CELL} forward (inference). Keras forward and torch"
            " forward + backward (gradients of every weight, no optimizer) are reported without a target.",
            "",
            "| pair | backend | mode | input | units | custom ms | fused ms | custom / fused |",
            "|---|---|---|---|---:|---:|---:|---:|",
        ]
        for r in res["cells"]:
            md, mode = r["median_s"], r.get("mode", "forward")
            status = f" ({mark(r['ratio'] <= TARGET_CELL)})" if r["backend"] == "torch" and mode == "forward" else ""
            lines.append(
                f"| {r['pair']} | {r['backend']} | {mode} | {r['shape']} | {r['units']} | {ms(md['custom'])} | {ms(md['fused'])} | {r['ratio']:.2f}{status} |"
            )
        lines.append("")
    if res.get("cli"):
        c = res["cli"]
        lines += ["### Command line", "", "| command | wall | peak RSS |", "|---|---:|---:|"]
        lines.append(f"| `seqspec validate specs/*.yaml` ({c['n_specs']} specs, median of 3) | {c['validate_s']:.2f} s | |")
        if "check_s" in c:
            rss = c.get("check_largest_rss_mib")
            lines.append(f"| `seqspec check specs/` (once) | {c['check_s']:.1f} s | |")
            lines.append(f"| `seqspec check {c['largest']}` (most parameters, {c['largest_params']:,}) | | {rss:.0f} MiB |" if rss else "")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def write_doc(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# Performance\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sections = args.only.split(",")
    tf, keras, torch = setup_frameworks(args.threads)
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/bench_models.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(argv if argv is not None else sys.argv[1:])),
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": machine(torch, tf, keras),
    }
    start = time.perf_counter()
    if "models" in sections:
        res["models"] = bench_models(args, tf, keras, torch)
    if "cells" in sections:
        res["cells"] = bench_cells(args, tf, keras, torch)
    if "cli" in sections:
        res["cli"] = bench_cli(args)
    res["total_s"] = time.perf_counter() - start
    block = render(res)
    print(block)
    print(f"total {res['total_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if not args.no_write:
        write_doc(Path(args.doc), block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
