"""`seqspec train`'s work: load data, train on one backend, score against the naive baseline; a run record.

The framework-specific loop is each backend's `fit` (seqspec.Backend.fit), with the same
semantics on every backend (see Plan). Writing the run's files is seqspec._files.write_run;
printing is the CLI's.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import _data
from . import _spec as s
from ._errors import SpecError

EXIT_OK = 0


@dataclass(frozen=True)
class Plan:
    """What both backends' training loops do, from the spec's `train:` section and the command line.

    Every epoch visits the training series in the order `order(n, epoch)` (the same on both
    backends), in batches of `batch_size`; the last batch may be smaller. Loss and metrics are
    means over every value (a seq2seq batch's mse averages over series, steps and horizon);
    `last_time_step_mse` is the mse of the last output step only (plain mse without a time axis).
    Optimizers use Keras's update rules and hyperparameters on both backends: Adam beta 0.9/0.999,
    epsilon 1e-7 added to sqrt(v) (not bias-corrected); RMSprop rho 0.9, epsilon 1e-7 inside the
    square root; SGD with optional (heavy-ball) momentum; clipnorm rescales each weight tensor's
    gradient to norm <= clipnorm on its own, not the global norm. Early stopping watches val_loss:
    after `patience` epochs without a new best it stops, and with restore_best_weights the best
    epoch's weights are restored when training ends (as Keras 3's EarlyStopping).
    """

    loss: str
    metrics: tuple[str, ...]
    optimizer: s.Optimizer
    batch_size: int
    epochs: int
    early_stopping: Optional[s.EarlyStopping]
    seed: int
    threads: Optional[int] = None  # torch intra-op threads (None: the backend decides)

    def order(self, n: int, epoch: int) -> np.ndarray:
        """The permutation of the n training series for `epoch` (0-based), from the run's seed."""
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def batches(self, n: int) -> int:
        return -(-n // self.batch_size)


@dataclass
class Run:
    """A finished training run: the model, its per-epoch history and how long it took."""

    model: Any
    history: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0


def make_plan(spec: s.Spec, epochs: Optional[int] = None, batch_size: Optional[int] = None, seed: Optional[int] = None) -> Plan:
    """The plan of the spec's `train:` section with command-line overrides; the seed is --seed, else
    the spec's seed, else 0."""
    train = spec.train
    if train is None:
        raise SpecError(f"{spec.where()}: the spec has no train: section, so seqspec train does not know its data or target")
    opt = train.optimizer
    if opt.momentum and opt.type == "adam":
        raise SpecError(f"{spec.where('train', 'optimizer', 'momentum')}: train.optimizer.momentum: adam has no momentum key (it applies to sgd and rmsprop)")
    for name, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise SpecError(f"{name}: must be at least 1, got {value}")
    run_seed = seed if seed is not None else (spec.seed if spec.seed is not None else 0)
    metrics = tuple(dict.fromkeys(m for m in train.metrics if m != train.loss))
    return Plan(
        loss=train.loss,
        metrics=metrics,
        optimizer=opt,
        batch_size=batch_size or train.batch_size,
        epochs=epochs or train.epochs,
        early_stopping=train.early_stopping,
        seed=run_seed,
    )


@dataclass(frozen=True)
class Prepared:
    """Everything a run needs besides the framework: the splits, the target plan and the spec to build.

    `windows` holds the data as read; `splits` are what the model trains on, scaled by `scaler`
    (fitted on the training split; `scaler.as_json()` is its record for metrics.json).
    """

    spec: s.Spec
    windows: _data.Windows
    targets: _data.Targets
    splits: dict[str, _data.Split]
    scaler: _data.Scaler = _data.Scaler()

    @property
    def units(self) -> str:
        """What `evaluate`'s scores are in, one line for the report."""
        return self.scaler.units


def prepare(spec: s.Spec, seed: Optional[int] = None) -> Prepared:
    """Load and split the data, fit the scaler on the training split and cut targets; raises
    DataError/SpecError before anything is written.

    The model starts from the canonical weights of the run's seed (--seed, else the spec's
    seed, else 0), so that every backend starts from the same point.
    """
    windows = _data.load_windows(spec)
    features = windows.train.shape[2]
    targets = _data.plan_targets(spec, windows.steps, features)
    scaler = _data.fit_scaler(spec.train.data.scale, windows.fit_values(), windows.origin)
    splits = {name: _data.make_split(scaler.scale(windows.split(name), spec.dtype), windows.steps, targets) for name in _data.SPLITS}
    run_seed = seed if seed is not None else (spec.seed if spec.seed is not None else 0)
    return Prepared(spec.model_copy(update={"seed": run_seed}), windows, targets, splits, scaler)


def evaluate(backend, model, prepared: Prepared, plan: Plan, units: str = "data") -> tuple[dict, dict]:
    """(model, naive) scores {split: {loss, metric...}} on every split, computed the same way for every backend.

    units "data" (the default): in the data's own units (`prepared.units` says so in words): the
    forecasts are unscaled, the targets and the naive baseline come from the unscaled data.
    units "scaled": in the units the model trains in, comparable with its per-epoch history.
    """
    if units not in ("data", "scaled"):
        raise ValueError(f"units must be 'data' or 'scaled', got {units!r}")
    names = (plan.loss, *plan.metrics)
    scaler = prepared.scaler
    model_scores, naive_scores = {}, {}
    for split_name, split in prepared.splits.items():
        if len(split.x) == 0:
            continue
        pred = predict(backend, model, split.x)
        if units == "data" and not scaler.identity:
            # From the data as read, not unscaled back: the targets and the baseline carry no rounding of the scaling.
            split = _data.make_split(prepared.windows.split(split_name), prepared.windows.steps, prepared.targets)
            pred = scaler.unscale(pred)
        naive = _data.naive_forecast(split.x, prepared.targets)
        model_scores[split_name] = {n: _data.score(n, split.y, pred) for n in names}
        naive_scores[split_name] = {n: _data.score(n, split.y, naive) for n in names}
    return model_scores, naive_scores


def predict(backend, model, x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """The backend's inference-mode output for x, in chunks to bound memory."""
    return np.concatenate([backend.predict(model, x[i : i + chunk]) for i in range(0, len(x), chunk)])


def train(spec: s.Spec, backend_name: str, plan: Plan, prepared: Optional[Prepared] = None) -> tuple[Run, Prepared]:
    """Build the spec's model on a backend from the run's canonical weights and train it per `plan`."""
    from ._backend import get_backend

    prepared = prepared or prepare(spec, plan.seed)
    backend = get_backend(backend_name)
    model = backend.build(prepared.spec)
    start = time.perf_counter()
    history = backend.fit(prepared.spec, model, plan, prepared.splits["train"], prepared.splits["validation"])
    return Run(model, history, time.perf_counter() - start), prepared


@dataclass
class RunRecord:
    """A finished, scored run: what `seqspec train` prints and writes (seqspec._files.write_run)."""

    backend: Any  # the seqspec.Backend it ran on
    spec: s.Spec  # the spec as trained (with the run's seed)
    plan: Plan
    prepared: Prepared
    run: Run
    scores: dict
    naive: dict
    metrics: dict  # the contents of metrics.json

    def table(self) -> str:
        return format_table(self.plan, self.scores, self.naive)

    def summary(self) -> str:
        epoch_time = self.metrics["epoch_time_s"]
        n = len(self.run.history)
        return f"{self.spec.name}: {n} epoch{'' if n == 1 else 's'} in {self.run.wall_time_s:.1f} s ({epoch_time:.2f} s/epoch)"


def run_training(spec: s.Spec, backend_name: str, plan: Plan, prepared: Prepared) -> RunRecord:
    """Train per `plan` on prepared data, score every split against the naive baseline, and record it."""
    from ._backend import get_backend

    backend = get_backend(backend_name)
    run, _ = train(spec, backend_name, plan, prepared)
    scores, naive = evaluate(backend, run.model, prepared, plan)
    record = metrics_record(prepared.spec, backend, plan, prepared, run, scores, naive)
    return RunRecord(backend, prepared.spec, plan, prepared, run, scores, naive, record)


# --- reporting -------------------------------------------------------------------------------


def format_table(plan: Plan, scores: dict, naive: dict) -> str:
    """Train / validation / test loss and metrics next to the naive baseline's."""
    names = (plan.loss, *plan.metrics)
    head = ["split"] + [n for n in names] + [f"naive {n}" for n in names]
    rows = [head]
    for split in _data.SPLITS:
        if split in scores:
            rows.append([split] + [f"{scores[split][n]:.5f}" for n in names] + [f"{naive[split][n]:.5f}" for n in names])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def metrics_record(spec: s.Spec, backend, plan: Plan, prepared: Prepared, run: Run, scores: dict, naive: dict) -> dict:
    """The contents of metrics.json."""
    history = run.history
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"]) if history else None
    times = [h["time_s"] for h in history]
    return {
        "spec": spec.name,
        "backend": backend.name,
        "seed": plan.seed,
        "dtype": spec.dtype,
        "data": {
            "origin": prepared.windows.origin,
            "steps": prepared.windows.steps,
            "series": {k: int(len(v.x)) for k, v in prepared.splits.items()},
        },
        "target": {"kind": prepared.targets.kind, "horizon": prepared.targets.horizon, "aligned_steps": prepared.targets.aligned},
        "loss": plan.loss,
        "metrics": list(plan.metrics),
        "optimizer": plan.optimizer.model_dump(),
        "batch_size": plan.batch_size,
        "epochs": plan.epochs,
        "epochs_run": len(history),
        "best_epoch": None if best is None else best + 1,
        "early_stopping": None if plan.early_stopping is None else plan.early_stopping.model_dump(),
        "history": history,
        "final": scores,
        "naive": naive,
        "wall_time_s": run.wall_time_s,
        "epoch_time_s": float(np.mean(times)) if times else None,
        "epoch_time_s_after_first": float(np.mean(times[1:])) if len(times) > 1 else None,
        "peak_rss_mib": peak_rss_mib(),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **backend.versions()},
        "machine": {"platform": platform.platform(), "processor": cpu_name(), "cpus": os.cpu_count()},
    }


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def plot_learning_curves(path: str, record: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    history = record["history"]
    epochs = [h["epoch"] for h in history]
    names = [record["loss"], *record["metrics"]]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        key = "loss" if name == record["loss"] else name
        ax.plot(epochs, [h[key] for h in history], "b.-", label=f"train {name}")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "r.-", label=f"validation {name}")
        ax.axhline(record["naive"]["validation"][name], color="gray", linestyle="--", label="naive (validation)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"{record['spec']} ({record['backend']})")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def plot_forecasts(
    path: str,
    record: dict,
    split: _data.Split,
    pred,
    targets: _data.Targets,
    n: int = 3,
    scaler: Optional[_data.Scaler] = None,
) -> None:
    """The first feature of `n` validation series spread evenly over `split` (first, last and between):
    the input, the true future and the forecast from the last output step.

    `pred` is the model's predictions for every row of `split`, or a function of inputs x returning
    them (then only the plotted rows are predicted). With `scaler`, everything is drawn in the data's
    own units.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    total = len(split.x)
    n = max(1, min(n, total))
    # Spread, not the first n: neighbouring windows of a CSV series overlap and look alike.
    rows = np.unique(np.linspace(0, total - 1, n).round().astype(int))
    x, y = split.x[rows], split.y[rows]
    forecast = pred(x) if callable(pred) else np.asarray(pred)[rows]
    if scaler is not None:
        x, y, forecast = scaler.unscale(x), scaler.unscale(y), scaler.unscale(forecast)
    steps = split.x.shape[1]
    origin = steps - 1 if targets.origin is None else targets.origin
    ahead = np.arange(origin + 1, origin + 1 + targets.horizon)
    truth, forecast = targets.future(y), targets.future(forecast)
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.8), squeeze=False)
    for i, (row, ax) in enumerate(zip(rows, axes[0])):
        ax.plot(np.arange(steps), x[i, :, 0], "b.-", label="input")
        ax.plot(ahead, truth[i, :, 0], "go-", label="actual")
        ax.plot(ahead, forecast[i, :, 0], "rx-", label="forecast")
        ax.set_xlabel("time step in the window")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.set_title(f"validation series {row + 1} of {total}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    # Below the axes, where no series can run under it.
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(f"{record['spec']} ({record['backend']}): forecasts from step {origin}")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)
