"""One case of scripts/same_bytes.py: `fp8stream calibrate` called in process with fds 0/1/2 on
files, and what it left: exit code, a sha256 per output file, the JSON reports and stderr,
with what varies from run to run (times, the case's own folders) taken out. Project modules are
imported inside the functions, after the tree is first on sys.path."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from same_bytes_cases import COMMON, Case
from same_bytes_inputs import digest

VOLATILE = ("seconds", "peak_vram_bytes")  # report keys that change from run to run
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DURATION = re.compile(r"\btook [0-9.]+ s\b")  # a time inside a sentence ("verify took 0.02 s")


@contextlib.contextmanager
def redirected(stdin: Path | None, stdout: Path, stderr: Path) -> Iterator[None]:
    """fds 0 (when given), 1 and 2 on files for the call, as a shell redirection would."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    targets = [(1, open(stdout, "wb")), (2, open(stderr, "wb"))]
    if stdin is not None:
        targets.append((0, open(stdin, "rb")))
    saved = [(fd, os.dup(fd)) for fd, _ in targets]
    try:
        for fd, f in targets:
            os.dup2(f.fileno(), fd)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        for _, f in targets:
            f.close()


def call_cli(argv: list[str]) -> int | str:
    """The exit code the command line would give (a bug's exception, by type, instead)."""
    import click

    from fp8stream.cli import main

    try:
        code = main.main(argv, prog_name="fp8stream", standalone_mode=False)
    except SystemExit as e:
        code = e.code
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:
        e.show()
        code = e.exit_code
    except click.exceptions.Abort:
        code = 1
    except Exception as e:  # a bug: the traceback would differ by line numbers; the type does not
        print(f"same_bytes: {type(e).__name__}: {e}", file=sys.stderr)
        code = f"exception {type(e).__name__}"
    return code if isinstance(code, (int, str)) else 0


def normalised(value: object, places: dict[str, str]) -> object:
    """`value` with volatile report keys dropped and the case's folders written as placeholders."""
    if isinstance(value, dict):
        return {k: normalised(v, places) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normalised(v, places) for v in value]
    if isinstance(value, str):
        for path, placeholder in places.items():
            value = value.replace(path, placeholder)
        value = DURATION.sub("took <seconds> s", value)
    return value


def reports_and_text(text: str, places: dict[str, str]) -> tuple[list, list[str]]:
    """The JSON report lines of a stream, and its other lines."""
    reports, lines = [], []
    for line in normalised(text, places).splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                reports.append(normalised(json.loads(line), places))
                continue
        lines.append(line)
    return reports, lines


def scale_record(path: Path) -> dict | None:
    """A safetensors file as its input scales' values and the sha256 of everything else (the
    scales' bytes zeroed), so that `compare --scales-rtol` can tell a change of a scale's last
    bits from any other; None for a file that is not safetensors (an index, a report)."""
    import hashlib
    import struct

    from fp8stream.io.dtypes import decode_values
    from fp8stream.names.suffixes import INPUT_SCALES

    data = bytearray(path.read_bytes())
    if data[:4] == ZSTD_MAGIC:  # a compressed output: its scales are inside
        import zstandard

        data = bytearray(zstandard.ZstdDecompressor().stream_reader(bytes(data)).read())
    if len(data) < 8 or struct.unpack("<Q", data[:8])[0] > len(data) - 8:
        return None
    size = struct.unpack("<Q", data[:8])[0]
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError:
        return None
    scales = {}
    for name, entry in header.items():
        if name != "__metadata__" and name.endswith(INPUT_SCALES):
            begin, end = (8 + size + o for o in entry["data_offsets"])
            scales[name] = decode_values(bytes(data[begin:end]), entry["dtype"]) if end > begin else []
            data[begin:end] = bytes(end - begin)
    return {"rest": hashlib.sha256(data).hexdigest(), "scales": scales}


def kept_folder(keep: Path, case_name: str) -> Path:
    """Where `run --keep` puts a case's output files (named by a digest of the case's name)."""
    return keep / hashlib.sha256(case_name.encode()).hexdigest()[:20]


def _keep(case: Case, files: dict[str, Path], where: Path) -> None:
    for name, path in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, where / name)
    where.mkdir(parents=True, exist_ok=True)
    (where / "case.txt").write_text(case.name + "\n")


def run_case(case: Case, cases_dir: Path, case_dir: Path, keep: Path | None = None) -> dict:
    """Run one case in `case_dir` (made, then removed) and return its record; with `keep`, its
    output files (a checkpoint on stdout as `<stdout>`) are copied under kept_folder first."""
    case_dir.mkdir()
    io_dir = Path(str(case_dir) + ".io")
    io_dir.mkdir()
    places = {str(io_dir): "{io}", str(case_dir): "{dir}", str(cases_dir): "{cases}"}  # longest first
    fill = {"{dir}": str(case_dir), "{cases}": str(cases_dir), "{out}": str(case_dir / "out.safetensors")}
    argv = [case.args[0], *COMMON, *case.args[1:]]
    for placeholder, path in fill.items():
        argv = [a.replace(placeholder, path) for a in argv]
    os.environ["TMPDIR"] = tempfile.tempdir = str(io_dir)  # a spool outside OUT's folder lands here
    stdin = cases_dir / case.stdin if case.stdin else None
    with redirected(stdin, io_dir / "stdout", io_dir / "stderr"):
        code = call_cli(argv)
    to_stdout = "-" in argv[len(COMMON) + 2:]  # OUT is '-': the checkpoint is on stdout, the report on stderr
    files = {str(p.relative_to(case_dir)): p for p in sorted(case_dir.rglob("*")) if p.is_file()}
    if to_stdout:
        files["<stdout>"] = io_dir / "stdout"
    outputs = {name: digest(p) for name, p in files.items()}
    tensors = {name: record for name, p in files.items() if (record := scale_record(p)) is not None}
    stdout = b"" if to_stdout else (io_dir / "stdout").read_bytes()
    reports, out_lines = reports_and_text(stdout.decode(errors="replace"), places)
    more, err_lines = reports_and_text((io_dir / "stderr").read_bytes().decode(errors="replace"), places)
    left = sorted(str(p.relative_to(io_dir)) for p in io_dir.rglob("*") if p.name not in ("stdout", "stderr"))
    if keep is not None:
        _keep(case, files, kept_folder(keep, case.name))
    shutil.rmtree(case_dir)
    shutil.rmtree(io_dir)
    # a batch with --jobs reports its files as they finish: in the order of their inputs here
    reports = sorted(reports + more, key=lambda r: str(r.get("input", "")) if isinstance(r, dict) else "")
    return {"argv": normalised(argv, places), "exit_code": code, "outputs": outputs, "reports": reports,
            "stdout": out_lines, "stderr": err_lines, "temp_left": left, "tensors": tensors}
