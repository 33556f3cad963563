"""Figures for docs/remote.md: a Flux-width checkpoint from and to a local S3 endpoint (moto's
server on 127.0.0.1), beside the endpoint's own copy of the same object (read in 8 MB ranges and
written back as a 5 MB-part upload, no compute) and a plain download; and a zoo of 12 files
on a local Ray cluster with 1 and 2 workers.

    python scripts/bench_remote.py [--blocks 2] [--zoo-files 12] [--method auto] [--skip-big] [--skip-zoo]
                                   [--out bench-results/remote.json]

--method is the big file's calibration method (recorded in the results; default: the CLI's
default, auto, which runs the forward pass on a URL input where diffusers can, reading it twice).

Everything runs on this machine; the server is started and stopped here. Peak RSS is what
`/usr/bin/time -f %M` prints for the fp8stream process (see run_measured).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
           PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONWARNINGS="ignore")
BUCKET = "bench"


def start_moto(log: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto did not start")


def run_measured(cmd: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of one child, the RSS as `/usr/bin/time -f %M`
    reports it. Not wait4 on a child forked from this script: Linux keeps a process's RSS
    high-water mark across exec, so it would count this script's own pages at the fork (the
    1.3 GB the big file's tensors took here), which is where an earlier 1332 MB figure came from."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd], env=ENV, stdout=out, stderr=err,
                              text=True)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode not in (0, 4):
            raise SystemExit(f"{cmd[:4]} failed: {err.read().strip().splitlines()[-1:]}")
        return wall, int(rss.read().split()[-1]) * 1024, out.read()


def one_big_file(fs, tmp: str, blocks: int, method: str) -> dict:
    from fp8stream.families import inventory
    from fp8stream.synthetic.checkpoint import from_inventory, write_checkpoint
    specs = inventory("flux")(blocks)
    largest = max(math.prod(s.shape) * (1 if s.fp8 else 2) for s in specs)
    src = os.path.join(tmp, "big.safetensors")
    write_checkpoint(src, from_inventory(specs))
    size = os.path.getsize(src)
    fs.put(src, f"{BUCKET}/in/big.safetensors")
    os.unlink(src)
    started = time.monotonic()  # the endpoint's read speed alone
    with fs.open(f"{BUCKET}/in/big.safetensors", "rb", block_size=8 << 20) as r:
        while r.read(4 << 20):
            pass
    download = time.monotonic() - started
    started = time.monotonic()
    with fs.open(f"{BUCKET}/in/big.safetensors", "rb", block_size=8 << 20) as r, \
            fs.open(f"{BUCKET}/copy/client.safetensors", "wb", block_size=5 << 20) as w:
        while chunk := r.read(4 << 20):
            w.write(chunk)
    client_copy = time.monotonic() - started
    fs.rm(f"{BUCKET}/copy", recursive=True)
    wall, rss, _ = run_measured([sys.executable, "-m", "fp8stream", "calibrate", f"s3://{BUCKET}/in/big.safetensors",
                                 f"s3://{BUCKET}/out/big.safetensors", "--device", "cpu", "--no-progress",
                                 "--method", method])
    bound = 2 * largest + (300 << 20)
    return {"method": method, "bytes": size, "largest_tensor": largest, "rss_bound": bound, "bar": bound + (100 << 20),
            "fp8stream_s": round(wall, 2), "fp8stream_MBps": round(size / wall / 1e6, 1), "peak_rss": rss,
            "download_s": round(download, 2), "download_MBps": round(size / download / 1e6, 1),
            "client_copy_s": round(client_copy, 2), "client_copy_MBps": round(size / client_copy / 1e6, 1)}


def zoo_scaling(fs, tmp: str, files: int) -> list[dict]:
    from fp8stream.synthetic.checkpoint import write_checkpoint
    from fp8stream.synthetic.example import example_tensors
    for i in range(files):
        path = os.path.join(tmp, f"m{i}.safetensors")
        write_checkpoint(path, example_tensors(hidden=384, blocks=2, seed=i))
        fs.put(path, f"{BUCKET}/zoo/m{i:02d}.safetensors")
        os.unlink(path)
    rows = []
    for workers in (1, 2):
        dst = f"s3://{BUCKET}/zoo-out-{workers}"
        wall, _, out = run_measured([sys.executable, "-m", "fp8stream", "zoo", f"s3://{BUCKET}/zoo", dst,
                                     "--workers", str(workers), "--ray-log", os.path.join(tmp, "ray.log")])
        lines = [json.loads(line) for line in out.splitlines()]
        per_file = [line["seconds"] for line in lines if "input" in line and line["status"] == "ok"]
        rows.append({"workers": workers, "files": len(per_file), "wall_s": round(wall, 1),
                     "zoo_wall_s": lines[-1]["summary"]["wall_seconds"],
                     "per_file_mean_s": round(sum(per_file) / len(per_file), 2),
                     "per_file_max_s": round(max(per_file), 2),
                     "file_mb": round(fs.info(f"{BUCKET}/zoo/m00.safetensors")["size"] / 1e6, 1)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--zoo-files", type=int, default=12)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-zoo", action="store_true")
    ap.add_argument("--method", default="auto")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-results", "remote.json"))
    args = ap.parse_args()
    import s3fs
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_moto(os.path.join(tmp, "moto.log"))
        ENV["AWS_ENDPOINT_URL"] = url
        try:
            fs = s3fs.S3FileSystem(endpoint_url=url, key="bench", secret="bench")
            fs.mkdir(BUCKET)
            result = {"machine": f"{os.cpu_count()} cores"}
            if not args.skip_big:
                result["big"] = one_big_file(fs, tmp, args.blocks, args.method)
                print(json.dumps(result["big"]), flush=True)
            if not args.skip_zoo:
                result["zoo"] = zoo_scaling(fs, tmp, args.zoo_files)
                print(json.dumps(result["zoo"]), flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
