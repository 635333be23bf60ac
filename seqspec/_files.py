"""Writing files: every file seqspec writes goes through `atomic_write`; a training run's folder is
checked (`check_out`), locked (`lock_out`) and written whole (`write_run`)."""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ._errors import SpecError

if TYPE_CHECKING:
    from ._train import RunRecord

TMP_MARK = ".seqspec-tmp-"  # in every temporary file's name, so that a stale one is recognisably ours
STALE_S = 3600  # a temporary file this old belongs to a write that was killed, not one in progress
RUN_FILES = ("weights.safetensors", "metrics.json", "learning_curves.png", "forecasts.png")  # and model.<suffix>


def umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a platform (Windows) that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale(folder: Path, prefix: str) -> None:
    """Remove temporaries starting with `prefix` left by writes killed more than an hour ago."""
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < STALE_S:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it over `path`: a failure
    leaves neither a half-written file nor a clobbered old one.

    The file gets the mode a plain open() would (0666 less the umask) and reaches the disk before
    the rename, the rename after it; a temporary is named `.NAME.seqspec-tmp-XXXX`, and ones of the
    same target older than an hour (a killed write) are removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}{TMP_MARK}"
    _remove_stale(target.parent, prefix)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix or target.suffix, dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; a file seqspec writes is as readable as any other the user makes.
        os.chmod(tmp, 0o666 & ~umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


# --- a run's folder ----------------------------------------------------------------------------


def _is_run(folder: Path) -> bool:
    """Whether `folder` holds only a seqspec run's files (what --overwrite may replace)."""
    names = {p.name for p in folder.iterdir()}
    # checkpoint/: --checkpoint-every's (seqspec._checkpoint); alone, a run killed before it wrote its files.
    checkpoint = "checkpoint" in names and (folder / "checkpoint").is_dir() and not (folder / "checkpoint").is_symlink()
    if checkpoint:
        names.discard("checkpoint")
    if "metrics.json" not in names:
        return checkpoint and not names
    return all((n in RUN_FILES or n.startswith("model.")) and (folder / n).is_file() and not (folder / n).is_symlink() for n in names)


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that the run could not be written to, before any data or framework is loaded:
    a file, a folder under a file, a folder that cannot be written, or another run without --overwrite."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SpecError(f"--out {out}: is {'a link' if out.is_symlink() else 'a file'}, not a folder")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SpecError(f"--out {out}: {ancestor} is a file, not a folder")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            if not overwrite:
                what = "another run (metrics.json)" if "metrics.json" in entries else f"{len(entries)} file{'' if len(entries) == 1 else 's'} ({', '.join(entries[:3])})"
                raise SpecError(f"--out {out}: holds {what}; pass --overwrite to replace it, or choose another folder")
            if not _is_run(out):
                raise SpecError(f"--out {out}: holds files that are not a seqspec run ({', '.join(entries[:3])}); --overwrite replaces only a run's folder")
    # Probe by doing: os.access says yes to root on a read-only mount.
    try:
        probe = tempfile.mkdtemp(prefix=f".{out.name}{TMP_MARK}probe-", dir=ancestor)
        os.rmdir(probe)
    except OSError as e:
        raise SpecError(f"--out {out}: cannot write in {ancestor} ({e.strerror or e})") from None


@contextlib.contextmanager
def lock_out(out: Path) -> Iterator[None]:
    """Hold `.NAME.lock` beside `out` (created, then removed): a second run into the same folder
    fails at once instead of mixing its files with this one's."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; runs are not guarded against each other
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpecError(f"--out {out}: another seqspec train is writing {out} (it holds {lock})") from None
        # The holder before us unlinks the file when done: a lock on an unlinked file guards nothing.
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float as None: JSON has no NaN, and Python's bare `NaN` breaks other readers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def write_run(out: Path, record: RunRecord, overwrite: bool = False) -> list[Path]:
    """Write the run's files into a temporary folder beside `out`, then move it in as a whole: the saved
    model, weights.safetensors, metrics.json, learning_curves.png and forecasts.png. A kill at any point
    leaves `out` as it was (or, with --overwrite, the old run set aside as `.NAME.old-XXXX`, removed by
    the next run). Call it under lock_out(out)."""
    import numpy as np
    from safetensors.numpy import save_file

    backend, model, spec = record.backend, record.run.model, record.spec
    out.parent.mkdir(parents=True, exist_ok=True)
    # Under the lock no other run into `out` is in progress: every leftover of ours is from a killed one.
    for prefix in (f".{out.name}.tmp-", f".{out.name}.old-"):
        for p in out.parent.glob(f"{glob.escape(prefix)}*"):
            shutil.rmtree(p, ignore_errors=True)
    mode = 0o777 & ~umask()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, mode)  # mkdtemp makes 0700; the folder becomes `out`
        names = []

        def put(name: str, write) -> None:
            atomic_write(str(tmp / name), write, suffix=Path(name).suffix)
            names.append(name)

        weights = {k: np.ascontiguousarray(v) for k, v in backend.get_weights(model, spec).items()}
        # Save a fresh build with the trained weights: the trained model also carries its training
        # setup (Keras saves the compiled loss, metrics and optimizer, which load only where this
        # module's metric is registered), and the saved model is the spec's model, nothing more.
        clean = backend.build(spec, weights)
        put("model" + backend.suffix, lambda t: backend.save(clean, spec, t))
        put("weights.safetensors", lambda t: save_file(weights, t, metadata={"spec": spec.name, "backend": backend.name}))
        text = json.dumps(finite_json(record.metrics), indent=2, allow_nan=False) + "\n"
        put("metrics.json", lambda t: Path(t).write_text(text))
        put("learning_curves.png", record.plot_learning_curves)
        if len(record.prepared.splits["validation"].x) and record.prepared.targets.kind != "label":  # a classifier forecasts no series
            put("forecasts.png", record.plot_forecasts)
        if (out / "checkpoint").is_dir() and record.plan.checkpoint is not None:
            shutil.copytree(out / "checkpoint", tmp / "checkpoint")  # the run's checkpoints stay with it, to resume
        _fsync_dir(tmp)
        if out.is_dir() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old)  # onto the empty folder just made: a name nobody else takes
            os.replace(tmp, out)
            _fsync_dir(out.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)  # rename(2) also replaces an empty folder
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / n for n in names]

