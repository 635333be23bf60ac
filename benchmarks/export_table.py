"""Fill the table of docs/export.md: every example spec x every export target, through `seqspec check --targets`.

    PYTHONPATH=.:backends python benchmarks/export_table.py                      # every target, writes docs/export.md
    PYTHONPATH=.:backends python benchmarks/export_table.py --targets onnx       # one column; the others are kept

Each cell is "ok, max diff D" (the largest difference from either backend over batches 1 and 3
and every length check uses), or the one-line reason the artifact cannot be made or differs.
Columns not run keep what the file already says.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- export-table:begin -->", "<!-- export-table:end -->"


def _cell(target) -> str:
    if target.ok:
        return f"ok, max diff {max(target.max_abs_diff.values()):.1e}"
    reason = target.failures[0] if target.failures else "not exported"
    return ("cannot: " if not target.exported else "DIFFERS: ") + reason.replace("|", "\\|")


def _old_cells(text: str) -> dict[tuple[str, str], str]:
    """The cells already in the table, by (spec, target)."""
    cells = {}
    if BEGIN not in text:
        return cells
    rows = [r for r in text.split(BEGIN, 1)[1].split(END, 1)[0].strip().splitlines() if r.startswith("|")]
    if not rows:
        return cells
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    for row in rows[2:]:
        values = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
        for name, value in zip(header[1:], values[1:]):
            cells[(values[0].strip("`"), name)] = value
    return cells


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import seqspec
    from seqspec._check import check
    from seqspec._export import TARGETS, load_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets to run (default all)")
    parser.add_argument("--specs", default=str(ROOT / "specs"))
    parser.add_argument("--doc", default=str(ROOT / "docs" / "export.md"))
    parser.add_argument("--json", metavar="FILE", help="also write every check result here")
    parser.add_argument("--start", metavar="NAME", help="begin at this spec (alphabetical): the earlier rows keep their cells")
    parser.add_argument("--only", metavar="NAMES", help="run only these specs (comma-separated stems): the other rows keep their cells")
    args = parser.parse_args(argv)
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    runnable, missing = [], {}
    for name in wanted:
        try:
            load_target(name)
            runnable.append(name)
        except seqspec.SpecError as e:
            missing[name] = f"not installed here: {e}"
    doc = Path(args.doc)
    text = doc.read_text()
    cells = _old_cells(text)
    results = []
    for path in sorted(Path(args.specs).glob("*.yaml")):
        if args.start and path.stem < args.start:
            continue
        if args.only and path.stem not in args.only.split(","):
            continue
        spec = seqspec.load(str(path))
        start = time.perf_counter()
        r = check(spec, path=str(path.relative_to(ROOT)), targets=runnable)
        results.append(r.as_json())
        for name in runnable:
            cells[(path.stem, name)] = _cell(r.targets[name])
        for name, why in missing.items():
            cells[(path.stem, name)] = why
        print(f"{path.stem}: " + "; ".join(f"{n} {cells[(path.stem, n)]}" for n in wanted) + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    header = "| spec | " + " | ".join(TARGETS) + " |\n|---|" + "---|" * len(TARGETS) + "\n"
    rows = "".join(
        f"| `{p.stem}` | " + " | ".join(cells.get((p.stem, t), "not run yet") for t in TARGETS) + " |\n" for p in sorted(Path(args.specs).glob("*.yaml"))
    )
    table = f"{BEGIN}\n{header}{rows}{END}"
    text = text.split(BEGIN, 1)[0] + table + text.split(END, 1)[1] if BEGIN in text else text.rstrip() + "\n\n" + table + "\n"
    doc.write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"wrote {doc}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
