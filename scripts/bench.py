"""Speed and memory at real model sizes: fp8stream against `cp` + `sync` and the naive script.

Generates synthetic FP8 checkpoints with the real layer inventory of Flux-dev, SD3.5-large and a
Wan-14B-class video DiT (`fp8stream.families.inventory`; `--blocks N` scales depth, width
is always full), then runs, alternating in the same run, `--runs` times each:

- cp:        `cp --reflink=never IN OUT && sync OUT` (the physical limit, same durability as ours)
- naive:     scripts/naive_calibrate.py (load_file, add scales, save_file), where it fits in RAM
- fp8stream: `python -m fp8stream calibrate --device DEVICE --method M IN OUT --json`, once per
             method of `--method` (a comma list measures several side by side)

Each run is timed (wall seconds) and its peak RSS read from wait4 (what `/usr/bin/time -f %M`
reports); page caches
are dropped before each run when we may (root), so every tool starts cold; the results say
whether every drop succeeded (else the runs were warm and are not called cold) and which
filesystem held the files. Medians are
reported as ratios to cp and, where it ran, to naive. Writes JSON, a markdown table and a PNG.

    python scripts/bench.py --arch flux --blocks 2 --runs 3 --out bench-results
    python scripts/bench.py --arch flux,sd35,wan --runs 3 --out bench-results   # full size
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fp8stream.families import inventory_keys  # noqa: E402 (torch-free: the registry is plain data)

# No torch in this process: a forked child counts the parent's pages in its peak RSS until it
# execs, so the measuring process stays small and checkpoints are generated in a subprocess.
ARCHITECTURES = inventory_keys()  # the families' real-size inventories, by bench key


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def drop_caches() -> bool:
    """Whether the page cache was dropped (root only): a run after a failed drop is not cold."""
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def filesystem(path: str) -> dict:
    """The mount holding `path` (/proc/mounts' longest matching mount point): a filesystem that
    shares blocks on copy would flatter cp, so the results say which one it was."""
    path = os.path.realpath(path)
    best = {"mount": None, "type": None, "source": None}
    try:
        with open("/proc/mounts") as f:
            for line in f:
                source, mount, fstype = line.split()[:3]
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best["mount"] or ""):
                    best = {"mount": mount, "type": fstype, "source": source}
    except OSError:
        pass
    return best


def child_env() -> dict[str, str]:
    """This environment with the checkout first on PYTHONPATH: a child runs this tree's fp8stream."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run cmd; wall seconds, peak RSS (MB) and stdout. The RSS is wait4's ru_maxrss, the
    number `/usr/bin/time -f %M` prints (largest of the process and its waited-for children).
    A forked child counts its parent's pages until exec, so small tools (cp) read as about this
    process's own size (~14 MB), an upper bound."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=False)
    out, err = _communicate_then_wait4(proc)
    wall = time.monotonic() - started
    status, rusage = out[1], out[2]
    if status != 0:
        raise RuntimeError(f"{cmd[0]} failed ({status}): {err.decode(errors='replace').strip()[-500:]}")
    return {"wall_s": wall, "peak_rss_mb": rusage.ru_maxrss / 1024, "stdout": out[0].decode()}


def _communicate_then_wait4(proc: subprocess.Popen):
    """Read the pipes on threads, then reap the child with os.wait4 to get its rusage."""
    import threading

    chunks: dict[str, bytes] = {}

    def drain(name: str, pipe) -> None:
        chunks[name] = pipe.read()

    threads = [threading.Thread(target=drain, args=(n, p)) for n, p in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    _, status, rusage = os.wait4(proc.pid, 0)
    for t in threads:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (chunks["out"], proc.returncode, rusage), chunks["err"]


def tool_commands(src: str, dst: str, device: str, methods: list[str]) -> dict[str, list[str]]:
    """cp, naive and one fp8stream tool per method: `fp8stream` alone, `fp8stream:M` for several."""
    py = sys.executable
    tools = {
        "cp": ["sh", "-c", f'cp --reflink=never "{src}" "{dst}" && sync "{dst}"'],
        "naive": [py, os.path.join(ROOT, "scripts", "naive_calibrate.py"), src, dst],
    }
    for method in methods:
        tools[fp8stream_tool(method, methods)] = [py, "-m", "fp8stream", "calibrate", "--device", device, "--method",
                                                  method, "--no-progress", "--json", src, dst]
    return tools


def fp8stream_tool(method: str, methods: list[str]) -> str:
    return "fp8stream" if len(methods) == 1 else f"fp8stream:{method}"


def generate(arch: str, blocks: int | None, path: str) -> None:
    """Write the synthetic checkpoint of `arch`'s real-size inventory (`blocks` deep, None: full)
    to `path`, in a child: torch stays out of this process (see ARCHITECTURES)."""
    make = ("from fp8stream.synthetic.checkpoint import from_inventory, write_checkpoint;"
            "from fp8stream.families import inventory;"
            f"write_checkpoint({path!r}, from_inventory(inventory({arch!r})({blocks!r})))")
    subprocess.run([sys.executable, "-c", make], check=True, env=dict(os.environ, PYTHONPATH=ROOT))


def bench_one(arch: str, blocks: int | None, runs: int, device: str, workdir: str, cold: bool,
              methods: list[str], naive: bool = True) -> dict:
    src = os.path.join(workdir, f"{arch}-{blocks or 'full'}.safetensors")
    dst = os.path.join(workdir, "out.safetensors")
    t0 = time.monotonic()
    generate(arch, blocks, src)
    size = os.path.getsize(src)
    largest = _largest_tensor(src)
    print(f"[{arch} blocks={blocks or 'full'}] {size / 1e9:.2f} GB generated in {time.monotonic() - t0:.0f} s",
          file=sys.stderr)
    commands = tool_commands(src, dst, device, methods)
    tools = ["cp"] + [t for t in commands if t.startswith("fp8stream")]
    naive_needs = 2.2 * size
    naive_note = None
    if not naive:
        naive_note = "not run (--no-naive)"
    elif naive_needs < mem_available():
        tools.insert(1, "naive")
    else:
        naive_note = f"not run: needs about {naive_needs / 1e9:.0f} GB of RAM, {mem_available() / 1e9:.0f} GB available"
    env = child_env()
    results: dict[str, list[dict]] = {t: [] for t in tools}
    for run in range(runs):
        order = tools[run % len(tools):] + tools[: run % len(tools)]  # alternate who goes first
        for tool in order:
            if os.path.exists(dst):
                os.unlink(dst)
            dropped = drop_caches() if cold else False
            r = timed(commands[tool], env)
            r["cache_dropped"] = dropped
            if tool.startswith("fp8stream"):
                report = json.loads(r["stdout"].strip().splitlines()[-1])
                r["peak_vram_mb"] = (report.get("peak_vram_bytes") or 0) / 2**20
                r["layers"] = len(report["layers"])
            r.pop("stdout")
            results[tool].append(r)
            print(f"  run {run + 1} {tool:18s} {r['wall_s']:7.2f} s  {r['peak_rss_mb']:8.0f} MB"
                  f"{'' if dropped or not cold else '  (page cache NOT dropped: warm)'}", file=sys.stderr)
    os.unlink(src)
    if os.path.exists(dst):
        os.unlink(dst)
    med = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "cache_dropped"}
           for t, rs in results.items()}
    # cold only where every run's page-cache drop succeeded: a warm run does not count as cold
    really_cold = cold and all(r["cache_dropped"] for rs in results.values() for r in rs)
    out = {"arch": arch, "method": methods[0] if len(methods) == 1 else methods, "blocks": blocks or "full",
           "bytes": size, "largest_tensor_bytes": largest, "device": device, "runs": runs, "cold": really_cold,
           "cold_requested": cold, "filesystem": filesystem(workdir), "median": med, "all": results,
           "naive_note": naive_note}
    out["rss_bound_mb"] = (2 * largest + 300e6) / 2**20
    ours = [t for t in med if t.startswith("fp8stream")]
    ratios = {t: med[t]["wall_s"] / med["cp"]["wall_s"] for t in ours}
    out["wall_vs_cp"] = ratios[ours[0]] if len(ours) == 1 else ratios
    if "naive" in med:
        vs_naive = {t: med[t]["wall_s"] / med["naive"]["wall_s"] for t in ours}
        rss = {t: med[t]["peak_rss_mb"] / med["naive"]["peak_rss_mb"] for t in ours}
        out["wall_vs_naive"] = vs_naive[ours[0]] if len(ours) == 1 else vs_naive
        out["rss_vs_naive"] = rss[ours[0]] if len(ours) == 1 else rss
    return out


def _largest_tensor(path: str) -> int:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return max(e["data_offsets"][1] - e["data_offsets"][0] for k, e in header.items() if k != "__metadata__")


def markdown(results: list[dict]) -> str:
    rows = ["| model | size | tool | wall (s) | ×cp | peak RSS (MB) | RSS bound (MB) | peak VRAM (MB) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        label = f"{r['arch']} ({r['blocks']} blocks)" if r["blocks"] != "full" else f"{r['arch']} (full)"
        for tool, m in r["median"].items():
            ratio = m["wall_s"] / r["median"]["cp"]["wall_s"]
            vram = f"{m['peak_vram_mb']:.0f}" if m.get("peak_vram_mb") else "-"
            bound = f"{r['rss_bound_mb']:.0f}" if tool.startswith("fp8stream") else ""
            rows.append(f"| {label} | {r['bytes'] / 1e9:.2f} GB | {tool} | {m['wall_s']:.1f} | {ratio:.2f} | "
                        f"{m['peak_rss_mb']:.0f} | {bound} | {vram} |")
        if r["naive_note"]:
            rows.append(f"| {label} | {r['bytes'] / 1e9:.2f} GB | naive | {r['naive_note']} | | | | |")
    notes = sorted({_conditions(r) for r in results})
    return "\n".join(rows + [""] + notes)


def _conditions(r: dict) -> str:
    """One line under the table: cold or not (and why not), and the filesystem."""
    fs = r.get("filesystem") or {}
    if r.get("cold"):
        cache = "cold (page cache dropped before every run)"
    elif r.get("cold_requested"):
        cache = "WARM: dropping the page cache failed (not root?), these runs are not cold"
    else:
        cache = "warm (--warm)"
    return f"{r['device']}, {cache}; filesystem {fs.get('type')} at {fs.get('mount')} ({fs.get('source')})"


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    tools = sorted({t for r in results for t in r["median"]}, key=lambda t: (t != "cp", t != "naive", t))
    for tool, marker in zip(tools, "os^v<>", strict=False):
        pts = sorted((r["bytes"] / 1e9, r["median"][tool]) for r in results if tool in r["median"])
        if not pts:
            continue
        ax1.plot([p[0] for p in pts], [p[1]["peak_rss_mb"] for p in pts], marker=marker, label=tool)
        ax2.plot([p[0] for p in pts], [p[1]["wall_s"] for p in pts], marker=marker, label=tool)
    ax1.set(xlabel="checkpoint size (GB)", ylabel="peak RSS (MB)", title="Peak memory", yscale="log")
    ax2.set(xlabel="checkpoint size (GB)", ylabel="wall time (s, median)", title="Wall time")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="flux", help="comma list of: " + ",".join(ARCHITECTURES))
    ap.add_argument("--blocks", default="full", help="comma list of block counts or 'full'")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--method", default="auto",
                    help="fp8stream's --method, or a comma list measured side by side in one run "
                         "(e.g. simulate,forward; default: the CLI's default, auto)")
    ap.add_argument("--workdir", default=None,
                    help="where checkpoints are generated (default: a temp folder in the current folder)")
    ap.add_argument("--no-naive", action="store_true", help="leave out the naive full-load script")
    ap.add_argument("--warm", action="store_true", help="do not drop page caches before each run")
    ap.add_argument("--out", default="bench-results")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)  # a missing --workdir failed with a traceback on the device
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir or ".", prefix=".bench-") as workdir:
        for arch in args.arch.split(","):
            for b in args.blocks.split(","):
                results.append(bench_one(arch, None if b == "full" else int(b), args.runs, args.device, workdir,
                                         not args.warm, args.method.split(","), not args.no_naive))
                save(results, args.out, args.device)  # after each model: a cut-off run keeps what it measured
    print(markdown(results))


def save(results: list[dict], out: str, tag: str) -> None:
    with open(os.path.join(out, f"bench-{tag}.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out, f"bench-{tag}.md"), "w") as f:
        f.write(markdown(results) + "\n")
    try:
        plot(results, os.path.join(out, f"bench-{tag}.png"))
    except ImportError:  # the figures are in the JSON and the table; the chart is optional
        print("bench: no chart (pip install matplotlib, or scripts/setup.sh bench)", file=sys.stderr)


if __name__ == "__main__":
    main()
