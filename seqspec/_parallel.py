"""Data-parallel training's framework-free rules: how a global batch is cut into workers' shards,
and how N is chosen (--nproc, or the launcher's environment: torchrun's WORLD_SIZE/RANK, TF_CONFIG).

Every backend trains the same function whatever N: the plan's global batches in the plan's order,
each cut into N contiguous shards (`shard_bounds`), the gradients reduced to the global batch's
mean (each shard's mean weighted by its size), batch-norm statistics over the global batch and
dropout masks drawn for the global batch, then sliced (docs/scale.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Mapping, Optional

from ._errors import SpecError


def shard_bounds(batch: int, world: int, rank: int) -> tuple[int, int]:
    """[start, stop) of worker `rank`'s contiguous shard of a global batch of `batch` examples:
    sizes differ by at most one, the first `batch % world` workers take one more (numpy.array_split).
    A shard is empty when the batch has fewer examples than there are workers."""
    if not 0 <= rank < world:
        raise ValueError(f"rank has to be in [0, {world}), got {rank}")
    base, extra = divmod(batch, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run: `size` workers (processes or replicas), this
    process's `rank` (0 writes the run's files), and how it was launched."""

    size: int = 1
    rank: int = 0
    launcher: str = "local"  # "local" (one process), "nproc" (seqspec --nproc), "torchrun", "tf_config"

    @property
    def writes(self) -> bool:
        """Whether this process writes the run (checkpoints, the run folder, the report)."""
        return self.rank == 0


def torchrun_world(env: Mapping[str, str] = os.environ) -> Optional[World]:
    """The world torchrun (or seqspec --nproc, which sets the same variables) launched this process in, or None."""
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        size, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
    except ValueError:
        raise SpecError(f"WORLD_SIZE {env['WORLD_SIZE']!r} and RANK {env['RANK']!r}: must be integers (set by torchrun)") from None
    if size < 1 or not 0 <= rank < size:
        raise SpecError(f"WORLD_SIZE {size}, RANK {rank}: RANK has to be in [0, WORLD_SIZE)")
    return World(size, rank, env.get("SEQSPEC_LAUNCHER", "torchrun"))


def tf_config_world(env: Mapping[str, str] = os.environ) -> Optional[World]:
    """The multi-worker world TF_CONFIG describes (its cluster's workers, this task's index), or None."""
    text = env.get("TF_CONFIG")
    if not text:
        return None
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        if task["type"] != "worker":
            raise SpecError(f"TF_CONFIG: task type {task['type']!r}: seqspec runs workers only (MultiWorkerMirroredStrategy has no chief or ps)")
        rank = int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise SpecError(f"TF_CONFIG: not a cluster spec with cluster.worker and task.index ({type(e).__name__}: {e})") from None
    if not isinstance(workers, list) or not 0 <= rank < len(workers):
        raise SpecError(f"TF_CONFIG: task.index {rank} is not one of the {len(workers)} workers")
    return World(len(workers), rank, "tf_config")


def free_port() -> int:
    """A TCP port free on this host now, for the workers' rendezvous (rank 0 listens on it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Workers:
    """The N-1 worker processes `seqspec train --nproc N` starts beside itself (rank 0), with the
    environment torchrun would give them (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK),
    so a worker runs exactly what it runs under torchrun. Their stdout is dropped (rank 0 reports),
    their stderr is this process's. A worker that fails ends this process too: rank 0 would
    otherwise wait for it in a collective until the timeout."""

    def __init__(self, args: list[str], size: int):
        import subprocess
        import sys
        import threading

        port = free_port()
        base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(size), "SEQSPEC_LAUNCHER": "nproc"}
        os.environ.update({**{k: base[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "SEQSPEC_LAUNCHER")}, "RANK": "0", "LOCAL_RANK": "0"})
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "seqspec", *args],
                env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
                stdout=subprocess.DEVNULL,
            )
            for r in range(1, size)
        ]
        self.done = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        import sys

        while not self.done.wait(0.2):
            for rank, p in enumerate(self.procs, start=1):
                code = p.poll()
                # Grace for rank 0 to meet the same error itself (a spec error every rank raises) and report it.
                if code is not None and code not in (0, 130) and not self.done.wait(10):
                    print(f"seqspec: worker {rank} of {len(self.procs) + 1} exited with code {code}; stopping", file=sys.stderr, flush=True)
                    os._exit(code if 0 < code < 126 else 1)

    def finish(self, grace_s: float = 30.0) -> int:
        """Wait for every worker (those still running after `grace_s` are terminated): the first
        non-zero exit code, else 0."""
        import subprocess

        self.done.set()
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(grace_s))
            except subprocess.TimeoutExpired:
                p.terminate()
                codes.append(p.wait())
        return next((c for c in codes if c), 0)


def world_for(backend: str, nproc: Optional[int], env: Mapping[str, str] = os.environ) -> World:
    """This process's world for `seqspec train --backend B [--nproc N]`: torchrun's (torch), TF_CONFIG's
    (keras, one worker per process), else --nproc local processes (torch) or replicas (keras)."""
    if nproc is not None and nproc < 1:
        raise SpecError(f"--nproc: must be at least 1, got {nproc}")
    launched = torchrun_world(env) if backend == "torch" else tf_config_world(env) if backend == "keras" else None
    if launched is not None:
        if nproc is not None and nproc != launched.size and launched.launcher != "nproc":
            what = "torchrun's WORLD_SIZE" if backend == "torch" else "TF_CONFIG's workers"
            raise SpecError(f"--nproc {nproc}: {what} say {launched.size}; leave --nproc out under a launcher")
        return launched
    n = nproc or 1
    if n == 1:
        return World()
    return World(n, 0, "nproc" if backend == "torch" else "replicas")
