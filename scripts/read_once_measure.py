"""What one child process read from and wrote to the block device, optionally in a memory cgroup.

Used by scripts/read_once.py. Linux only (wait4's rusage; cgroups). `ru_inblock` and
`ru_oublock` count 512-byte units on Linux (the task's io accounting `read_bytes` and
`write_bytes` shifted by 9, the figures of /proc/PID/io); they count what reached the block
device, so reads served from the page cache and files on tmpfs count nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator

BLOCK_UNIT = 512  # bytes per ru_inblock / ru_oublock unit on Linux
V2_ROOT = "/sys/fs/cgroup"
V1_MEMORY = "/sys/fs/cgroup/memory"


class NotMeasurable(Exception):
    """The measurement cannot be made as asked (not root, no memory controller): one line."""


@dataclass
class Measured:
    exit_code: int  # the child's, or -N for a signal N (an OOM kill is -9)
    wall_s: float
    read_bytes: int  # ru_inblock x 512: read from the block device by the child and its waited-for children
    written_bytes: int  # ru_oublock x 512
    peak_rss_bytes: int  # ru_maxrss (KiB on Linux) x 1024
    stderr_tail: str


def measure(cmd: list[str], env: dict | None = None, procs_file: str | None = None) -> Measured:
    """Run `cmd` (stdout discarded, stderr kept) and reap it with wait4 for its rusage. With
    `procs_file` the child writes its pid there before exec, so nothing it reads is charged
    elsewhere. The parent starts no threads: a fork with a preexec function is safe then."""

    def enter_group() -> None:
        with open(procs_file, "w", encoding="ascii") as f:
            f.write(str(os.getpid()))

    with tempfile.TemporaryFile() as err:
        started = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                    preexec_fn=enter_group if procs_file else None)
        except subprocess.SubprocessError as e:  # the preexec function failed: not moved into the group
            raise NotMeasurable(f"cannot move the run into {procs_file}: {e}") from None
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        wall = time.monotonic() - started
        err.seek(0)
        tail = err.read().decode(errors="replace").strip()[-2000:]
    return Measured(proc.returncode, wall, usage.ru_inblock * BLOCK_UNIT, usage.ru_oublock * BLOCK_UNIT,
                    usage.ru_maxrss * 1024, tail)


def device_read_bytes(path: str) -> int | None:
    """Bytes read so far from the block device that holds `path`, by every process (the
    device's /sys/dev/block/MAJ:MIN/stat: sectors read x 512); None where the file is on no
    block device the kernel counts (tmpfs, overlay, a network filesystem)."""
    dev = os.stat(path).st_dev
    text = _read(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    return int(text.split()[2]) * BLOCK_UNIT if text else None


@contextlib.contextmanager
def input_alone(path: str, folder: str) -> Iterator[str]:
    """`path` copied onto an ext4 filesystem of its own, a loop device over an image in
    `folder` (root), so that its device counts the input's reads and nothing else's (the
    libraries, the output); yields the copy's path. Unmounted and removed on exit."""
    image, mount = os.path.join(folder, "input.img"), os.path.join(folder, "input-fs")
    size = os.path.getsize(path) * 11 // 10 + (64 << 20)  # room for ext4's own metadata
    try:
        with open(image, "wb") as f:
            f.truncate(size)
        os.mkdir(mount)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", image, mount], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        detail = e.stderr.decode(errors="replace").strip() if isinstance(e, subprocess.CalledProcessError) else e
        raise NotMeasurable(f"cannot put the input on a loop device of its own (root, mkfs.ext4, mount -o loop): "
                            f"{detail}") from None
    try:
        copy = os.path.join(mount, os.path.basename(path))
        shutil.copyfile(path, copy)
        os.sync()
        yield copy
    finally:
        subprocess.run(["umount", mount], check=False, capture_output=True)
        os.unlink(image)


class MemoryGroup:
    """A memory cgroup limited to `limit` bytes, created on entry and removed on exit (also after
    a failure): /sys/fs/cgroup/memory/fp8stream-readonce-PID on cgroup v1, or
    /sys/fs/cgroup/fp8stream-readonce-PID with the memory controller on the unified v2 tree."""

    def __init__(self, limit: int):
        self.limit = limit
        self.v2, parent = group_parent()
        self.path = os.path.join(parent, f"fp8stream-readonce-{os.getpid()}")
        self.procs_file = os.path.join(self.path, "cgroup.procs")

    def __enter__(self) -> MemoryGroup:
        check_can_create()
        try:
            if self.v2:
                _enable_v2_memory()
            os.mkdir(self.path)
        except OSError as e:
            raise NotMeasurable(f"cannot create the memory cgroup {self.path}: {e.strerror}; "
                                "run as root, or --only unlimited") from None
        try:
            self._set_limit()
        except OSError as e:
            self._remove()
            raise NotMeasurable(f"cannot limit the memory cgroup {self.path}: {e.strerror}") from None
        return self

    def _set_limit(self) -> None:
        limit, swap = ("memory.max", "memory.swap.max") if self.v2 else ("memory.limit_in_bytes",
                                                                           "memory.memsw.limit_in_bytes")
        _write(os.path.join(self.path, limit), str(self.limit))
        if os.path.exists(os.path.join(self.path, swap)):  # no escape into swap (v1: memory + swap <= limit)
            _write(os.path.join(self.path, swap), "0" if self.v2 else str(self.limit))

    def figures(self) -> dict:
        """The group's peak usage (page cache included) and its OOM kills, where the kernel has them."""
        peak = _read(os.path.join(self.path, "memory.peak" if self.v2 else "memory.max_usage_in_bytes"))
        events = _read(os.path.join(self.path, "memory.events" if self.v2 else "memory.oom_control")) or ""
        kills = [int(line.split()[1]) for line in events.splitlines() if line.startswith("oom_kill ")]
        return {"cgroup_peak_bytes": int(peak) if peak else None, "oom_kills": kills[0] if kills else None,
                "cgroup": self.path}

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        """rmdir once its processes are gone (a reaped child can take a moment to leave the group)."""
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        os.rmdir(self.path)  # the last try's error is the user's to see


def group_parent() -> tuple[bool, str]:
    """(cgroup v2?, the folder groups are made in): the unified tree where it has controllers."""
    v2 = os.path.exists(os.path.join(V2_ROOT, "cgroup.controllers"))
    return v2, V2_ROOT if v2 else V1_MEMORY


def check_can_create() -> None:
    """Refuse, before anything runs, where no memory cgroup can be made here."""
    v2, parent = group_parent()
    if not v2 and not os.path.isdir(parent):
        raise NotMeasurable(f"no cgroup v1 memory controller at {parent} and no cgroup v2 tree; --only unlimited")
    if not os.access(parent, os.W_OK):
        raise NotMeasurable(f"cannot create a memory cgroup under {parent} (root needed); run as root, "
                            "or --only unlimited")


def _enable_v2_memory() -> None:
    control = os.path.join(V2_ROOT, "cgroup.subtree_control")
    if "memory" not in (_read(control) or "").split():
        _write(control, "+memory")


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None
