"""Checkpoints of a training run: in the run folder's checkpoint/, one per saved epoch, each written
atomically and completed by its JSON record; what a resume must match.

A checkpoint of epoch e is two files: `epoch-EEEEE<suffix>`, the backend's state (the model's
weights, the optimizer's state, the random generators', early stopping's and the history), then
`epoch-EEEEE.json`, its record (written last: a checkpoint without it is incomplete and ignored).
Older checkpoints are removed once a newer one is complete.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import _spec as s
from ._errors import SpecError
from ._files import atomic_write

CHECKPOINT_DIR = "checkpoint"
FORMAT = "seqspec-checkpoint/1"
_RECORD = re.compile(r"epoch-(\d{5,})\.json")


def identity(spec: s.Spec, plan) -> dict:
    """What a resumed run must share with the checkpoint to continue the same training: the model
    and data (the spec but for train.epochs), the seed, batch size, loss, metrics, optimizer and
    early stopping. Not the number of workers: training is the same function of them all."""
    return {
        "spec": spec.model_dump(mode="json", exclude={"train": {"epochs"}}),
        "seed": plan.seed,
        "batch_size": plan.batch_size,
        "loss": plan.loss,
        "metrics": list(plan.metrics),
        "optimizer": plan.optimizer.model_dump(mode="json"),
        "early_stopping": None if plan.early_stopping is None else plan.early_stopping.model_dump(mode="json"),
    }


def read_latest(folder: Path) -> Optional[dict]:
    """The record of the newest complete checkpoint in `folder`/checkpoint, or None."""
    where = folder / CHECKPOINT_DIR
    if not where.is_dir():
        return None
    epochs = sorted(int(m.group(1)) for p in where.iterdir() if (m := _RECORD.fullmatch(p.name)))
    for epoch in reversed(epochs):
        path = where / f"epoch-{epoch:05d}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SpecError(f"--resume {folder}: {path.name}: not a seqspec checkpoint record ({e})") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise SpecError(f"--resume {folder}: {path.name}: not a {FORMAT} record")
        if (where / record.get("state", "")).is_file():
            return record
    return None


@dataclass(frozen=True)
class Checkpointing:
    """Where and when a run saves checkpoints: `folder` is the run folder (--out, or --resume DIR),
    `every` the epochs between checkpoints (None: none on a schedule), `resume` the record of the
    checkpoint to continue from (read_latest), `nproc` the run's workers (recorded)."""

    folder: Path
    every: Optional[int] = None
    resume: Optional[dict] = None

    def due(self, epochs_done: int, epochs: int) -> bool:
        """Whether a checkpoint is written after `epochs_done` epochs (also after the last)."""
        return self.every is not None and (epochs_done % self.every == 0 or epochs_done == epochs)

    def resume_state(self) -> Optional[Path]:
        """The state file to resume from, or None for a fresh run."""
        return None if self.resume is None else self.folder / CHECKPOINT_DIR / self.resume["state"]

    def check(self, spec: s.Spec, plan, backend: str) -> None:
        """Refuse to resume a checkpoint of another backend or another training (one line: which key differs)."""
        if self.resume is None:
            return
        if self.resume.get("backend") != backend:
            raise SpecError(f"--resume {self.folder}: the checkpoint is of the {self.resume.get('backend')} backend, not {backend}")
        stored, now = self.resume.get("identity", {}), identity(spec, plan)
        for key in now:
            if stored.get(key) != now[key]:
                was = "the spec differs" if key == "spec" else f"{key} was {stored.get(key)!r}, now {now[key]!r}"
                raise SpecError(f"--resume {self.folder}: the checkpoint is of another training: {was}")
        if self.resume["epoch"] >= plan.epochs:
            raise SpecError(f"--resume {self.folder}: the checkpoint is of epoch {self.resume['epoch']}, the run has {plan.epochs} epochs: pass a larger --epochs to train on")

    def save(self, epoch: int, suffix: str, write: Callable[[str], None], spec: s.Spec, plan, backend: str) -> Path:
        """Write epoch `epoch`'s checkpoint (write(path) writes the backend's state file), then its
        record; then remove the older ones. Returns the record's path."""
        where = self.folder / CHECKPOINT_DIR
        state = f"epoch-{epoch:05d}{suffix}"
        atomic_write(str(where / state), write, suffix=suffix)
        record = {"format": FORMAT, "epoch": epoch, "backend": backend, "state": state, "epochs": plan.epochs, "nproc": plan.nproc, "every": self.every, "identity": identity(spec, plan)}
        path = where / f"epoch-{epoch:05d}.json"
        atomic_write(str(path), lambda t: Path(t).write_text(json.dumps(record, indent=1) + "\n"))
        for p in where.iterdir():
            m = re.fullmatch(r"epoch-(\d{5,})(\..+)", p.name)
            if m and int(m.group(1)) < epoch and p.is_file():
                p.unlink(missing_ok=True)
        return path


def resume_from(folder: str) -> dict:
    """The record of the checkpoint `--resume DIR` continues from; a one-line error when there is none."""
    path = Path(folder)
    if not path.is_dir():
        raise SpecError(f"--resume {folder}: not a folder (the run folder a seqspec train --checkpoint-every wrote)")
    record = read_latest(path)
    if record is None:
        raise SpecError(f"--resume {folder}: holds no complete checkpoint ({CHECKPOINT_DIR}/epoch-*.json); train with --checkpoint-every K to write them")
    return record
