"""`seqspec train`'s work: load data, train on one backend, score against the naive baseline; a run record.

The framework-specific loop is each backend's `fit` (seqspec.Backend.fit), with the same
semantics on every backend (see Plan). Writing the run's files is seqspec._files.write_run;
printing is the CLI's.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np

from . import _data
from . import _spec as s
from ._errors import SpecError

EXIT_OK = 0
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
POSTFIX_EVERY = 25  # batches between progress-bar updates (each reads the running loss)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class TrainingInterrupted(KeyboardInterrupt):
    """A backend's fit stopped on SIGINT/SIGTERM at a batch boundary, with the model's weights set
    to those of epoch `restored` (the best epoch's where early stopping restores them, else the last
    completed epoch's); `history` holds the completed epochs."""

    def __init__(self, history: list[dict], restored: Optional[int]):
        super().__init__(f"interrupted after {plural(len(history), 'epoch')}")
        self.history, self.restored = history, restored


class StopRequest:
    """Set by SIGINT or SIGTERM during training; the loops look at it between batches, so a signal
    never lands inside an optimizer step and the weights stay those of whole batches."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """For the duration of training only: SIGINT and SIGTERM ask the loop to stop at the next batch
    (a second one interrupts at once); the previous handlers come back afterwards."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        if request:
            raise KeyboardInterrupt
        request.signal = signum

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def nonfinite(record: dict) -> Optional[str]:
    """Why training cannot go on after this epoch's record, or None: its loss became nan or infinite."""
    for key, what in (("loss", "the loss"), ("val_loss", "the validation loss")):
        value = record.get(key)
        if value is not None and not math.isfinite(value):
            return f"training stopped: {what} became {'nan' if math.isnan(value) else 'infinite'} in epoch {record['epoch']}"
    return None


def diverged(spec: s.Spec, record: dict) -> Optional[SpecError]:
    """The one-line error for a loss that became nan or infinite, or None."""
    why = nonfinite(record)
    if why is None:
        return None
    return SpecError(
        f"{spec.where('train')}: {why}; nothing written (a lower train.optimizer.learning_rate, a clipnorm or scaled data may help)"
    )


def early_stop_line(stopped: Optional[int], patience: int, restored: Optional[int], last: int) -> Optional[str]:
    """What both backends print when training ends under early stopping (epochs 1-based): where it
    stopped and whose weights the model holds."""
    if stopped is not None:
        head = f"early stopping after epoch {stopped}: val_loss did not improve for {plural(patience, 'epoch')}"
    elif restored is not None and restored != last:
        head = f"trained {plural(last, 'epoch')}"
    else:
        return None
    if restored is not None:
        return f"{head}; restored the weights of epoch {restored} (the best val_loss)"
    return f"{head}; keeping the weights of epoch {last}"


class Progress:
    """A tqdm bar per epoch when stderr is a terminal; one line per epoch otherwise (logs, pipes).
    The same on every backend."""

    def __init__(self, epoch: int, epochs: int, batches: int):
        self.bar = None
        self.label = f"Epoch {epoch}/{epochs}"
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=batches, desc=self.label, unit="batch", leave=True, dynamic_ncols=True)

    def update(self, n: int, postfix: Optional[dict] = None) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4f}" for k, v in postfix.items()}, refresh=False)

    def close(self, record: Optional[dict], batches: int) -> None:
        """End the epoch's bar with its record, or without one (interrupted)."""
        if record is None:
            if self.bar is not None:
                self.bar.close()
            return
        shown = {k: v for k, v in record.items() if k not in ("epoch", "time_s")}
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items()})
            self.bar.close()
        else:
            values = " - ".join(f"{k}: {v:.4f}" for k, v in shown.items())
            print(f"{self.label}\n{batches}/{batches} - {record['time_s']:.0f}s - {values}", flush=True)


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
    nproc: int = 1  # data-parallel workers (processes or replicas): the same training whatever it is (seqspec._parallel)
    checkpoint: Optional[Any] = None  # seqspec._checkpoint.Checkpointing: where and when to save, what to resume

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
    interrupted: bool = False  # by SIGINT/SIGTERM; the model holds the weights of epoch `restored`
    restored: Optional[int] = None


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


Prepared = _data.Prepared  # lives in _data, so that _labels builds one without importing _train


def prepare(spec: s.Spec, seed: Optional[int] = None) -> Prepared:
    """Load and split the data, fit the scaler on the training split and cut targets; raises
    DataError/SpecError before anything is written.

    The model starts from the canonical weights of the run's seed (--seed, else the spec's
    seed, else 0), so that every backend starts from the same point.
    """
    from ._labels import refuse_output_mask

    refuse_output_mask(spec)
    if spec.train is not None and spec.train.target.kind == "label":  # a classifier (seqspec/_labels.py)
        from ._labels import prepare_labels

        return prepare_labels(spec, seed)
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
    if prepared.targets.kind == "label":  # a classifier: probabilities, in no units
        from ._labels import evaluate_labels

        return evaluate_labels(backend, model, prepared, plan, predict)
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
    backend.start_world(plan)  # data-parallel set-up that must precede the model (TensorFlow's devices)
    model = backend.build(prepared.spec)
    start = time.perf_counter()
    try:
        history = backend.fit(prepared.spec, model, plan, prepared.splits["train"], prepared.splits["validation"])
    except TrainingInterrupted as e:
        return Run(model, e.history, time.perf_counter() - start, interrupted=True, restored=e.restored), prepared
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
        return f"{format_table(self.plan, self.scores, self.naive)}\n{self.prepared.units}"

    def summary(self) -> str:
        epoch_time = self.metrics["epoch_time_s"]
        n = len(self.run.history)
        stopped = " (interrupted)" if self.run.interrupted else ""
        return f"{self.spec.name}: {plural(n, 'epoch')}{stopped} in {self.run.wall_time_s:.1f} s ({epoch_time:.2f} s/epoch)"

    def plot_learning_curves(self, path: str) -> None:
        plot_learning_curves(path, self.metrics)

    def plot_forecasts(self, path: str) -> None:
        """A few validation series spread over the split, with the model's forecasts (data units)."""
        plot_forecasts(
            path, self.metrics, self.prepared.splits["validation"], lambda x: predict(self.backend, self.run.model, x),
            self.prepared.targets, scaler=self.prepared.scaler,
        )


def run_training(spec: s.Spec, backend_name: str, plan: Plan, prepared: Prepared) -> RunRecord:
    """Train per `plan` on prepared data, score every split against the naive baseline, and record it."""
    from ._backend import get_backend

    backend = get_backend(backend_name)
    run, _ = train(spec, backend_name, plan, prepared)
    if run.interrupted and not run.history:
        raise run_interrupted(run)
    scores, naive = evaluate(backend, run.model, prepared, plan)
    # The per-epoch history is in the scaled units: the learning curves' naive line must be too.
    naive_scaled = naive if prepared.scaler.identity else evaluate(backend, run.model, prepared, plan, units="scaled")[1]
    record = metrics_record(prepared.spec, backend, plan, prepared, run, scores, naive, naive_scaled)
    return RunRecord(backend, prepared.spec, plan, prepared, run, scores, naive, record)


# --- reporting -------------------------------------------------------------------------------


def run_interrupted(run: Run) -> KeyboardInterrupt:
    """Interrupted before a single epoch finished: there is nothing to write."""
    return KeyboardInterrupt("interrupted before the first epoch finished; nothing written")


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


def metrics_record(
    spec: s.Spec, backend, plan: Plan, prepared: Prepared, run: Run, scores: dict, naive: dict, naive_scaled: Optional[dict] = None
) -> dict:
    """The contents of metrics.json: `final` and `naive` in the data's units, `history` and
    `naive_scaled` in the units the model trains in (the same when the data is not scaled)."""
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
            "scale": prepared.scaler.as_json(),
        },
        "units": prepared.units,
        "target": {"kind": prepared.targets.kind, "horizon": prepared.targets.horizon, "aligned_steps": prepared.targets.aligned},
        "loss": plan.loss,
        "metrics": list(plan.metrics),
        "optimizer": plan.optimizer.model_dump(),
        "batch_size": plan.batch_size,
        "nproc": plan.nproc,
        "epochs": plan.epochs,
        "epochs_run": len(history),
        "best_epoch": None if best is None else best + 1,
        "interrupted": run.interrupted,
        "weights_epoch": weights_epoch(plan, run, best),
        "early_stopping": None if plan.early_stopping is None else plan.early_stopping.model_dump(),
        "history": history,
        "final": scores,
        "naive": naive,
        "naive_scaled": naive if naive_scaled is None else naive_scaled,
        "wall_time_s": run.wall_time_s,
        "epoch_time_s": float(np.mean(times)) if times else None,
        "epoch_time_s_after_first": float(np.mean(times[1:])) if len(times) > 1 else None,
        "peak_rss_mib": peak_rss_mib(),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **backend.versions()},
        "machine": {"platform": platform.platform(), "processor": cpu_name(), "cpus": os.cpu_count()},
    }


def weights_epoch(plan: Plan, run: Run, best: Optional[int]) -> Optional[int]:
    """The epoch (1-based) whose weights the run's model holds."""
    if run.interrupted:
        return run.restored
    if best is not None and plan.early_stopping is not None and plan.early_stopping.restore_best_weights:
        return best + 1
    return len(run.history) or None


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
        naive = record.get("naive_scaled", record["naive"]).get("validation")
        if naive is not None and naive.get(name) is not None:
            ax.axhline(naive[name], color="gray", linestyle="--", label="naive (validation)")
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
