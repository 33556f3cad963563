"""Same bytes: show that a restructuring keeps every output of `fp8stream calibrate` byte for byte.

Three steps, all on the CPU, each run alone under `nice` on a small machine:

  build    writes every kind of input the test suite builds (scripts/same_bytes_inputs.py) with
           the builders of one tree, once, plus a manifest (name -> sha256, what it is). Build
           with the base, so later moves of the test fixtures do not matter.
  run      one interpreter with the tree first on sys.path calls `fp8stream.cli.main(...)` in
           process for each case of the matrix (scripts/same_bytes_cases.py) and records the
           exit code, the sha256 of each output file, the `--json` report (seconds,
           peak_vram_bytes and "took N s" dropped, the case's folders written as {dir} and
           {cases}) and stderr.
           Torch threads are pinned (1, deterministic algorithms, BLAS pools limited), so two
           runs of one tree agree; compare results made on the same machine (a CPU of another
           kind may round a matmul otherwise). `--quick`: (auto, simulate) per input.
  compare  prints the cases that differ or exist in one result only; exit 1 on any, else 0.
           `--subset`: cases only in A are fine (a quick run of HEAD against a full base).
           `--scales-rtol R`: a case whose output files differ only in input scales, each within
           R relative (every other byte the same: `run` records each output's scales and the
           digest of the rest), and whose reports only in such floats, is listed, not a difference.
           `--kept KEPT_A KEPT_B` (two runs made with `run --keep DIR`, which copies every
           case's outputs there): a case whose outputs differ only in layout (the header's
           padding, markers' trailing spaces: the same tensors, bytes and markers' JSON,
           scripts/same_bytes_content.py) is counted apart, not as a difference.

Usage, from the worktree of the change (HEAD), PY=.venv/bin/python:

  git worktree add --detach /tmp/base <base commit>
  nice -n 19 $PY scripts/same_bytes.py build --tree /tmp/base --out /tmp/bytes/cases
  nice -n 19 $PY scripts/same_bytes.py run --tree /tmp/base --cases /tmp/bytes/cases --out /tmp/bytes/base.json
  nice -n 19 $PY scripts/same_bytes.py run --tree . --cases /tmp/bytes/cases --out /tmp/bytes/head.json
  python3 scripts/same_bytes.py compare /tmp/bytes/base.json /tmp/bytes/head.json
  git worktree remove /tmp/base

Between milestones: `run --quick --out head.json`, then `compare --subset base.json head.json`.
Each result names the commit of its tree and of the inputs' build. The full matrix (about 850
cases) takes 2 to 3 minutes on 2 cores, --quick (about 210) 1 to 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from same_bytes_cases import matrix
from same_bytes_inputs import all_specs, digest
from same_bytes_run import kept_folder, run_case


def use_tree(tree: Path) -> None:
    """`tree` (its package, tests/ and scripts/) first on sys.path, before anything imports it."""
    for entry in (tree / "scripts", tree / "tests", tree):
        sys.path.insert(0, str(entry))


def tree_info(tree: Path) -> dict:
    """Which tree a file was made from: its commit (and whether it had uncommitted changes)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True)
        return done.stdout.strip()
    import fp8stream

    return {"tree": str(tree), "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "package": fp8stream.__file__}


def pinned():
    """The quality harness's pinning (one torch thread, deterministic algorithms, BLAS pools of
    one), so the bytes do not depend on the machine's core count. Imported once the tree is on
    sys.path."""
    from fp8stream.harness.fp8 import pinned as harness_pinned

    return harness_pinned(1)


def build(tree: Path, out: Path) -> None:
    use_tree(tree)
    out.mkdir(parents=True, exist_ok=False)
    inputs = {}
    with pinned():
        for spec in all_specs():
            started = time.monotonic()
            spec.build(out / spec.name)
            inputs[spec.name] = {"sha256": digest(out / spec.name), "what": spec.what, "tier": spec.tier,
                                 "preset": spec.preset}
            print(f"{spec.name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    manifest = {"made_by": tree_info(tree), "inputs": inputs}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"{len(inputs)} inputs in {out}", file=sys.stderr)


def check_inputs(cases_dir: Path, manifest: dict) -> None:
    """The inputs are those the manifest lists, unchanged."""
    changed = [n for n, e in manifest["inputs"].items() if digest(cases_dir / n) != e["sha256"]]
    if changed:
        sys.exit(f"same_bytes: inputs changed since the build: {', '.join(changed)}")


def run(tree: Path, cases_dir: Path, out: Path, quick: bool, only: Path | None = None,
        keep: Path | None = None) -> None:
    use_tree(tree)
    manifest = json.loads((cases_dir / "manifest.json").read_text())
    check_inputs(cases_dir, manifest)
    cases = matrix(manifest["inputs"], quick)
    if only is not None:  # names of cases, one a line (to look again at those that differed)
        names = set(only.read_text().splitlines())
        cases = [c for c in cases if c.name in names]
    work = out.parent / (out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results, started = {}, time.monotonic()
    with pinned():
        for i, case in enumerate(cases):
            t = time.monotonic()
            results[case.name] = run_case(case, cases_dir.resolve(), work / f"{i:04d}", keep)
            print(f"[{i + 1}/{len(cases)}] {time.monotonic() - t:5.1f} s  exit {results[case.name]['exit_code']}  "
                  f"{case.name}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    meta = {**tree_info(tree), "inputs": manifest["made_by"], "quick": quick, "cases": len(cases),
            "seconds": round(time.monotonic() - started, 1)}
    out.write_text(json.dumps({"meta": meta, "cases": results}, indent=1, sort_keys=True) + "\n")
    print(f"{len(cases)} cases in {meta['seconds']} s -> {out}", file=sys.stderr)


def first_difference(a: object, b: object, where: str = "") -> str:
    """Where two JSON values first differ, and the two values there."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<absent>") != b.get(key, "<absent>"):
                return first_difference(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{where}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return first_difference(x, y, f"{where}[{i}]")
    return f"{where or '.'}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}"


NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
PRINTED_RTOL = 1e-3  # a number printed in a sentence has 4 significant digits: its last may flip


def _exact(record: dict) -> dict:
    """A case's record as compared exactly: "tensors" is derived from the outputs (and absent
    from results made before it was recorded)."""
    return {k: v for k, v in record.items() if k != "tensors"}


def near(a: object, b: object, rtol: float) -> float | None:
    """The largest relative difference of two JSON values that differ only in floats (each
    within rtol) and in numbers printed in text (within PRINTED_RTOL); None if anything else differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return None
        parts = [near(a[k], b[k], rtol) for k in a]
        return None if None in parts else max(parts, default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return None
        parts = [near(x, y, rtol) for x, y in zip(a, b, strict=True)]
        return None if None in parts else max(parts, default=0.0)
    if a == b:
        return 0.0
    if isinstance(a, float) and isinstance(b, float):
        rel = abs(a - b) / max(abs(a), abs(b))
        return rel if rel <= rtol else None
    if isinstance(a, str) and isinstance(b, str) and NUMBER.split(a) == NUMBER.split(b):
        pairs = zip(map(float, NUMBER.findall(a)), map(float, NUMBER.findall(b)), strict=True)
        return 0.0 if all(x == y or abs(x - y) <= PRINTED_RTOL * max(abs(x), abs(y)) for x, y in pairs) else None
    return None


def scales_only(a: dict, b: dict, rtol: float) -> float | None:
    """For two records of a case: the largest relative difference of an input scale, if the
    outputs differ only in their input scales (each within rtol: every other byte the same) and
    the reports and text only in floats and printed numbers (near); else None."""
    rest = near({k: v for k, v in a.items() if k not in ("outputs", "tensors")},
                {k: v for k, v in b.items() if k not in ("outputs", "tensors")}, rtol)
    if rest is None or set(a["outputs"]) != set(b["outputs"]):
        return None
    worst = rest
    for name, digest_a in a["outputs"].items():
        if digest_a == b["outputs"][name]:
            continue
        ta, tb = a.get("tensors", {}).get(name), b.get("tensors", {}).get(name)
        if ta is None or tb is None or ta["rest"] != tb["rest"]:
            return None
        scales = near(ta["scales"], tb["scales"], rtol)
        if scales is None:
            return None
        worst = max(worst, scales)
    return worst


def compare(a_path: Path, b_path: Path, subset: bool, scales_rtol: float | None = None,
            kept: list[Path] | None = None) -> int:
    """With `kept` (the two `run --keep` folders), a case whose outputs differ only in layout
    (same_bytes_content.py) is counted apart, not as a difference."""
    from same_bytes_content import compare_kept

    a, b = (json.loads(p.read_text()) for p in (a_path, b_path))
    ca, cb = a["cases"], b["cases"]
    differ, close, worst, layout = 0, 0, 0.0, 0
    for name in sorted(set(ca) | set(cb)):
        if name not in cb and subset:
            continue
        if name not in ca or name not in cb:
            print(f"only in {a_path if name in ca else b_path}: {name}")
        elif _exact(ca[name]) != _exact(cb[name]):
            rel = None if scales_rtol is None else scales_only(ca[name], cb[name], scales_rtol)
            if rel is not None:
                print(f"scales within {scales_rtol:g}: {name} (largest relative difference {rel:.3g})")
                close, worst = close + 1, max(worst, rel)
                continue
            why = compare_kept(ca[name], cb[name], *(kept_folder(k, name) for k in kept)) if kept else ""
            if kept and why is None:
                layout += 1
                continue
            print(f"differs: {name}\n    {first_difference(ca[name], cb[name])}" + (f"\n    {why}" if why else ""))
        else:
            continue
        differ += 1
    same = sum(1 for n in cb if n in ca and _exact(ca[n]) == _exact(cb[n]))
    within = f", {close} differ only in input scales within {scales_rtol:g} (largest {worst:.3g})" if close else ""
    within += f", {layout} in layout only (same tensors, values, markers' JSON)" if kept else ""
    print(f"{same} cases identical{within}, {differ} differ ({a['meta']['commit'][:10]} vs {b['meta']['commit'][:10]})")
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="write the inputs with TREE's builders")
    p.add_argument("--tree", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("run", help="run the case matrix with TREE's package")
    p.add_argument("--tree", type=Path, required=True)
    p.add_argument("--cases", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="(auto, simulate) per input only")
    p.add_argument("--only", type=Path, default=None, help="a file of case names, one a line: run those only")
    p.add_argument("--keep", type=Path, help="copy every case's output files into this new folder (for compare --kept)")
    p = sub.add_parser("compare", help="exit 1 if two results differ")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--subset", action="store_true", help="cases only in A are not a difference")
    p.add_argument("--scales-rtol", type=float, default=None,
                   help="a case whose outputs differ only in input scales, each within this relative difference "
                        "(every other byte the same), and whose reports only in such numbers, is not a difference "
                        "(both results made by a `run` that records scales)")
    p.add_argument("--kept", type=Path, nargs=2, metavar=("KEPT_A", "KEPT_B"),
                   help="the two runs' --keep folders: outputs that differ only in layout are not a difference")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.tree.resolve(), args.out)
    elif args.command == "run":
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=False)
        run(args.tree.resolve(), args.cases, args.out.resolve(), args.quick, args.only,
            None if args.keep is None else args.keep.resolve())
    else:
        return compare(args.a, args.b, args.subset, args.scales_rtol, args.kept)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
