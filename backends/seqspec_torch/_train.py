"""Training on PyTorch with Keras's update rules, to the semantics of seqspec.Plan.

torch.optim's Adam and RMSprop place epsilon differently from Keras (Adam: added to the
bias-corrected sqrt(v); RMSprop: outside the square root), so the optimizers here are Keras's
own rules, written with torch's multi-tensor (_foreach) kernels.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

import seqspec as s
from seqspec import Plan, Split

from . import _distributed

EVAL_BATCH = 1024


def _f32(value: float) -> float:
    """`value` rounded to float32, as Keras holds it (the learning rate is a float32 variable; Adam's
    beta powers and SGD's momentum pass through a float32 tensor) even when the model is float64."""
    return float(np.float32(value))


class KerasOptimizer:
    """Keras's Adam, RMSprop and SGD on a list of torch parameters (see seqspec.Plan for the rules).

    `clipnorm` rescales each Keras variable's gradient g to g * clipnorm / max(||g||, clipnorm) on its
    own; `clip_groups` lists the parameters that Keras holds as one variable (see keras_variables).
    """

    def __init__(self, params: list[nn.Parameter], opt: s.Optimizer, clip_groups: Optional[list[list[nn.Parameter]]] = None):
        self.params = [p for p in params if p.requires_grad]
        self.opt = opt
        joint = {id(p): k for k, group in enumerate(clip_groups or []) for p in group}
        # Parameters outside every group are variables of their own.
        self.group_of = [joint.get(id(p), ("own", i)) for i, p in enumerate(self.params)]
        self.iterations = 0
        zeros = lambda: [torch.zeros_like(p) for p in self.params]  # noqa: E731
        self.m = zeros() if opt.type == "adam" or opt.momentum > 0 else []
        self.v = zeros() if opt.type in ("adam", "rmsprop") else []

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        pairs = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        if not pairs:
            return
        index = [i for i, _ in pairs]
        params = [p for _, p in pairs]
        grads = [p.grad for _, p in pairs]
        opt, lr = self.opt, _f32(self.opt.learning_rate)
        if opt.clipnorm is not None:
            grads = self._clip(index, grads, opt.clipnorm)
        self.iterations += 1
        if opt.type == "adam":
            t = self.iterations
            alpha = lr * math.sqrt(1 - _f32(0.999) ** t) / (1 - _f32(0.9) ** t)
            m, v = [self.m[i] for i in index], [self.v[i] for i in index]
            # m += (g - m) * (1 - beta_1); v += (g^2 - v) * (1 - beta_2), as Keras writes them
            torch._foreach_add_(m, torch._foreach_mul(torch._foreach_sub(grads, m), 1 - 0.9))
            torch._foreach_add_(v, torch._foreach_mul(torch._foreach_sub(torch._foreach_mul(grads, grads), v), 1 - 0.999))
            denom = torch._foreach_add(torch._foreach_sqrt(v), 1e-7)
            torch._foreach_sub_(params, torch._foreach_div(torch._foreach_mul(m, alpha), denom))
        elif opt.type == "rmsprop":
            v = [self.v[i] for i in index]
            # v = rho v + (1 - rho) g^2; step = lr g / sqrt(v + eps): epsilon inside the root
            torch._foreach_mul_(v, 0.9)
            torch._foreach_add_(v, torch._foreach_mul(torch._foreach_mul(grads, grads), 1 - 0.9))
            increment = torch._foreach_div(torch._foreach_mul(grads, lr), torch._foreach_sqrt(torch._foreach_add(v, 1e-7)))
            if opt.momentum > 0:
                m = [self.m[i] for i in index]
                torch._foreach_mul_(m, opt.momentum)
                torch._foreach_add_(m, increment)
                increment = m
            torch._foreach_sub_(params, increment)
        elif opt.momentum > 0:
            m = [self.m[i] for i in index]
            # m = momentum m - lr g; w += m
            torch._foreach_mul_(m, _f32(opt.momentum))
            torch._foreach_sub_(m, torch._foreach_mul(grads, lr))
            torch._foreach_add_(params, m)
        else:
            torch._foreach_sub_(params, torch._foreach_mul(grads, lr))


    def _clip(self, index: list[int], grads: list[torch.Tensor], c: float) -> list[torch.Tensor]:
        squares: dict = {}
        for i, g in zip(index, grads):
            key = self.group_of[i]
            squares[key] = squares.get(key, 0) + torch.sum(torch.square(g))
        return [g * c / torch.clamp(torch.sqrt(squares[self.group_of[i]]), min=c) for i, g in zip(index, grads)]


def keras_variables(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameters that Keras holds as one variable, for per-variable gradient clipping: a GRU with
    reset_after keeps its input and recurrent biases in one [2, 3*units] `bias`, where nn.GRU has
    bias_ih_l{k} and bias_hh_l{k}. Every other torch parameter is one Keras variable."""
    groups = []
    for module in model.modules():
        if isinstance(module, nn.GRU) and module.bias:
            for k in range(module.num_layers):
                pair = [getattr(module, f"bias_ih_l{k}"), getattr(module, f"bias_hh_l{k}")]
                if all(isinstance(p, nn.Parameter) for p in pair):
                    groups.append(pair)
    return groups


def loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The mean over every value of the squared (mse) or absolute (mae) error."""
    if name == "mse":
        return lambda pred, y: torch.mean(torch.square(pred - y))
    if name == "mae":
        return lambda pred, y: torch.mean(torch.abs(pred - y))
    if name == "last_time_step_mse":
        return lambda pred, y: torch.mean(torch.square(pred[:, -1] - y[:, -1])) if pred.dim() == 3 else torch.mean(torch.square(pred - y))
    if name in CLASSIFICATION:
        return CLASSIFICATION[name]
    raise ValueError(f"unknown loss or metric {name!r}")


# Keras's backend.epsilon(): its cross-entropies clip the probabilities to [eps, 1 - eps].
KERAS_EPSILON = 1e-7


def _binary_crossentropy(prob: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over series of -(y log p + (1 - y) log(1 - p)): prob and y [batch, 1]."""
    p = prob.clamp(KERAS_EPSILON, 1 - KERAS_EPSILON)
    return torch.mean(-(y * torch.log(p) + (1 - y) * torch.log1p(-p)))


def _sparse_categorical_crossentropy(prob: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over series of -log p[y]: prob [batch, classes] (renormalised, clipped as Keras), y [batch] ids."""
    p = (prob / prob.sum(-1, keepdim=True)).clamp(KERAS_EPSILON, 1 - KERAS_EPSILON)
    return torch.mean(-torch.log(p.gather(1, y.long().unsqueeze(1))))


def _accuracy(prob: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Keras's accuracy for the loss: p > 0.5 against 0/1 labels [batch, 1], or the argmax against ids [batch]."""
    hit = (prob > 0.5) == (y > 0.5) if y.dim() == 2 else prob.argmax(-1) == y
    return hit.to(prob.dtype).mean()


CLASSIFICATION = {
    "binary_crossentropy": _binary_crossentropy,
    "sparse_categorical_crossentropy": _sparse_categorical_crossentropy,
    "accuracy": _accuracy,
}


def default_threads() -> int:
    """Intra-op threads: one. A batch of 32 through 20 units is too small to split; on a shared
    2-core machine two threads made a seq2seq SimpleRNN step 8x slower (11 ms -> 87 ms per batch),
    and never more than 1.3x faster (benchmarks/textbook_table.py records the epoch times)."""
    return 1


def evaluate(model: nn.Module, split: Split, names: tuple[str, ...]) -> dict[str, float]:
    """Means over the whole split, in inference mode."""
    fns = {n: loss_fn(n) for n in names}
    totals = {n: 0.0 for n in names}
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(x), EVAL_BATCH):
            pred = model(x[i : i + EVAL_BATCH])
            yb = y[i : i + EVAL_BATCH]
            for n, fn in fns.items():
                totals[n] += float(fn(pred, yb)) * len(yb)
    return {n: totals[n] / len(x) for n in names}


def fit(spec: s.Spec, model: nn.Module, plan: Plan, train: Split, validation: Split) -> list[dict]:
    """Train `model` in place; returns per-epoch records {epoch, loss, <metric>..., val_loss, val_<metric>..., time_s}.

    The training loss and metrics are means over the epoch's batches in training mode, weighted by
    batch size (what Keras's fit reports); validation runs in inference mode after each epoch.
    SIGINT/SIGTERM stop it between batches with seqspec.TrainingInterrupted; a loss that
    becomes nan or infinite stops it with a SpecError.
    """
    with s.stop_on_signals() as stop:
        return _fit(spec, model, plan, train, validation, stop)


def _fit(spec: s.Spec, model: nn.Module, plan: Plan, train: Split, validation: Split, stop: s.StopRequest) -> list[dict]:
    torch.set_num_threads(plan.threads or default_threads())
    torch.manual_seed(plan.seed)  # dropout masks
    names = ("loss", *plan.metrics)
    criterion = loss_fn(plan.loss)
    metric_fns = {m: loss_fn(m) for m in plan.metrics}
    optimizer = KerasOptimizer(list(model.parameters()), plan.optimizer, keras_variables(model))
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    n, bs = len(x), plan.batch_size
    batches = plan.batches(n)
    stopper = _EarlyStopping(plan.early_stopping, model)
    engine = _distributed.start(plan)  # data-parallel: this process's shard of every batch
    net = engine.wrap(model)
    checkpoint = plan.checkpoint
    first, records = _distributed.restore(checkpoint, model, optimizer, stopper)
    # The last completed epoch's weights, for an interrupt mid-epoch (a resumed run's: the checkpoint's).
    last_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if first and not stopper.restores else None
    saved = {"epoch": first, "state": None}  # the last completed epoch's checkpoint state, and the last written

    def interrupted(progress: Optional[s.Progress]) -> s.TrainingInterrupted:
        if progress is not None:
            progress.close(None, batches)
        if saved["state"] is not None and saved["state"]["epoch"] > saved["epoch"] and engine.writes:
            _distributed.save(checkpoint, saved["state"], spec, plan)  # Ctrl-C leaves a checkpoint to resume
        if stopper.restores:
            stopper.restore()
            restored = stopper.best_epoch
        elif last_state is not None:
            model.load_state_dict(last_state)
            restored = len(records)
        else:
            restored = None
        return s.TrainingInterrupted(records, restored)

    for epoch in range(first, plan.epochs):
        if engine.stop(stop):
            raise interrupted(None)
        start = time.perf_counter()
        progress = s.Progress(epoch + 1, plan.epochs, batches)
        order = torch.from_numpy(plan.order(n, epoch))
        model.train()
        # Running sums stay tensors: reading them (a sync) happens only every POSTFIX_EVERY batches.
        sums = {k: torch.zeros((), dtype=torch.float64) for k in names}
        seen = 0
        for b in range(batches):
            if engine.stop(stop):
                raise interrupted(progress)
            idx = order[b * bs : (b + 1) * bs]
            rows, shard = engine.shard(len(idx))
            idx = idx[rows]
            xb, yb = x[idx], y[idx]
            with _distributed.sharded(shard):
                pred = net(xb)
                loss = criterion(pred, yb)
                optimizer.zero_grad()
                (loss if shard is None else loss * shard.weight).backward()
            optimizer.step()  # on the reduced gradient: clipnorm after the reduction
            with torch.no_grad():
                k = len(idx) if shard is None or shard.live else 0
                sums["loss"] += loss.detach() * k
                for m, fn in metric_fns.items():
                    sums[m] += fn(pred.detach(), yb) * k
            seen += len(idx)
            if (b + 1) % s.POSTFIX_EVERY == 0:
                progress.update(s.POSTFIX_EVERY, {k: float(v) / seen for k, v in sums.items()})
        progress.update(batches % s.POSTFIX_EVERY)
        sums = engine.total(sums)
        record = {"epoch": epoch + 1}
        record.update({k: float(v) / n for k, v in sums.items()})
        val = evaluate(model, validation, (plan.loss, *plan.metrics))
        record["val_loss"] = val[plan.loss]
        record.update({f"val_{m}": val[m] for m in plan.metrics})
        record["time_s"] = time.perf_counter() - start
        error = s.diverged(spec, record)
        if error is not None:
            progress.close(None, batches)
            raise error
        progress.close(record, batches)
        records.append(record)
        if not stopper.restores:
            last_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        stopping = stopper.update(epoch, record["val_loss"])
        if checkpoint is not None:
            saved["state"] = _distributed.snapshot(epoch + 1, model, optimizer, stopper, records)
            if (checkpoint.due(epoch + 1, plan.epochs) or stopping) and engine.writes:
                _distributed.save(checkpoint, saved["state"], spec, plan)
                saved["epoch"] = epoch + 1
        if stopping:
            stopper.stopped_epoch = epoch + 1
            break
    stopper.restore()
    if plan.early_stopping is not None:
        line = s.early_stop_line(
            stopper.stopped_epoch, plan.early_stopping.patience, stopper.best_epoch if stopper.restores else None, len(records)
        )
        if line:
            print(line, flush=True)
    return records


class _EarlyStopping:
    """Keras 3's EarlyStopping on val_loss: the wait counts epochs since the best; with
    restore_best_weights the best epoch's weights come back when training ends, stopped or not."""

    def __init__(self, config: Optional[s.EarlyStopping], model: nn.Module):
        self.config, self.model = config, model
        self.best = math.inf
        self.best_state: Optional[dict] = None
        self.best_epoch: Optional[int] = None  # 1-based
        self.stopped_epoch: Optional[int] = None  # 1-based, set by fit
        self.wait = 0

    @property
    def restores(self) -> bool:
        return self.config is not None and self.config.restore_best_weights

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch; True when training should stop."""
        if self.config is None:
            return False
        self.wait += 1
        if val_loss < self.best:
            self.best, self.wait, self.best_epoch = val_loss, 0, epoch + 1
            if self.config.restore_best_weights:
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return False
        return self.wait >= self.config.patience and epoch > 0

    def restore(self) -> None:
        if self.restores and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
