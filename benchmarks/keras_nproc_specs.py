"""The keras backend's data-parallel training against one process for every example spec: float64
weights after two epochs with N = 1 (plain Keras) and N = 2 (MirroredStrategy on two logical CPU
devices), the largest absolute difference per spec.

Every spec in specs/ with a `train:` section, made tiny as tests/test_distributed.py makes them
(tests/dist_worker.py's `tiny`: 17 training series in batches of 8, an empty shard in the last
batch), and test_distributed's own specs (dropout and recurrent dropout, batch norm, clipnorm;
keras_mix). One fresh process trains them all (the replicas' devices are set up once per process);
the default suite trains only drop_lstm and keras_mix this way, since each spec costs seconds of
tracing.

Then, in one more process, a checkpoint resumed with another N (drop_lstm, one epoch, resumed to
two): written by one process and resumed under --nproc 2, and the other way round, against two
epochs of one process.

    python benchmarks/keras_nproc_specs.py [--out FILE]

Prints one line per spec and exits 1 when a spec differs by more than 1e-9 (check's float64
tolerance). Results go to benchmarks/results/keras-nproc-specs.json by default.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_distributed import TOLERANCE, TRAIN_SPECS, WORKER, differences, env, keras_mix, own_specs  # noqa: E402


def resume_across(folder: Path) -> dict[str, float]:
    """In this process: two epochs of drop_lstm in one process, and one epoch resumed to two with the
    other N; the largest difference of each resumed run from the straight one."""
    from safetensors.numpy import load_file

    from seqspec.cli import main as cli

    spec = str(own_specs(folder)[0])
    base = ["train", spec, "--backend", "keras"]
    # The replicas' devices are set up before TensorFlow first runs: an --nproc 2 run first.
    pairs = {"2 -> 1": (["--nproc", "2"], []), "1 -> 2": ([], ["--nproc", "2"])}
    for name, (first, then) in pairs.items():
        run = str(folder / name.replace(" ", ""))
        assert cli([*base, *first, "--epochs", "1", "--checkpoint-every", "1", "--out", run]) == 0
        assert cli([*base, *then, "--epochs", "2", "--resume", run]) == 0
    assert cli([*base, "--epochs", "2", "--out", str(folder / "straight")]) == 0
    straight = load_file(str(folder / "straight" / "weights.safetensors"))
    out = {}
    for name in pairs:
        resumed = load_file(str(folder / name.replace(" ", "") / "weights.safetensors"))
        out[name] = max(float(abs(resumed[k] - straight[k]).max()) for k in straight)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "keras-nproc-specs.json")
    parser.add_argument("--resume-across", type=Path, help=argparse.SUPPRESS)  # the child process's folder
    args = parser.parse_args()
    if args.resume_across is not None:
        print(json.dumps(resume_across(args.resume_across)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        specs = [*TRAIN_SPECS, *own_specs(folder), keras_mix(folder)]
        start = time.perf_counter()
        cmd = [sys.executable, str(WORKER), str(folder / "out"), "keras", "2,1", "2", *map(str, specs)]
        done = subprocess.run(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 2
        wall = time.perf_counter() - start
        diffs = differences(folder / "out" / "1", folder / "out" / "2")
        (folder / "across").mkdir()
        child = [sys.executable, __file__, "--resume-across", str(folder / "across")]
        done = subprocess.run(child, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 2
        across = json.loads(done.stdout.strip().splitlines()[-1])
    for name, d in diffs.items():
        print(f"{name:22s} {d:.2g}")
    worst = max(diffs.values())
    print(f"{len(diffs)} specs, largest difference {worst:.2g} (tolerance {TOLERANCE:g}); {wall:.0f} s")
    for name, d in across.items():
        print(f"drop_lstm resumed {name}: {d:.2g} from two epochs of one process")
    worst = max(worst, *across.values())
    from importlib.metadata import PackageNotFoundError, version

    def installed(*names: str) -> str:
        for name in names:
            try:
                return version(name)
            except PackageNotFoundError:
                pass
        return "unknown"

    result = {
        "what": "max |w(N=2) - w(N=1)| of the float64 weights after two epochs, keras backend",
        "command": "python benchmarks/keras_nproc_specs.py",
        "date": time.strftime("%Y-%m-%d"),
        "keras": installed("keras"),
        "tensorflow": installed("tensorflow", "tensorflow-cpu"),
        "wall_s": round(wall, 1),
        "differences": diffs,
        "resumed_with_another_nproc": across,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
