"""What `seqspec check` writes for CI: a JUnit XML report and the drift against a baseline --json."""

from __future__ import annotations

import json
import math
import os
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from ._check import DIRECTIONS, CheckResult, direction_label
from ._errors import SpecError
from ._files import atomic_write

GROWTH = 10.0  # a difference more than ten times its baseline's is drift
NEAR = 0.5  # so is one past half its tolerance (it fails at 1)
FLOOR = 1e-2  # baselines below a hundredth of the tolerance count as that: float32 rounding (1e-7) moving is not drift


def testcase_name(direction: str, dtype: str) -> str:
    """'keras->torch[float32]': a direction's test id, in JUnit reports and pytest items alike."""
    return f"{direction_label(direction)}[{dtype}]"


def _classname(path: str) -> str:
    # CI servers group testcases by the dotted classname, as they do pytest's; keep the path readable.
    stem = path[:-5] if path.endswith(".yaml") else path[:-4] if path.endswith(".yml") else path
    return stem.replace("\\", "/").strip("/").replace("/", ".") or "spec"


def _direction_text(r: CheckResult, direction: str) -> str:
    text = (
        f"{r.spec}: {testcase_name(direction, r.dtype)}: max abs diff {r.max_abs_diff[direction]:.3g}, "
        f"{r.fraction_of_tolerance[direction]:.3g} of the tolerance {r.tolerance:g}"
    )
    if r.grad_max_abs_diff is not None and direction == r.directions[-1]:
        text += f"; gradients {r.grad_max_abs_diff:.3g}"
    f = r.first_divergent_layer
    if f and f.get("direction") == direction:
        text += f"\nfirst divergent layer: {f['where']}: layers[{f['index']}] ({f['type']}) differs by {f['max_abs_diff']:.3g}"
    return text


def junit_xml(results: Sequence[CheckResult], invalid: Sequence[tuple[str, str]] = ()) -> bytes:
    """The JUnit XML of a check run: one testcase per spec and direction (name 'keras->torch[float32]',
    classname the spec's path dotted), its failures in the message and the details in the body;
    a spec that did not load is one failed testcase 'validate' carrying the located error."""
    cases = []
    for path, error in invalid:
        cases.append((_classname(path), "validate", path, 0.0, error.splitlines()[0], error))
    for r in results:
        for d in r.directions:
            failures = r.failed[d]
            message = "; ".join(failures) if failures else None
            cases.append((_classname(r.spec), testcase_name(d, r.dtype), r.spec, r.seconds[d], message, _direction_text(r, d)))
    failed = sum(1 for c in cases if c[4] is not None)
    total_time = sum(c[3] for c in cases)
    stamp = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    suites = ET.Element("testsuites", name="seqspec check", tests=str(len(cases)), failures=str(failed), errors="0", time=f"{total_time:.3f}")
    suite = ET.SubElement(
        suites, "testsuite", name="seqspec check", tests=str(len(cases)), failures=str(failed), errors="0", skipped="0",
        time=f"{total_time:.3f}", timestamp=stamp, hostname=socket.gethostname(),
    )
    for classname, name, file, seconds, message, text in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, file=file, time=f"{seconds:.3f}")
        if message is not None:
            failure = ET.SubElement(case, "failure", message=message, type="seqspec.check")
            failure.text = text
        else:
            ET.SubElement(case, "system-out").text = text
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def check_report_path(path: str) -> None:
    """Refuse a --junit-xml path that cannot be written, before minutes of checking: SpecError, one line."""
    p = Path(path)
    if path == "" or p.is_dir():
        raise SpecError(f"{path or repr(path)}: is a folder; name the report file, e.g. seqspec-check.xml")
    parent = p.parent
    if not parent.is_dir():
        raise SpecError(f"{path}: the folder {parent} does not exist")


def write_junit(path: str, results: Sequence[CheckResult], invalid: Sequence[tuple[str, str]] = ()) -> None:
    data = junit_xml(results, invalid)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), suffix=".xml")


@dataclass(frozen=True)
class Drift:
    """A difference that grew more than tenfold since the baseline, or came within half of its tolerance."""

    spec: str
    dtype: str
    what: str  # 'keras->torch', 'torch->keras' or 'gradients'
    before: float
    now: float
    fraction: float  # now over its tolerance

    def __str__(self) -> str:
        return (
            f"{self.spec}: drift: {self.what} [{self.dtype}] max abs diff {self.now:.3g}, was {self.before:.3g} in the baseline "
            f"({self.fraction:.2g} of the tolerance)"
        )


def read_baseline(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The entries of a `seqspec check --json` file, by (spec, dtype); SpecError (one line) if it cannot be used."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such baseline file (write one with seqspec check --json > {path})") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder; name the baseline .json file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read the baseline: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}:{e.lineno}:{e.colno}: the baseline is not JSON: {e.msg}") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) and isinstance(e.get("spec"), str) and isinstance(e.get("dtype"), str) for e in data):
        raise SpecError(f"{path}: not a seqspec check --json baseline (a list of objects with 'spec' and 'dtype')")
    return {(os.path.normpath(e["spec"]), e["dtype"]): e for e in data}


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def drift(results: Sequence[CheckResult], baseline: dict[tuple[str, str], dict[str, Any]]) -> list[Drift]:
    """Each difference of `results` that grew more than tenfold over its baseline's (baselines under
    a hundredth of the tolerance count as that), or passed half its tolerance. Specs, dtypes and
    directions absent from the baseline are not compared."""
    out = []
    for r in results:
        old = baseline.get((os.path.normpath(r.spec), r.dtype))
        if old is None:
            continue
        tol = r.tolerance
        pairs = []
        for d in r.directions:
            before = _number((old.get("max_abs_diff") or {}).get(d)) if isinstance(old.get("max_abs_diff"), dict) else None
            pairs.append((direction_label(d), before, r.max_abs_diff[d], r.fraction_of_tolerance[d]))
        if r.grad_max_abs_diff is not None:
            pairs.append(("gradients", _number(old.get("grad_max_abs_diff")), r.grad_max_abs_diff, r.grad_fraction_of_tolerance or 0.0))
        for what, before, now, fraction in pairs:
            if before is None:
                continue
            if now > GROWTH * max(before, FLOOR * tol) or fraction > NEAR:
                out.append(Drift(r.spec, r.dtype, what, before, now, fraction))
    return out


__all__ = ["DIRECTIONS", "Drift", "drift", "junit_xml", "read_baseline", "testcase_name", "write_junit"]
